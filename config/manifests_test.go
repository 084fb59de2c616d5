// Package config holds Keyward's deployment manifests; its test checks that they build.
package config

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestDefaultKustomizationBuildsEveryComponent(t *testing.T) {
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(testenv.RepoRoot(), "config", "default")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v\n%s", err, out)
	}
	for _, want := range []string{
		"kind: CustomResourceDefinition", "name: apikeys.keyward.dev",
		"kind: Deployment", "name: keyward-manager", "namespace: keyward-system",
		"kind: ClusterRole", "name: keyward-manager-role",
		"kind: ServiceAccount", "kind: Service",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config/default lacks %q", want)
		}
	}
}
