// Command images builds Keyward's OCI images into an output directory (make images); see internal/images.
//
//	go run ./hack/images --version v0.1.0 --revision $(git rev-parse HEAD) --created $(git log -1 --format=%ct) --out dist
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/keyward-dev/keyward/internal/images"
)

func main() {
	o := images.BindFlags(flag.CommandLine)
	flag.Parse()
	results, err := images.Build(o())
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, r := range results {
		fmt.Printf("%s@%s\n", r.Ref, r.Digest)
	}
}
