// Package images builds Keyward's OCI images without a Docker daemon or a registry: static binaries (CGO
// off, trimmed, version stamped) on an empty base, with CA roots for outbound HTTPS and a numeric non-root
// user, written as an OCI layout and a `docker load` tarball per image. Every timestamp comes from
// Options.Created, so two builds of one commit give the same digests.
package images

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Component is one image: the package to build and the binary's name in the image.
type Component struct{ Name, Package string }

// Components are the images Keyward ships.
var Components = []Component{{"manager", "./cmd"}, {"verifier", "./cmd/verifier"}}

// NonRoot is the numeric user and group the images run as.
const NonRoot = 65532

// CARoots is where the images carry CA certificates (SSL_CERT_FILE points at it).
const CARoots = "/etc/ssl/certs/ca-certificates.crt"

// Options say what to build.
type Options struct {
	Version, Revision, Source string
	// Registry is the repository prefix the images are named under (ghcr.io/keyward-dev).
	Registry string
	Created  time.Time
	// CAFile is the CA bundle copied into the images (the build machine's, from Debian's ca-certificates).
	CAFile string
	Out    string
	Arch   string
}

// Result is one built image.
type Result struct {
	Component Component
	Ref       string
	Digest    v1.Hash
}

// Build builds every component's image into o.Out: an OCI layout in o.Out/oci and o.Out/<name>.tar.
func Build(o Options) ([]Result, error) {
	roots, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA roots: %w", err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	oci, err := layout.Write(filepath.Join(o.Out, "oci"), empty.Index)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, c := range Components {
		bin, err := buildBinary(o, c)
		if err != nil {
			return nil, err
		}
		img, err := image(o, c, bin, roots)
		if err != nil {
			return nil, err
		}
		ref, err := name.NewTag(fmt.Sprintf("%s/keyward-%s:%s", o.Registry, c.Name, o.Version))
		if err != nil {
			return nil, err
		}
		if err := oci.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref.String()})); err != nil {
			return nil, err
		}
		if err := tarball.WriteToFile(filepath.Join(o.Out, "keyward-"+c.Name+".tar"), ref, img); err != nil {
			return nil, err
		}
		digest, err := img.Digest()
		if err != nil {
			return nil, err
		}
		results = append(results, Result{Component: c, Ref: ref.Context().String(), Digest: digest})
	}
	return results, nil
}

// BuildComponent builds one image of a static Go program, as Build does for Keyward's own: for images that
// only tests run (the sandbox image and the workload of the end-to-end tests), which nothing can pull here.
func BuildComponent(o Options, c Component) (v1.Image, error) {
	roots, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA roots: %w", err)
	}
	bin, err := buildBinary(o, c)
	if err != nil {
		return nil, err
	}
	return image(o, c, bin, roots)
}

// buildBinary builds a static, trimmed, version-stamped binary and returns its bytes.
func buildBinary(o Options, c Component) ([]byte, error) {
	dir, err := os.MkdirTemp("", "keyward-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, c.Name)
	pkg := "github.com/keyward-dev/keyward/internal/version"
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", out,
		"-ldflags", fmt.Sprintf("-s -w -buildid= -X %s.Version=%s -X %s.Revision=%s", pkg, o.Version, pkg, o.Revision), c.Package)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building %s: %w", c.Package, err)
	}
	return os.ReadFile(out)
}

// image is an empty base plus one layer (the binary and CA roots) and a config with a non-root user.
func image(o Options, c Component, bin, roots []byte) (v1.Image, error) {
	entrypoint := "/usr/local/bin/" + c.Name
	files := []file{
		{path: "etc/", dir: true}, {path: "etc/ssl/", dir: true}, {path: "etc/ssl/certs/", dir: true},
		{path: CARoots[1:], mode: 0o644, data: roots},
		{path: "usr/", dir: true}, {path: "usr/local/", dir: true}, {path: "usr/local/bin/", dir: true},
		{path: entrypoint[1:], mode: 0o755, data: bin},
	}
	layerBytes, err := tarLayer(files, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = o.Arch, "linux"
	cfg.Config.Entrypoint = []string{entrypoint}
	cfg.Config.User = fmt.Sprintf("%d:%d", NonRoot, NonRoot)
	cfg.Config.Env = []string{"SSL_CERT_FILE=" + CARoots}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.title":    "keyward-" + c.Name,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: o.Created})
}

type file struct {
	path string
	dir  bool
	mode int64
	data []byte
}

// tarLayer writes files in order with fixed times and owners, so the same input gives the same bytes.
func tarLayer(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.path, ModTime: mtime, Mode: f.mode, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BindFlags binds the options' flags to fs and returns a function that gives the options after parsing.
func BindFlags(fs *flag.FlagSet) func() Options {
	var o Options
	fs.StringVar(&o.Version, "version", "v0.0.0-dev", "Version stamped into the binaries and the image labels.")
	fs.StringVar(&o.Revision, "revision", "unknown", "Source revision stamped into the binaries and labels.")
	fs.StringVar(&o.Source, "source", "https://github.com/keyward-dev/keyward", "org.opencontainers.image.source.")
	fs.StringVar(&o.Registry, "registry", "ghcr.io/keyward-dev", "Repository prefix of the image names.")
	created := fs.Int64("created", 0, "Creation time, seconds since the epoch (default SOURCE_DATE_EPOCH, else 0).")
	fs.StringVar(&o.CAFile, "ca-file", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to carry for outbound HTTPS.")
	fs.StringVar(&o.Out, "out", "dist", "Output directory.")
	fs.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the images.")
	return func() Options {
		if *created == 0 {
			*created, _ = strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
		}
		o.Created = time.Unix(*created, 0).UTC()
		return o
	}
}
