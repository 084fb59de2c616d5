package verifier

import (
	"net/url"
	"strconv"
	"strings"
)

// Caps on what one request may require. They bound the work a request can cause; a request over them is
// answered INVALID_REQUEST.
const (
	// MaxRequiredScopes is how many scopes one request may require.
	MaxRequiredScopes = 32
	// MaxRequiredNamespaces is how many namespaces one request may accept.
	MaxRequiredNamespaces = 16
	// MaxScopeLength is the longest required scope, as the APIKey CRD bounds granted ones.
	MaxScopeLength = 128
)

// Requirements are what a route demands of a key, as the request carries them. Verify looks at them only
// once the key is known, valid and current, and parses them within the caps above.
type Requirements struct {
	// Scopes are required scopes; each element is one scope or a comma-separated list. Blank entries are
	// ignored.
	Scopes []string
	// Namespaces are lists of the namespaces the key's APIKey may come from; each element is one namespace
	// or a comma-separated list, and the key must come from a namespace of every list: a list narrows,
	// never widens, what the others accept. None means any namespace this verifier trusts.
	Namespaces []string
	// Query is a raw URL query whose scope and scopes parameters add required scopes and whose namespace
	// and namespaces parameters add lists of accepted namespaces, each of which must hold (as Namespaces).
	// It is read only when the key is known.
	Query string
}

// values walks the non-blank values of one kind of requirement: the comma-separated lists, then the query
// parameters named param or param+"s". It allocates only to unescape a query value that needs it.
type values struct {
	lists   []string
	query   string
	param   string
	pending string // what is left of the list or query value being split
	bad     bool   // a query value could not be unescaped
	// group counts the lists and query values started so far: the items of one list share a group.
	group int
}

// next returns the next value, or false when there is none.
func (v *values) next() (string, bool) {
	for {
		for v.pending != "" {
			var item string
			if i := strings.IndexByte(v.pending, ','); i >= 0 {
				item, v.pending = v.pending[:i], v.pending[i+1:]
			} else {
				item, v.pending = v.pending, ""
			}
			if item = strings.TrimSpace(item); item != "" {
				return item, true
			}
		}
		switch {
		case len(v.lists) > 0:
			v.pending, v.lists = v.lists[0], v.lists[1:]
			v.group++
		case v.query != "":
			var kv string
			if i := strings.IndexByte(v.query, '&'); i >= 0 {
				kv, v.query = v.query[:i], v.query[i+1:]
			} else {
				kv, v.query = v.query, ""
			}
			name, value, _ := strings.Cut(kv, "=")
			if name != v.param && (len(name) != len(v.param)+1 || name[:len(v.param)] != v.param || name[len(v.param)] != 's') {
				continue
			}
			if strings.ContainsAny(value, "%+") {
				unescaped, err := url.QueryUnescape(value)
				if err != nil {
					v.bad = true
					return "%", true // not a valid value: the caller rejects it
				}
				value = unescaped
			}
			v.pending = value
			v.group++
		default:
			return "", false
		}
	}
}

// checkRequirements judges what a route requires of a known, valid key: namespaces first, then scopes, each
// within the caps and syntax.
func checkRequirements(req Requirements, namespace string, granted scopeSet) (Code, string) {
	if code, ok := checkPlainScopes(req, granted); ok {
		return code, ""
	}
	wrongNamespace := false
	if len(req.Namespaces) > 0 || req.Query != "" {
		// Every list must name the key's namespace. Whoever can add a list (a client's own query parameter or
		// header, where a gateway lets it through) can only narrow what the route's own list accepts.
		it := values{lists: req.Namespaces, query: req.Query, param: "namespace"}
		n, group, match := 0, 0, true
		for ns, ok := it.next(); ok; ns, ok = it.next() {
			if n++; n > MaxRequiredNamespaces {
				return CodeInvalidRequest, "more than " + strconv.Itoa(MaxRequiredNamespaces) + " required namespaces"
			}
			if it.group != group {
				wrongNamespace = wrongNamespace || !match
				group, match = it.group, false
			}
			match = match || ns == namespace
		}
		wrongNamespace = wrongNamespace || !match
	}
	it := values{lists: req.Scopes, query: req.Query, param: "scope"}
	n, missing := 0, false
	for scope, ok := it.next(); ok; scope, ok = it.next() {
		if n++; n > MaxRequiredScopes {
			return CodeInvalidRequest, "more than " + strconv.Itoa(MaxRequiredScopes) + " required scopes"
		}
		if !validRequiredScope(scope) {
			return CodeInvalidRequest, "a required scope is not segment(:segment)* of letters, digits, '_', '.' and '-' (at most " +
				strconv.Itoa(MaxScopeLength) + " characters)"
		}
		missing = missing || !granted.grants(scope)
	}
	switch {
	case wrongNamespace:
		return CodeWrongNamespace, ""
	case missing:
		return CodeInsufficientScope, ""
	}
	return CodeValid, ""
}

// checkPlainScopes is the fast path for the common shape of requirements: a few scopes, one per element,
// nothing else. ok is false when the requirements need the general walk.
func checkPlainScopes(req Requirements, granted scopeSet) (code Code, ok bool) {
	if req.Query != "" || len(req.Namespaces) > 0 || len(req.Scopes) > MaxRequiredScopes {
		return "", false
	}
	code = CodeValid
	for _, scope := range req.Scopes {
		if strings.IndexByte(scope, ',') >= 0 || !validRequiredScope(scope) {
			return "", false // a list, blanks or padding, or invalid: the general walk decides
		}
		if !granted.grants(scope) {
			code = CodeInsufficientScope
		}
	}
	return code, true
}

// validRequiredScope reports whether s is segment(:segment)* with segments [A-Za-z0-9][A-Za-z0-9_.-]*, the
// CRD's scope syntax without wildcards (a route requires concrete scopes).
func validRequiredScope(s string) bool {
	if len(s) == 0 || len(s) > MaxScopeLength {
		return false
	}
	segStart := true
	for i := 0; i < len(s); i++ {
		switch scopeChars[s[i]] {
		case scopeAlnum:
			segStart = false
		case scopeColon:
			if segStart {
				return false
			}
			segStart = true
		case scopePunct:
			if segStart {
				return false
			}
		default:
			return false
		}
	}
	return !segStart
}

// Character classes of scope syntax.
const (
	scopeInvalid = iota
	scopeAlnum
	scopePunct // '_', '.', '-': not at the start of a segment
	scopeColon
)

var scopeChars = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = scopeAlnum, scopeAlnum
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = scopeAlnum
	}
	t['_'], t['.'], t['-'], t[':'] = scopePunct, scopePunct, scopePunct, scopeColon
	return t
}()

// Lists returns what r requires, as Verify reads it, within the caps: the required scopes, and each list
// of accepted namespaces as one comma-separated string (every list must hold). For the decision log; a
// value over the caps or too long to be valid is left out, as Verify would refuse it.
func (r Requirements) Lists() (scopes, namespaces []string) {
	it := values{lists: r.Scopes, query: r.Query, param: "scope"}
	for scope, ok := it.next(); ok && len(scopes) < MaxRequiredScopes; scope, ok = it.next() {
		if len(scope) <= MaxScopeLength && !it.bad {
			scopes = append(scopes, scope)
		}
	}
	it = values{lists: r.Namespaces, query: r.Query, param: "namespace"}
	var list []string
	group, n := 0, 0
	for ns, ok := it.next(); ok && n < MaxRequiredNamespaces; ns, ok = it.next() {
		if it.group != group && len(list) > 0 {
			namespaces, list = append(namespaces, strings.Join(list, ",")), nil
		}
		group = it.group
		if len(ns) <= maxNamespaceLength && !it.bad {
			list = append(list, ns)
			n++
		}
	}
	if len(list) > 0 {
		namespaces = append(namespaces, strings.Join(list, ","))
	}
	return scopes, namespaces
}

// maxNamespaceLength is the longest namespace name Kubernetes allows (a DNS label).
const maxNamespaceLength = 63
