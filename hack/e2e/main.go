// Command e2e prepares what make e2e loads into the node (hack/node): the sandbox and workload images of the
// tests, Keyward's images of the working tree (from make release's dist/oci) and those of an earlier commit
// of main (the upgrade test), each as an OCI archive that `ctr images import` takes. The earlier commit's
// release is cached by commit under the Keyward cache.
package main

import (
	"archive/tar"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/keyward-dev/keyward/internal/images"
)

func main() {
	out := flag.String("out", ".e2e", "Output directory.")
	dist := flag.String("dist", "dist", "make release's output (its oci layout is archived).")
	base := flag.String("base", "", "Commit of main whose release the upgrade test installs first.")
	cache := flag.String("cache", "", "Where the earlier commit's release is cached.")
	flag.Parse()
	if err := run(*out, *dist, *base, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
}

// Pinned is what the e2e test reads from images.json: the images (repo@digest) and chart of the working
// tree and of the earlier commit.
type Pinned struct {
	Manager, Verifier         string
	BaseManager, BaseVerifier string
	BaseChart, BaseCommit     string
}

func run(out, dist, base, cache string) error {
	var pinned Pinned
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	o := images.Options{Version: "v0.0.0-e2e", Revision: "e2e", Registry: "keyward.local", CAFile: "/etc/ssl/certs/ca-certificates.crt",
		Created: time.Unix(0, 0).UTC(), Arch: runtime.GOARCH}
	for _, c := range []struct {
		component images.Component
		ref       string
	}{
		{images.Component{Name: "pause", Package: "./test/e2e/pause"}, "keyward.local/pause:e2e"},
		{images.Component{Name: "workload", Package: "./test/e2e/workload"}, "keyward.local/workload:e2e"},
	} {
		img, err := images.BuildComponent(o, c.component)
		if err != nil {
			return err
		}
		ref, err := name.NewTag(c.ref)
		if err != nil {
			return err
		}
		dir := filepath.Join(out, c.component.Name)
		_ = os.RemoveAll(dir)
		l, err := layout.Write(dir, empty.Index)
		if err != nil {
			return err
		}
		if err := l.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.String(), "io.containerd.image.name": ref.String()})); err != nil {
			return err
		}
		if err := archive(dir, filepath.Join(out, c.component.Name+".oci.tar")); err != nil {
			return err
		}
	}
	refs, err := named(filepath.Join(dist, "oci"), filepath.Join(out, "keyward"), filepath.Join(out, "keyward.oci.tar"))
	if err != nil {
		return err
	}
	pinned.Manager, pinned.Verifier = refs["manager"], refs["verifier"]
	if base != "" {
		if refs, err = buildBase(out, base, cache); err != nil {
			return err
		}
		pinned.BaseManager, pinned.BaseVerifier = refs["manager"], refs["verifier"]
		pinned.BaseChart, pinned.BaseCommit = filepath.Join(cache, base, "src", "charts", "keyward"), base
	}
	b, err := json.MarshalIndent(pinned, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "images.json"), b, 0o644); err != nil {
		return err
	}
	// The chart's values that pin the tree's images by digest, for make run-cluster's helm install.
	var values strings.Builder
	values.WriteString("# Written by hack/e2e: the working tree's images as containerd has them.\nimage:\n")
	for _, c := range []struct{ component, ref string }{{"manager", pinned.Manager}, {"verifier", pinned.Verifier}} {
		repo, digest, _ := strings.Cut(c.ref, "@")
		fmt.Fprintf(&values, "  %s:\n    repository: %s\n    digest: %s\n", c.component, repo, digest)
	}
	return os.WriteFile(filepath.Join(out, "values.yaml"), []byte(values.String()), 0o644)
}

// buildBase builds (once; it is cached by commit) the release of an earlier commit with that commit's own
// hack/release, from its own tree.
func buildBase(out, base, cache string) (map[string]string, error) {
	cached := filepath.Join(cache, base)
	if _, err := os.Stat(filepath.Join(cached, "done")); err != nil {
		_ = os.RemoveAll(cached)
		src := filepath.Join(cached, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		if err := sh("", "bash", "-c", fmt.Sprintf("git archive %s | tar -x -C %q", base, src)); err != nil {
			return nil, fmt.Errorf("unpacking %s (is it in this clone's history?): %w", base, err)
		}
		if err := sh(src, "go", "run", "./hack/release", "--version", "v0.0.0-base", "--revision", base, "--out", filepath.Join(cached, "dist")); err != nil {
			return nil, fmt.Errorf("building the release of %s: %w", base, err)
		}
		if err := os.WriteFile(filepath.Join(cached, "done"), nil, 0o644); err != nil {
			return nil, err
		}
	}
	return named(filepath.Join(cached, "dist", "oci"), filepath.Join(out, "base"), filepath.Join(out, "base.oci.tar"))
}

// named copies the images of a release's OCI layout into a layout whose every image carries the names
// containerd imports it under: its tag and repo@digest, the form the chart pins. `ctr images import` keeps
// only io.containerd.image.name. It returns repo@digest by component (manager, verifier).
func named(from, dir, file string) (map[string]string, error) {
	src, err := layout.ImageIndexFromPath(from)
	if err != nil {
		return nil, err
	}
	m, err := src.IndexManifest()
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(dir)
	dst, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, err
	}
	refs := map[string]string{}
	for _, d := range m.Manifests {
		img, err := src.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		tag, err := name.NewTag(d.Annotations["org.opencontainers.image.ref.name"])
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", d.Digest, err)
		}
		pinned := tag.Context().String() + "@" + d.Digest.String()
		for _, n := range []string{tag.String(), pinned} {
			if err := dst.AppendImage(img, layout.WithAnnotations(map[string]string{"io.containerd.image.name": n})); err != nil {
				return nil, err
			}
		}
		refs[strings.TrimPrefix(tag.Context().RepositoryStr()[strings.LastIndex(tag.Context().RepositoryStr(), "/")+1:], "keyward-")] = pinned
	}
	return refs, archive(dir, file)
}

func sh(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// archive writes the OCI layout in dir as a tar, the form `ctr images import` reads.
func archive(dir, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
