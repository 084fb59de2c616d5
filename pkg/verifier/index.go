// Package verifier checks presented API keys against the APIKeys in a cluster, in memory and without
// access to Secrets: an index, fed by a watch on APIKeys, maps the SHA-256 of every current and previous key
// to what the verifier needs (owner, scopes, expiry, disabled state, rate limit). Other Go services can
// import it and verify in-process; cmd/verifier serves it over HTTP forward auth, a JSON API and Envoy
// ext_authz.
package verifier

import (
	"context"
	"encoding/binary"
	"github.com/go-logr/logr"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/period"
)

// Code is the outcome of a verification.
type Code string

// The verification codes, in the order Verify checks them.
const (
	CodeValid     Code = "VALID"
	CodeMalformed Code = "MALFORMED"
	CodeNotFound  Code = "NOT_FOUND"
	// CodeAmbiguous: two APIKeys claim the presented key; the verifier fails closed until one lets go.
	CodeAmbiguous Code = "AMBIGUOUS"
	CodeDisabled  Code = "DISABLED"
	CodeExpired   Code = "EXPIRED"
	// CodeInvalidRequest: what the route requires (scopes, namespaces) is malformed or over the caps.
	CodeInvalidRequest Code = "INVALID_REQUEST"
	// CodeWrongNamespace: the key's APIKey is not in a namespace the route accepts.
	CodeWrongNamespace    Code = "WRONG_NAMESPACE"
	CodeInsufficientScope Code = "INSUFFICIENT_SCOPE"
	CodeRateLimited       Code = "RATE_LIMITED"
)

// Codes lists every code, for metrics and documentation.
var Codes = []Code{CodeValid, CodeMalformed, CodeNotFound, CodeAmbiguous, CodeDisabled, CodeExpired,
	CodeInvalidRequest, CodeWrongNamespace, CodeInsufficientScope, CodeRateLimited}

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

// Result is the answer for one presented key. Everything in it is public: no key material.
type Result struct {
	Code Code
	// KeyID, Namespace and Name identify the key and its APIKey once the key is known.
	KeyID     string
	Namespace string
	Name      string
	// Scopes are the APIKey's scopes (shared; do not modify) and ScopesHeader the same joined with commas.
	Scopes       []string
	ScopesHeader string
	// ExpiresAt is when the presented key stops being accepted (its validUntil for a previous key).
	ExpiresAt time.Time
	// RateLimit is set when the APIKey has a rate limit and the key got that far.
	RateLimit *RateLimitState
	// Problem explains CodeInvalidRequest; it never holds key material.
	Problem string
}

// Valid reports whether the key is accepted.
func (r Result) Valid() bool { return r.Code == CodeValid }

// Identified reports whether the result describes a live key of a known APIKey (valid, or refused for the
// route's requirements or its rate limit). Disabled, expired and unknown keys are not described.
func (r Result) Identified() bool {
	switch r.Code {
	case CodeValid, CodeWrongNamespace, CodeInsufficientScope, CodeRateLimited:
		return true
	}
	return false
}

// Index holds the keys of every APIKey it was given. It is safe for concurrent use.
type Index struct {
	mu sync.RWMutex
	// byHash finds records by the first 8 bytes of the key's SHA-256 (a cheaper map key than all 32); the
	// chain of records at that slot holds every key sharing them, each with its full digest.
	byHash map[uint64]*keyRecord
	byName map[types.NamespacedName]*entry

	// trusted is the set of namespaces whose keys count; nil trusts every namespace.
	trusted atomic.Pointer[map[string]struct{}]
	// shared, when set, enforces rate limits in a store shared by every replica.
	shared         SharedLimiter
	sharedFailOpen bool
	sharedErrors   atomic.Int64
	// peers is how many replicas share the load; local buckets allow 1/peers of the limit each.
	peers func() int
	// The failures the index answered by refusing rather than guessing (see Failures).
	invalidRateLimits, namespaceListErrors, peerListErrors atomic.Int64
	// log receives a line for each of them; see SetLogger.
	log logr.Logger
}

// Failures counts what the index could not know and therefore refused instead of guessing.
type Failures struct {
	// InvalidRateLimits counts APIKey updates whose spec.rateLimit could not be read (a period that does not
	// parse, from a CRD older than its validation): their keys are answered RATE_LIMITED, never unlimited.
	InvalidRateLimits int64
	// NamespaceListErrors counts the times the trusted namespaces could not be listed: until the next list
	// succeeds no namespace is trusted.
	NamespaceListErrors int64
	// PeerListErrors counts the times the replicas could not be counted: the last count stands.
	PeerListErrors int64
}

// Failures returns the counts so far.
func (ix *Index) Failures() Failures {
	return Failures{InvalidRateLimits: ix.invalidRateLimits.Load(), NamespaceListErrors: ix.namespaceListErrors.Load(),
		PeerListErrors: ix.peerListErrors.Load()}
}

// SetLogger sets where the index reports what it refused to guess; the default discards it.
func (ix *Index) SetLogger(l logr.Logger) { ix.log = l }

// entry is what the index knows about one APIKey, shared by its current and previous keys.
type entry struct {
	namespace, name string
	disabled        bool
	scopes          scopeSet
	scopeList       []string
	scopesHeader    string
	rateLimit       keywardv1alpha1.RateLimit
	limiter         *tokenBucket
	hashes          []keys.Digest

	// usage since the last flush
	requests atomic.Int64
	lastUsed atomic.Int64 // Unix nanoseconds
}

// keyRecord is one accepted key. Records whose digests share their first 8 bytes form a chain; when several
// APIKeys claim the same full digest the index fails closed for that key until only one claims it.
type keyRecord struct {
	digest   keys.Digest
	entry    *entry
	keyID    string
	notAfter time.Time
	next     *keyRecord
}

// NewIndex returns an empty index that trusts every namespace and keeps rate limits per replica.
func NewIndex() *Index {
	return &Index{byHash: map[uint64]*keyRecord{}, byName: map[types.NamespacedName]*entry{}}
}

// TrustNamespaces limits the index to keys of APIKeys in these namespaces; nil trusts all of them. Keys of
// other namespaces are answered NOT_FOUND, as if this verifier had never heard of them.
func (ix *Index) TrustNamespaces(namespaces []string) {
	if namespaces == nil {
		ix.trusted.Store(nil)
		return
	}
	set := make(map[string]struct{}, len(namespaces))
	for _, ns := range namespaces {
		set[ns] = struct{}{}
	}
	ix.trusted.Store(&set)
}

// SetPeers tells the index how many replicas share the traffic (peers returns at least 1), so that each
// replica's local buckets allow 1/peers of every rate limit and together they hold the declared limit.
// Without it each replica allows the whole limit.
func (ix *Index) SetPeers(peers func() int) { ix.peers = peers }

// UseSharedLimiter enforces rate limits in a store every replica shares (Redis) instead of local buckets.
// When the store fails, failOpen allows the request and !failOpen answers RATE_LIMITED; either way the
// failure is counted in SharedLimiterErrors.
func (ix *Index) UseSharedLimiter(l SharedLimiter, failOpen bool) {
	ix.shared, ix.sharedFailOpen = l, failOpen
}

// SharedLimiterErrors counts the rate-limit decisions the shared store could not make.
func (ix *Index) SharedLimiterErrors() int64 { return ix.sharedErrors.Load() }

// Upsert records an APIKey's current state: its current key (from status.keyHash and status.expiresAt),
// its previous keys (until their validUntil), scopes, rate limit and disabled flag. Rate limit state and
// pending usage survive updates, so a status write does not reset a bucket. An APIKey being deleted is
// forgotten at once: its keys stop before the object is gone (foreground deletion can take a while).
func (ix *Index) Upsert(ak *keywardv1alpha1.APIKey) {
	if !ak.DeletionTimestamp.IsZero() {
		ix.Delete(ak.Namespace, ak.Name)
		return
	}
	nn := types.NamespacedName{Namespace: ak.Namespace, Name: ak.Name}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e := ix.byName[nn]
	if e == nil {
		e = &entry{namespace: ak.Namespace, name: ak.Name}
		ix.byName[nn] = e
	}
	e.disabled = ak.Spec.Disabled
	e.scopeList = make([]string, len(ak.Spec.Scopes))
	for i, s := range ak.Spec.Scopes {
		e.scopeList[i] = string(s)
	}
	e.scopes = newScopeSet(e.scopeList)
	e.scopesHeader = joinComma(e.scopeList)
	var rl keywardv1alpha1.RateLimit
	if ak.Spec.RateLimit != nil {
		rl = *ak.Spec.RateLimit
	}
	if rl != e.rateLimit || (e.limiter == nil) != (ak.Spec.RateLimit == nil) {
		e.rateLimit = rl
		e.limiter = newTokenBucket(ak.Spec.RateLimit)
		if e.limiter != nil && e.limiter.closed {
			ix.invalidRateLimits.Add(1)
			ix.log.Info("spec.rateLimit cannot be read; the APIKey's keys are answered RATE_LIMITED until it is fixed",
				"namespace", ak.Namespace, "name", ak.Name, "period", string(rl.Period))
		}
	}

	ix.unlinkLocked(e)
	add := func(hash string, notAfter time.Time) {
		d, err := keys.ParseHash(hash)
		if err != nil || notAfter.IsZero() {
			return
		}
		slot := slotOf(d)
		ix.byHash[slot] = &keyRecord{digest: d, entry: e, keyID: d.ID(), notAfter: notAfter, next: ix.byHash[slot]}
		e.hashes = append(e.hashes, d)
	}
	for _, p := range ak.Status.PreviousKeys {
		add(p.KeyHash, p.ValidUntil.Time)
	}
	if ak.Status.KeyHash != "" && ak.Status.ExpiresAt != nil {
		add(ak.Status.KeyHash, ak.Status.ExpiresAt.Time)
	}
}

// unlinkLocked removes e's records from every chain, leaving other APIKeys' records of the same hashes.
func (ix *Index) unlinkLocked(e *entry) {
	for _, h := range e.hashes {
		slot := slotOf(h)
		var kept *keyRecord
		for r := ix.byHash[slot]; r != nil; r = r.next {
			if r.entry != e {
				kept = &keyRecord{digest: r.digest, entry: r.entry, keyID: r.keyID, notAfter: r.notAfter, next: kept}
			}
		}
		if kept == nil {
			delete(ix.byHash, slot)
		} else {
			ix.byHash[slot] = kept
		}
	}
	e.hashes = e.hashes[:0]
}

func slotOf(d keys.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

// find returns the first record of digest d in the chain at its slot whose namespace is trusted (every
// namespace when trusted is nil), and whether another trusted APIKey's record claims the same digest. The
// trust filter comes first: a copy of a key planted in a namespace the verifier does not trust must not
// make the genuine key AMBIGUOUS.
func (ix *Index) find(d keys.Digest, trusted *map[string]struct{}) (rec *keyRecord, ambiguous bool) {
	for r := ix.byHash[slotOf(d)]; r != nil; r = r.next {
		if r.digest != d {
			continue
		}
		if trusted != nil {
			if _, ok := (*trusted)[r.entry.namespace]; !ok {
				continue
			}
		}
		if rec == nil {
			rec = r
		} else if r.entry != rec.entry {
			return rec, true
		}
	}
	return rec, false
}

// Delete forgets an APIKey: its keys are rejected from now on; another APIKey's claim on the same hash stays.
func (ix *Index) Delete(namespace, name string) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e := ix.byName[nn]; e != nil {
		ix.unlinkLocked(e)
		delete(ix.byName, nn)
	}
}

// Len returns how many distinct keys (current and previous) the index holds.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	seen := map[keys.Digest]struct{}{}
	for _, r := range ix.byHash {
		for ; r != nil; r = r.next {
			seen[r.digest] = struct{}{}
		}
	}
	return len(seen)
}

// Verify checks a presented key at now against required scopes (each a scope or a comma-separated list);
// see VerifyRequest.
func (ix *Index) Verify(key string, requiredScopes []string, now time.Time) Result {
	return ix.VerifyRequest(context.Background(), key, Requirements{Scopes: requiredScopes}, now)
}

// VerifyRequest checks a presented key at now, in this order: well-formed with a valid checksum
// (MALFORMED), known and trusted (NOT_FOUND), claimed by one APIKey only (AMBIGUOUS), APIKey disabled
// (DISABLED), expired or past a previous key's validUntil (EXPIRED); only then the route's requirements, parsed
// within the caps (INVALID_REQUEST), namespace (WRONG_NAMESPACE), scopes (INSUFFICIENT_SCOPE), and the rate
// limit (RATE_LIMITED, one budget per APIKey shared by its current and previous keys). A VALID answer counts
// towards the APIKey's usage. Nothing the request requires is parsed for a key that is not known.
func (ix *Index) VerifyRequest(ctx context.Context, key string, req Requirements, now time.Time) Result {
	if !keys.WellFormed(key) {
		return Result{Code: CodeMalformed}
	}
	digest := keys.Sum(key)
	ix.mu.RLock()
	rec, ambiguous := ix.find(digest, ix.trusted.Load())
	if rec == nil {
		ix.mu.RUnlock()
		// The checksum is checked here rather than first: a key the index holds was minted with a valid one,
		// and skipping it on the hot path is what keeps Verify fast. Unknown keys still get the offline
		// verdict MALFORMED when their checksum is wrong.
		if _, err := keys.Parse(key); err != nil {
			return Result{Code: CodeMalformed}
		}
		return Result{Code: CodeNotFound}
	}
	if ambiguous {
		ix.mu.RUnlock()
		return Result{Code: CodeAmbiguous}
	}
	e := rec.entry
	res := Result{KeyID: rec.keyID, Namespace: e.namespace, Name: e.name, Scopes: e.scopeList,
		ScopesHeader: e.scopesHeader, ExpiresAt: rec.notAfter}
	disabled, scopes, limiter, limit := e.disabled, e.scopes, e.limiter, e.rateLimit
	ix.mu.RUnlock()

	switch {
	case disabled:
		res.Code = CodeDisabled
	case !now.Before(rec.notAfter):
		res.Code = CodeExpired
	default:
		res.Code, res.Problem = checkRequirements(req, e.namespace, scopes)
	}
	if res.Code == CodeValid && limiter != nil {
		state := ix.take(ctx, e, limiter, limit, now)
		res.RateLimit = &state
		if !state.Allowed {
			res.Code = CodeRateLimited
		}
	}
	if res.Code == CodeValid {
		e.requests.Add(1)
		e.lastUsed.Store(now.UnixNano())
	}
	return res
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

// take spends one request of e's rate limit: in the shared store when there is one, else in e's bucket.
func (ix *Index) take(ctx context.Context, e *entry, local *tokenBucket, limit keywardv1alpha1.RateLimit, now time.Time) RateLimitState {
	if ix.shared == nil {
		peers := 1
		if ix.peers != nil {
			peers = max(ix.peers(), 1)
		}
		return local.take(now, peers)
	}
	if local.closed {
		return local.take(now, 1)
	}
	state, err := ix.shared.Take(ctx, e.namespace+"/"+e.name, int(limit.Requests), local.period)
	if err != nil {
		ix.sharedErrors.Add(1)
		return RateLimitState{Allowed: ix.sharedFailOpen, Limit: int(limit.Requests), RetryAfter: time.Second}
	}
	return state
}

// Usage is what one APIKey's keys were used for since the last drain.
type Usage struct {
	Namespace, Name string
	Requests        int64
	LastUsed        time.Time
}

// DrainUsage returns and resets the usage of every APIKey that was used since the last drain.
func (ix *Index) DrainUsage() []Usage {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []Usage
	for _, e := range ix.byName {
		if n := e.requests.Swap(0); n > 0 {
			out = append(out, Usage{Namespace: e.namespace, Name: e.name, Requests: n, LastUsed: time.Unix(0, e.lastUsed.Load()).UTC()})
		}
	}
	return out
}

// RestoreUsage gives back usage that could not be reported, so the next flush reports it.
func (ix *Index) RestoreUsage(u Usage) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if e := ix.byName[types.NamespacedName{Namespace: u.Namespace, Name: u.Name}]; e != nil {
		e.requests.Add(u.Requests)
	}
}

func joinComma(s []string) string {
	n := 0
	for _, x := range s {
		n += len(x) + 1
	}
	b := make([]byte, 0, n)
	for i, x := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, x...)
	}
	return string(b)
}

// RateLimitState is the rate limit bucket after a verification.
type RateLimitState struct {
	Allowed bool
	// Limit is the number of requests per period.
	Limit int
	// Remaining is how many more requests the bucket holds now.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until the next request would be allowed (zero when allowed).
	RetryAfter time.Duration
}

// SharedLimiter enforces rate limits in a store that every verifier replica shares.
type SharedLimiter interface {
	// Take spends one of limit requests per period for the APIKey named id ("namespace/name").
	Take(ctx context.Context, id string, limit int, period time.Duration) (RateLimitState, error)
}

// tokenBucket refills continuously at limit/period up to limit tokens, divided among peers replicas: each
// holds limit/peers tokens (at least one) and refills at limit/peers per period.
type tokenBucket struct {
	mu sync.Mutex
	// closed is set for a limit that could not be read: it allows nothing (a limit that cannot be read must
	// not turn rate limiting off).
	closed bool
	limit  int
	period time.Duration
	peers  int
	tokens float64
	last   time.Time
}

func newTokenBucket(rl *keywardv1alpha1.RateLimit) *tokenBucket {
	if rl == nil || rl.Requests <= 0 {
		return nil
	}
	p, err := period.Parse(string(rl.Period))
	if err != nil || p.Approx() <= 0 {
		return &tokenBucket{closed: true, limit: int(rl.Requests), period: time.Minute, peers: 1}
	}
	return &tokenBucket{limit: int(rl.Requests), period: p.Approx(), peers: 1, tokens: float64(rl.Requests)}
}

func (b *tokenBucket) take(now time.Time, peers int) RateLimitState {
	if b.closed {
		return RateLimitState{Limit: b.limit, RetryAfter: b.period}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if peers != b.peers {
		// The share changed: keep the same fraction of the bucket.
		b.tokens = b.tokens * float64(b.peers) / float64(peers)
		b.peers = peers
	}
	share := float64(b.limit) / float64(peers)
	capacity := max(share, 1)
	perNano := share / float64(b.period)
	if !b.last.IsZero() {
		if elapsed := now.Sub(b.last); elapsed > 0 {
			b.tokens = min(capacity, b.tokens+float64(elapsed)*perNano)
		}
	}
	b.tokens = min(b.tokens, capacity)
	if now.After(b.last) {
		b.last = now
	}
	s := RateLimitState{Limit: b.limit}
	if b.tokens >= 1 {
		b.tokens--
		s.Allowed = true
	} else {
		s.RetryAfter = time.Duration((1 - b.tokens) / perNano)
	}
	s.Remaining = int(b.tokens)
	s.Reset = time.Duration((capacity - b.tokens) / perNano)
	return s
}
