// Package version holds what a binary was built from, stamped by the release build with -ldflags -X.
package version

import "fmt"

// Version and Revision are set at build time (make images, make release).
var (
	Version  = "dev"
	Revision = "unknown"
)

// String is the one-line answer to --version.
func String(binary string) string {
	return fmt.Sprintf("keyward %s %s (revision %s)", binary, Version, Revision)
}
