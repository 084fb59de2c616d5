package verifier

import "strings"

// scopeSet answers whether granted scopes cover a required one. A granted "*" covers everything; a "*"
// segment covers any one segment, and a trailing "*" covers one or more: orders:* grants orders:read and
// orders:read:own, *:read grants orders:read.
type scopeSet struct {
	all bool
	// few holds the exact scopes when there are at most smallSet of them (a scan beats hashing); exact
	// holds them otherwise.
	few   []string
	exact map[string]struct{}
	// prefixes are trailing-wildcard grants ("orders:*" as "orders:"): a valid required scope matches one
	// exactly when it starts with it.
	prefixes []string
	patterns [][]string
}

// smallSet is the largest number of exact scopes kept in a slice.
const smallSet = 8

func newScopeSet(granted []string) scopeSet {
	var s scopeSet
	var exact []string
	for _, g := range granted {
		switch {
		case g == "*":
			s.all = true
		case strings.HasSuffix(g, ":*") && !strings.Contains(g[:len(g)-1], "*"):
			s.prefixes = append(s.prefixes, g[:len(g)-1])
		case strings.Contains(g, "*"):
			s.patterns = append(s.patterns, strings.Split(g, ":"))
		default:
			exact = append(exact, g)
		}
	}
	if len(exact) <= smallSet {
		s.few = exact
	} else {
		s.exact = make(map[string]struct{}, len(exact))
		for _, g := range exact {
			s.exact[g] = struct{}{}
		}
	}
	return s
}

// grants reports whether the set covers required, which must be a valid required scope (validRequiredScope).
func (s scopeSet) grants(required string) bool {
	if s.all {
		return true
	}
	for _, g := range s.few {
		if g == required {
			return true
		}
	}
	if _, ok := s.exact[required]; ok {
		return true
	}
	for _, p := range s.prefixes {
		// Required scopes are validated first (no empty segments), so something follows the prefix.
		if len(required) > len(p) && required[:len(p)] == p {
			return true
		}
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
		seg, after, more := rest, "", false
		if j := strings.IndexByte(rest, ':'); j >= 0 {
			seg, after, more = rest[:j], rest[j+1:], true
		}
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
