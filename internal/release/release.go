// Package release renders Keyward's install bundle: config/default with every image pinned by digest, and
// the CRDs on their own for those who manage CRDs apart.
package release

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/keyward-dev/keyward/internal/testenv"
)

// Bundle is a rendered release.
type Bundle struct {
	// All is every object of config/default, CRDs included (dist/keyward.yaml).
	All []byte
	// CRDs are the CustomResourceDefinitions alone (dist/keyward-crds.yaml).
	CRDs []byte
}

// Render renders config/default with kubectl's kustomize, replacing each image named in pinned (for example
// ghcr.io/keyward-dev/keyward-manager) by the same name at the given digest (sha256:...).
func Render(kubectl string, pinned map[string]string) (Bundle, error) {
	root := testenv.RepoRoot()
	if err := os.MkdirAll(filepath.Join(root, "dist"), 0o755); err != nil {
		return Bundle{}, err
	}
	// kustomize takes no absolute resource paths: the overlay lives under dist/, next to config/.
	dir, err := os.MkdirTemp(filepath.Join(root, "dist"), ".release-")
	if err != nil {
		return Bundle{}, err
	}
	defer os.RemoveAll(dir)
	names := make([]string, 0, len(pinned))
	for n := range pinned {
		names = append(names, n)
	}
	sort.Strings(names)
	var k strings.Builder
	k.WriteString("resources:\n- ../../config/default\nimages:\n")
	for _, n := range names {
		if !strings.HasPrefix(pinned[n], "sha256:") {
			return Bundle{}, fmt.Errorf("image %s: %q is not a sha256 digest", n, pinned[n])
		}
		fmt.Fprintf(&k, "- name: %s\n  digest: %s\n", n, pinned[n])
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k.String()), 0o644); err != nil {
		return Bundle{}, err
	}
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		return Bundle{}, fmt.Errorf("kubectl kustomize: %w", err)
	}
	var b Bundle
	b.All = out
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if yaml.Unmarshal(doc, &meta) == nil && meta.Kind == "CustomResourceDefinition" {
			if len(b.CRDs) > 0 {
				b.CRDs = append(b.CRDs, []byte("---\n")...)
			}
			b.CRDs = append(b.CRDs, bytes.TrimSpace(doc)...)
			b.CRDs = append(b.CRDs, '\n')
		}
	}
	if len(b.CRDs) == 0 {
		return Bundle{}, fmt.Errorf("the bundle holds no CRD")
	}
	return b, nil
}
