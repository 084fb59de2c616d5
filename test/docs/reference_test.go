package docs

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// defined is every first submatch of pattern in the given source files (relative to root).
func defined(t *testing.T, pattern string, files ...string) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	var out []string
	for _, f := range files {
		for _, m := range re.FindAllStringSubmatch(read(t, f), -1) {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s matches nothing in %v: the check is looking at the wrong files", pattern, files)
	}
	return out
}

// goSources is every non-test Go file of the module.
func goSources(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "*.go").Output()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range strings.Fields(string(out)) {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	return files
}

func TestTheReferencePagesNameEverythingTheCodeDefines(t *testing.T) {
	cases := []struct {
		page, what string
		names      []string
	}{
		{"docs/reference/annotations.md", "annotation or label",
			defined(t, `= "(keyward\.dev/[a-z-]+)"`, "api/v1alpha1/well_known.go", "internal/keyrecord/secret.go")},
		{"docs/reference/events.md", "event reason",
			append(defined(t, `EventReason = "(\w+)"`, "api/v1alpha1/well_known.go"),
				defined(t, `Reason = "(\w+)"`, "internal/delivery/machine.go")...)},
		{"docs/reference/webhook-payloads.md", "webhook event", defined(t, `WebhookEvent = "([a-z._]+)"`, "api/v1alpha1/apikey_types.go")},
		{"docs/reference/metrics.md", "metric", defined(t, `"(keyward_[a-z_]+)"`, goSources(t)...)},
		{"docs/reference/conditions.md", "condition reason", defined(t, `\bReason\w+ ConditionReason = "(\w+)"`, "api/v1alpha1/well_known.go")},
	}
	for _, tc := range cases {
		page := read(t, tc.page)
		for _, n := range tc.names {
			if !strings.Contains(page, "`"+n+"`") {
				t.Errorf("%s does not name the %s `%s`", tc.page, tc.what, n)
			}
		}
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the manager, the verifier, the plugin and runlocal once for this package's tests.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = mkdirTemp()
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"manager": "./cmd", "verifier": "./cmd/verifier",
			"kubectl-keyward": "./cmd/kubectl-keyward", "runlocal": "./hack/runlocal"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{pkg: pkg, out: string(out), err: err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return "go build " + e.pkg + ": " + e.err.Error() + "\n" + e.out }

var flagName = regexp.MustCompile(`(?m)^\s+-{1,2}([a-z][a-z0-9-]*)`)

func TestTheFlagsReferenceNamesEveryFlagOfTheManagerAndTheVerifier(t *testing.T) {
	bin := binaries(t)
	page := read(t, "docs/reference/flags.md")
	for _, b := range []string{"manager", "verifier"} {
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(bin, b), "-help")
		cmd.Stdout, cmd.Stderr = &out, &out
		_ = cmd.Run() // -help exits 0 or 2 depending on the flag package; the listing is what matters
		flags := flagName.FindAllStringSubmatch(out.String(), -1)
		if len(flags) < 5 {
			t.Fatalf("%s -help listed %d flags:\n%s", b, len(flags), out.String())
		}
		for _, f := range flags {
			if !strings.Contains(page, "`--"+f[1]+"`") {
				t.Errorf("docs/reference/flags.md does not name the %s flag `--%s`", b, f[1])
			}
		}
	}
}

func TestTheArchitecturePageNamesEveryPackage(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	page := read(t, "docs/development/architecture.md")
	for _, pkg := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, "github.com/keyward-dev/keyward"), "/")
		if !strings.Contains(page, "`"+rel+"`") {
			t.Errorf("docs/development/architecture.md does not name the package `%s`", rel)
		}
	}
}
