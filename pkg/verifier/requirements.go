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
	// Other parameters are the client's and are ignored. It is read only when the key is known.
	Query string
	// Route is the route's own requirements as a gateway pins them in its path prefix: the first path
	// segment, still percent-encoded, with its leading '@' (for example @namespace=billing;scope=orders:read).
	// Its grammar is strict, since a typo or a template that rendered empty must not silently drop a
	// tenancy pin: RouteSegmentGrammar. Its lists must hold like every other.
	Route string
}

// RouteSegmentGrammar describes the route segment (Requirements.Route) for error messages and docs.
const RouteSegmentGrammar = "@name=value[;name=value]..., name one of namespace, namespaces, scope, scopes, each value a comma-separated list of non-blank items"

// checkRoute judges the grammar of a pinned route segment and returns it as a query (its ';' turned into
// '&') for the walk of values. Anything else than the grammar is a problem: an unknown or differently cased
// name, a missing '=', a blank value or item, an encoded '@'.
func checkRoute(seg string) (query, problem string) {
	rest, ok := strings.CutPrefix(seg, "@")
	if !ok {
		return "", "the route segment must start with a literal '@': " + RouteSegmentGrammar
	}
	if rest == "" {
		return "", "the route segment is empty: " + RouteSegmentGrammar
	}
	for param := range strings.SplitSeq(rest, ";") {
		name, value, found := strings.Cut(param, "=")
		switch {
		case name != "namespace" && name != "namespaces" && name != "scope" && name != "scopes":
			return "", "the route segment names an unknown parameter: " + RouteSegmentGrammar
		case !found:
			return "", "a route segment parameter has no '=': " + RouteSegmentGrammar
		}
		unescaped, err := url.PathUnescape(value)
		if err != nil {
			return "", "a route segment value is not percent-encoded correctly: " + RouteSegmentGrammar
		}
		for item := range strings.SplitSeq(unescaped, ",") {
			switch item = strings.TrimSpace(item); {
			case item == "":
				return "", "a route segment value or one of its items is blank: " + RouteSegmentGrammar
			case strings.HasPrefix(name, "scope") && !validRequiredScope(item):
				return "", "a route segment scope is not segment(:segment)*: " + RouteSegmentGrammar
			case strings.HasPrefix(name, "namespace") && !validNamespaceName(item):
				return "", "a route segment namespace is not a namespace name: " + RouteSegmentGrammar
			}
		}
	}
	return strings.ReplaceAll(rest, ";", "&"), ""
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
	// yielded says whether the current group has produced an item yet.
	yielded bool
}

// next returns the next value, or false when there is none. A list or query value that is present but
// holds no item (blank, or only commas and spaces) yields one "" for its group, so that a caller can make it
// accept nothing rather than skip it.
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
				v.yielded = true
				return item, true
			}
		}
		if v.group > 0 && !v.yielded {
			v.yielded = true
			return "", true
		}
		switch {
		case len(v.lists) > 0:
			v.pending, v.lists = v.lists[0], v.lists[1:]
			v.group, v.yielded = v.group+1, false
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
					v.bad, v.yielded = true, true
					return "%", true // not a valid value: the caller rejects it
				}
				value = unescaped
			}
			v.pending = value
			v.group, v.yielded = v.group+1, false
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
	query := req.Query
	if req.Route != "" {
		routeQuery, problem := checkRoute(req.Route)
		if problem != "" {
			return CodeInvalidRequest, problem
		}
		query = routeQuery + "&" + query
	}
	wrongNamespace := false
	if len(req.Namespaces) > 0 || query != "" {
		// Every list must name the key's namespace. Whoever can add a list (a client's own query parameter or
		// header, where a gateway lets it through) can only narrow what the route's own list accepts, and a
		// list that is present but blank accepts no namespace.
		it := values{lists: req.Namespaces, query: query, param: "namespace"}
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
	it := values{lists: req.Scopes, query: query, param: "scope"}
	n, missing := 0, false
	for scope, ok := it.next(); ok; scope, ok = it.next() {
		if scope == "" {
			continue // a blank list of scopes requires none
		}
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
	if req.Query != "" || req.Route != "" || len(req.Namespaces) > 0 || len(req.Scopes) > MaxRequiredScopes {
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
	query := r.Query
	if routeQuery, problem := checkRoute(r.Route); r.Route != "" && problem == "" {
		query = routeQuery + "&" + query
	}
	it := values{lists: r.Scopes, query: query, param: "scope"}
	for scope, ok := it.next(); ok && len(scopes) < MaxRequiredScopes; scope, ok = it.next() {
		if scope != "" && len(scope) <= MaxScopeLength && !it.bad {
			scopes = append(scopes, scope)
		}
	}
	it = values{lists: r.Namespaces, query: query, param: "namespace"}
	var list []string
	group, n := 0, 0
	for ns, ok := it.next(); ok && n < MaxRequiredNamespaces; ns, ok = it.next() {
		if it.group != group && len(list) > 0 {
			namespaces, list = append(namespaces, strings.Join(list, ",")), nil
		}
		group = it.group
		if ns != "" && len(ns) <= maxNamespaceLength && !it.bad {
			list = append(list, ns)
			n++
		}
	}
	if len(list) > 0 {
		namespaces = append(namespaces, strings.Join(list, ","))
	}
	return scopes, namespaces
}

// validNamespaceName reports whether s is a DNS label, as namespace names are.
func validNamespaceName(s string) bool {
	if len(s) == 0 || len(s) > maxNamespaceLength || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// maxNamespaceLength is the longest namespace name Kubernetes allows (a DNS label).
const maxNamespaceLength = 63
