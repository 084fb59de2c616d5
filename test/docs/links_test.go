// Package docs holds the tests that keep Keyward's documentation true: links resolve, runbook URLs name
// files, cited tests exist, the reference pages name everything the code defines, and the shell examples of
// the README and the getting-started page run against make run-local's setup with the output they show.
package docs

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// root is the repository, two levels above this package.
var root = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// pages are the Markdown files users and contributors read: the front door and docs/.
func pages(t *testing.T) []string {
	t.Helper()
	out := []string{"README.md", "CONTRIBUTING.md", "SECURITY.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	fence      = regexp.MustCompile("(?m)^```[^\n]*\n(?s:.*?)\n```")
	inlineCode = regexp.MustCompile("`[^`\n]*`")
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

// prose is a page without its code: links and anchors live only in the rest.
func prose(md string) string {
	return inlineCode.ReplaceAllString(fence.ReplaceAllString(md, ""), "")
}

// slug is the anchor GitHub gives a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(md string) []string {
	var out []string
	for _, m := range heading.FindAllStringSubmatch(fence.ReplaceAllString(md, ""), -1) {
		out = append(out, slug(strings.ReplaceAll(m[1], "`", "")))
	}
	return out
}

func TestEveryLinkInTheDocsResolvesToAFileAndHeading(t *testing.T) {
	for _, page := range pages(t) {
		md := read(t, page)
		for _, m := range mdLink.FindAllStringSubmatch(prose(md), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			resolved := page
			if file != "" {
				resolved = filepath.Join(filepath.Dir(page), file)
				if _, err := os.Stat(filepath.Join(root, resolved)); err != nil {
					t.Errorf("%s links to %s, which does not exist", page, target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(resolved, ".md") && !slices.Contains(anchors(read(t, resolved)), anchor) {
				t.Errorf("%s links to %s: %s has no heading with anchor #%s", page, target, resolved, anchor)
			}
		}
	}
}

func TestEveryDocsPageIsReachableFromTheIndex(t *testing.T) {
	seen := map[string]bool{}
	var visit func(page string)
	visit = func(page string) {
		if seen[page] {
			return
		}
		seen[page] = true
		for _, m := range mdLink.FindAllStringSubmatch(prose(read(t, page)), -1) {
			file, _, _ := strings.Cut(m[1], "#")
			if file == "" || strings.Contains(file, "://") || !strings.HasSuffix(file, ".md") {
				continue
			}
			next := filepath.Join(filepath.Dir(page), file)
			if _, err := os.Stat(filepath.Join(root, next)); err == nil && strings.HasPrefix(next, "docs/") {
				visit(next)
			}
		}
	}
	visit("README.md")
	for _, page := range pages(t) {
		if strings.HasPrefix(page, "docs/") && !seen[page] {
			t.Errorf("%s is linked from no page that the README leads to", page)
		}
	}
}

var runbookURL = regexp.MustCompile(`runbook_url: "?([^"\s]+)"?`)

// runbookBase is where runbook URLs point: the docs on the default branch.
const runbookBase = "https://github.com/keyward-dev/keyward/blob/main/"

func TestEveryAlertHasARunbookURLThatNamesItsRunbookFile(t *testing.T) {
	files := []string{"config/prometheus/prometheus_rule.yaml", "config/prometheus/rules_test.yaml"}
	alert := regexp.MustCompile(`(?m)^\s*-?\s*alert: (\w+)`)
	for _, f := range files {
		text := read(t, f)
		alerts := alert.FindAllStringSubmatch(text, -1)
		urls := runbookURL.FindAllStringSubmatch(text, -1)
		if f == files[0] && (len(alerts) == 0 || len(alerts) != len(urls)) {
			t.Errorf("%s: %d alerts, %d runbook URLs; want one per alert", f, len(alerts), len(urls))
		}
		for _, u := range urls {
			rel, ok := strings.CutPrefix(u[1], runbookBase)
			if !ok {
				t.Errorf("%s: runbook URL %s is not under %s", f, u[1], runbookBase)
				continue
			}
			if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
				t.Errorf("%s: runbook URL %s names no file", f, u[1])
			}
		}
		for _, a := range alerts {
			want := runbookBase + "docs/operations/runbooks/" + a[1] + ".md"
			if !strings.Contains(text, want) && f == files[0] {
				t.Errorf("%s: alert %s does not point at %s", f, a[1], want)
			}
		}
	}
}

var citedTest = regexp.MustCompile("`((?:Test|Benchmark)[A-Z][A-Za-z0-9_]*)`")

func TestEveryTestTheDocsCiteExists(t *testing.T) {
	out, err := exec.Command("git", "-C", root, "grep", "--untracked", "-h", "-o", "-E", `^func (Test|Benchmark)[A-Z][A-Za-z0-9_]*`, "--", "*_test.go").Output()
	if err != nil {
		t.Fatalf("git grep: %v", err)
	}
	defined := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		defined[strings.TrimPrefix(l, "func ")] = true
	}
	cited := 0
	for _, page := range pages(t) {
		for _, m := range citedTest.FindAllStringSubmatch(read(t, page), -1) {
			cited++
			if !defined[m[1]] {
				t.Errorf("%s cites %s, which no test file defines", page, m[1])
			}
		}
	}
	if cited == 0 {
		t.Error("no page cites a test: the check is looking at the wrong files")
	}
}
