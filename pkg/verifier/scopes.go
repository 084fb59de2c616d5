package verifier

import "strings"

// scopeSet answers whether granted scopes cover a required one. A granted "*" covers everything; a "*"
// segment covers any one segment, and a trailing "*" covers one or more: orders:* grants orders:read and
// orders:read:own, *:read grants orders:read.
type scopeSet struct {
	all      bool
	exact    map[string]struct{}
	patterns [][]string
}

func newScopeSet(granted []string) scopeSet {
	s := scopeSet{exact: make(map[string]struct{}, len(granted))}
	for _, g := range granted {
		switch {
		case g == "*":
			s.all = true
		case strings.Contains(g, "*"):
			s.patterns = append(s.patterns, strings.Split(g, ":"))
		default:
			s.exact[g] = struct{}{}
		}
	}
	return s
}

func (s scopeSet) grantsAll(required []string) bool {
	for _, r := range required {
		if !s.grants(r) {
			return false
		}
	}
	return true
}

func (s scopeSet) grants(required string) bool {
	if s.all {
		return true
	}
	if _, ok := s.exact[required]; ok {
		return true
	}
	for _, p := range s.patterns {
		if matchSegments(p, required) {
			return true
		}
	}
	return false
}

func matchSegments(pattern []string, required string) bool {
	rest := required
	for i, p := range pattern {
		seg, after, more := strings.Cut(rest, ":")
		if seg == "" {
			return false
		}
		if p == "*" && i == len(pattern)-1 {
			return true
		}
		if p != "*" && p != seg {
			return false
		}
		if !more {
			return i == len(pattern)-1
		}
		rest = after
	}
	return false
}
