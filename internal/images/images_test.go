package images

import (
	"archive/tar"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func TestImagesAreReproducibleAndRunFromTheirUnpackedRootFilesystem(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatal("umoci is not installed: apt-get install umoci (.ci/run installs it)")
	}
	if err := os.Chdir("../.."); err != nil { // go build needs the module root: internal/images → .
		t.Fatal(err)
	}
	o := Options{Version: "v0.1.0-test", Revision: "0123abc", Source: "https://github.com/keyward-dev/keyward", Registry: "ghcr.io/keyward-dev",
		Created: time.Unix(1764000000, 0).UTC(), CAFile: "/etc/ssl/certs/ca-certificates.crt"}
	o.Out = t.TempDir()
	first, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	o.Out = t.TempDir()
	second, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].Digest != second[i].Digest {
			t.Errorf("%s: two builds of one commit give %s and %s", first[i].Component.Name, first[i].Digest, second[i].Digest)
		}
	}

	idx, err := layout.ImageIndexFromPath(filepath.Join(o.Out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range second {
		ref := r.Ref + ":" + o.Version
		bundle := filepath.Join(t.TempDir(), "bundle")
		if out, err := exec.Command(umoci, "unpack", "--rootless", "--image", filepath.Join(o.Out, "oci")+":"+ref, bundle).CombinedOutput(); err != nil {
			t.Fatalf("umoci unpack %s: %v\n%s", ref, err, out)
		}
		bin := filepath.Join(bundle, "rootfs", "usr", "local", "bin", r.Component.Name)
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "v0.1.0-test") || !strings.Contains(string(out), "0123abc") {
			t.Errorf("%s --version: %v %s", r.Component.Name, err, out)
		}
		if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "-version") {
			t.Errorf("%s --help: %v %s", r.Component.Name, err, out)
		}
		if _, err := os.Stat(filepath.Join(bundle, "rootfs", CARoots)); err != nil {
			t.Errorf("%s carries no CA roots: %v", r.Component.Name, err)
		}
		var cfg struct {
			Process struct {
				User struct{ UID, GID int } `json:"user"`
				Args []string               `json:"args"`
			} `json:"process"`
		}
		raw, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
		if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Process.User.UID != NonRoot || cfg.Process.User.GID != NonRoot ||
			len(cfg.Process.Args) != 1 || cfg.Process.Args[0] != "/usr/local/bin/"+r.Component.Name {
			t.Errorf("%s runtime config: %s", r.Component.Name, raw)
		}
	}
	for _, d := range manifest.Manifests {
		img, _ := idx.Image(d.Digest)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.Labels["org.opencontainers.image.revision"] != "0123abc" || cf.Config.Labels["org.opencontainers.image.version"] != "v0.1.0-test" ||
			cf.Config.Labels["org.opencontainers.image.source"] == "" || !cf.Created.Time.Equal(o.Created) {
			t.Errorf("image %s config: labels %v created %v", d.Annotations["org.opencontainers.image.ref.name"], cf.Config.Labels, cf.Created)
		}
	}
	// The docker load tarball names the image.
	f, err := os.Open(filepath.Join(o.Out, "keyward-manager.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	found := false
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if h.Name == "manifest.json" {
			var m []struct{ RepoTags []string }
			if json.NewDecoder(tr).Decode(&m) == nil && len(m) == 1 && len(m[0].RepoTags) == 1 &&
				m[0].RepoTags[0] == "ghcr.io/keyward-dev/keyward-manager:v0.1.0-test" {
				found = true
			}
		}
	}
	if !found {
		t.Error("keyward-manager.tar has no docker manifest.json naming the image")
	}
}
