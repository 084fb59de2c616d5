// Command release writes a release into dist/: the images (see hack/images), dist/keyward.yaml with every
// object and the images pinned by digest, and dist/keyward-crds.yaml (make release VERSION=vX.Y.Z).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/keyward-dev/keyward/internal/images"
	"github.com/keyward-dev/keyward/internal/release"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func main() {
	opts := images.BindFlags(flag.CommandLine)
	flag.Parse()
	if err := run(opts()); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(o images.Options) error {
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`).MatchString(o.Version) {
		return fmt.Errorf("VERSION %q is not vMAJOR.MINOR.PATCH", o.Version)
	}
	built, err := images.Build(o)
	if err != nil {
		return err
	}
	pinned := map[string]string{}
	for _, r := range built {
		pinned[r.Ref] = r.Digest.String()
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		return err
	}
	b, err := release.Render(filepath.Join(assets, "kubectl"), pinned)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"keyward.yaml": b.All, "keyward-crds.yaml": b.CRDs} {
		if err := os.WriteFile(filepath.Join(o.Out, name), data, 0o644); err != nil {
			return err
		}
		fmt.Println(filepath.Join(o.Out, name))
	}
	for _, r := range built {
		fmt.Printf("%s@%s\n", r.Ref, r.Digest)
	}
	return nil
}
