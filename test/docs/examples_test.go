package docs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func mkdirTemp() (string, error) { return os.MkdirTemp("", "keyward-docs-bin-") }

// step is one command of a console block and the output the page shows for it.
type step struct {
	page    string
	line    int
	command string
	want    []string
}

// consoleSteps reads the ```console blocks of a page: a line starting with "$ " is a command (a trailing
// backslash continues it), the lines up to the next command are its output. A line "..." in the output
// stands for any number of lines.
func consoleSteps(t *testing.T, page string) []step {
	t.Helper()
	var steps []step
	in := false
	for i, l := range strings.Split(read(t, page), "\n") {
		switch {
		case strings.HasPrefix(l, "```console"):
			in = true
		case in && strings.HasPrefix(l, "```"):
			in = false
		case in && strings.HasPrefix(l, "$ "):
			steps = append(steps, step{page: page, line: i + 1, command: strings.TrimPrefix(l, "$ ")})
		case in && len(steps) > 0 && strings.HasSuffix(steps[len(steps)-1].command, "\\") && len(steps[len(steps)-1].want) == 0:
			steps[len(steps)-1].command += "\n" + l
		case in && len(steps) > 0:
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, l)
		}
	}
	if len(steps) == 0 {
		t.Fatalf("%s has no console examples", page)
	}
	return steps
}

// placeholders make what differs between runs (IDs, keys, times, ages) compare equal.
var placeholders = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{38}\b`), "<key>"},
	{regexp.MustCompile(`\b[a-z][a-z0-9]{1,15}_…[0-9A-Za-z]{4}\b`), "<hint>"},
	{regexp.MustCompile(`\bkid_[0-9a-f]{12}\b`), "<key-id>"},
	{regexp.MustCompile(`sha256:[0-9a-f]{64}`), "<hash>"},
	{regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z`), "<time>"},
	{regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}\b`), "<date>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|m|h|d)\b`), "<duration>"},
	{regexp.MustCompile(`"(remaining|reset|limit)":\d+`), `"$1":<n>`},
	{regexp.MustCompile(`[ \t]+`), " "},
}

func normalise(lines []string) []string {
	var out []string
	for _, l := range lines {
		for _, p := range placeholders {
			l = p.re.ReplaceAllString(l, p.with)
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// matches compares output with what the page shows, after placeholders; "..." matches any lines.
func matches(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if matches(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && want[0] == got[0] && matches(want[1:], got[1:])
}

// shell is one bash that runs a page's commands in order, so variables set by one are there for the next.
type shell struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func newShell(t *testing.T, dir string, env []string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir, cmd.Env = dir, env
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
		_ = pw.Close()
	})
	return &shell{cmd: cmd, in: in, out: bufio.NewReader(pr)}
}

// run runs one command and returns its output lines and exit status.
func (s *shell) run(command string) ([]string, int, error) {
	const marker = "__keyward_docs_step_done__"
	if _, err := fmt.Fprintf(s.in, "%s\necho; echo %s $?\n", command, marker); err != nil {
		return nil, 0, err
	}
	var lines []string
	for {
		l, err := s.out.ReadString('\n')
		if err != nil {
			return lines, 0, err
		}
		l = strings.TrimSuffix(l, "\n")
		if rest, ok := strings.CutPrefix(l, marker+" "); ok {
			var code int
			_, _ = fmt.Sscan(rest, &code)
			// The echo before the marker ends a last line without a newline; drop the empty line it adds.
			if n := len(lines); n > 0 && lines[n-1] == "" {
				lines = lines[:n-1]
			}
			return lines, code, nil
		}
		lines = append(lines, l)
	}
}

// localSetup starts what make run-local starts, as make run-local does, in a scratch directory laid out like
// a checkout (config/ and bin/ are links), and returns that directory and the environment of a new shell.
func localSetup(t *testing.T) (string, []string) {
	t.Helper()
	if os.Getenv(testenv.SkipEnvVar) == "1" {
		t.Skipf("needs the control plane; %s=1", testenv.SkipEnvVar)
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if _, err := os.Stat(filepath.Join(assets, "kube-controller-manager")); err != nil {
		t.Fatalf("no kube-controller-manager in %s: run hack/controlplane.sh local (make test does)", assets)
	}
	bin := binaries(t)
	work := t.TempDir()
	for _, l := range []struct{ name, target string }{{"config", filepath.Join(root, "config")}, {"bin", bin}} {
		if err := os.Symlink(l.target, filepath.Join(work, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "runlocal"), "--dir", filepath.Join(work, ".local"),
		"--manager", filepath.Join(bin, "manager"), "--verifier", filepath.Join(bin, "verifier"))
	cmd.Dir = work
	var log bytes.Buffer
	ready := make(chan struct{})
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		closed := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !closed && strings.HasPrefix(sc.Text(), "run-local: ready.") {
				close(ready)
				closed = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); _ = pw.Close() }()
	t.Cleanup(func() {
		// Stopped by its PID, as Ctrl-C stops make run-local: it then stops what it started, by theirs.
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Errorf("stopping run-local: %v", err)
		}
		if err := <-exited; err != nil {
			t.Errorf("run-local did not stop cleanly at Ctrl-C: %v", err)
		}
		if t.Failed() {
			t.Logf("make run-local's output:\n%s", log.String())
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("run-local exited before it was ready: %v", err)
	}
	return work, append(os.Environ(), "HOME="+work, "PWD="+work)
}

// runPage runs a page's console steps in order and compares each output with the page.
func runPage(t *testing.T, sh *shell, page string) {
	t.Helper()
	for _, s := range consoleSteps(t, page) {
		got, code, err := sh.run(s.command)
		if err != nil {
			t.Fatalf("%s:%d: %s: %v", s.page, s.line, s.command, err)
		}
		// A step whose shown output is an error is expected to fail.
		if code != 0 && !slices.ContainsFunc(s.want, func(l string) bool { return strings.HasPrefix(l, "Error: ") }) {
			t.Errorf("%s:%d: `%s` exited %d:\n%s", s.page, s.line, s.command, code, strings.Join(got, "\n"))
			continue
		}
		if !matches(normalise(s.want), normalise(got)) {
			t.Errorf("%s:%d: `%s` printed:\n%s\nthe page shows:\n%s", s.page, s.line, s.command,
				strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}
}

func TestTheReadmeAndGettingStartedExamplesRunAsShown(t *testing.T) {
	work, env := localSetup(t)
	// One shell per page, as a reader opens one; the README's demo first, then the getting-started page,
	// which starts from an empty namespace (the demo ends by deleting what it applied).
	for _, page := range []string{"README.md", "docs/getting-started.md"} {
		runPage(t, newShell(t, work, env), page)
	}
}
