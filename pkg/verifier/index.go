// Package verifier checks presented API keys against the APIKeys in a cluster, in memory and without
// access to Secrets: an index, fed by a watch on APIKeys, maps the SHA-256 of every current and previous key
// to what the verifier needs (owner, scopes, expiry, disabled state, rate limit). Other Go services can
// import it and verify in-process; cmd/verifier serves it over HTTP forward auth, a JSON API and Envoy
// ext_authz.
package verifier

import (
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
	CodeValid             Code = "VALID"
	CodeMalformed         Code = "MALFORMED"
	CodeNotFound          Code = "NOT_FOUND"
	CodeDisabled          Code = "DISABLED"
	CodeExpired           Code = "EXPIRED"
	CodeInsufficientScope Code = "INSUFFICIENT_SCOPE"
	CodeRateLimited       Code = "RATE_LIMITED"
)

// Codes lists every code, for metrics and documentation.
var Codes = []Code{CodeValid, CodeMalformed, CodeNotFound, CodeDisabled, CodeExpired, CodeInsufficientScope, CodeRateLimited}

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
}

// Valid reports whether the key is accepted.
func (r Result) Valid() bool { return r.Code == CodeValid }

// Index holds the keys of every APIKey it was given. It is safe for concurrent use.
type Index struct {
	mu     sync.RWMutex
	byHash map[keys.Digest]*keyRecord
	byName map[types.NamespacedName]*entry
}

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

// keyRecord is one accepted key.
type keyRecord struct {
	entry    *entry
	keyID    string
	notAfter time.Time
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byHash: map[keys.Digest]*keyRecord{}, byName: map[types.NamespacedName]*entry{}}
}

// Upsert records an APIKey's current state: its current key (from status.keyHash and status.expiresAt),
// its previous keys (until their validUntil), scopes, rate limit and disabled flag. Rate limit state and
// pending usage survive updates, so a status write does not reset a bucket.
func (ix *Index) Upsert(ak *keywardv1alpha1.APIKey) {
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
	}

	for _, h := range e.hashes {
		delete(ix.byHash, h)
	}
	e.hashes = e.hashes[:0]
	add := func(hash string, notAfter time.Time) {
		d, err := keys.ParseHash(hash)
		if err != nil || notAfter.IsZero() {
			return
		}
		ix.byHash[d] = &keyRecord{entry: e, keyID: d.ID(), notAfter: notAfter}
		e.hashes = append(e.hashes, d)
	}
	for _, p := range ak.Status.PreviousKeys {
		add(p.KeyHash, p.ValidUntil.Time)
	}
	if ak.Status.KeyHash != "" && ak.Status.ExpiresAt != nil {
		add(ak.Status.KeyHash, ak.Status.ExpiresAt.Time)
	}
}

// Delete forgets an APIKey: its keys are rejected from now on.
func (ix *Index) Delete(namespace, name string) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e := ix.byName[nn]; e != nil {
		for _, h := range e.hashes {
			delete(ix.byHash, h)
		}
		delete(ix.byName, nn)
	}
}

// Len returns how many keys (current and previous) the index accepts.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byHash)
}

// Verify checks a presented key at now, in this order: well-formed with a valid checksum (MALFORMED, without
// a lookup), known (NOT_FOUND), APIKey disabled (DISABLED), expired or past a previous key's validUntil
// (EXPIRED), scopes (INSUFFICIENT_SCOPE), rate limit (RATE_LIMITED, one bucket per APIKey shared by its
// current and previous keys). A VALID answer counts towards the APIKey's usage.
func (ix *Index) Verify(key string, requiredScopes []string, now time.Time) Result {
	if _, err := keys.Parse(key); err != nil {
		return Result{Code: CodeMalformed}
	}
	digest := keys.Sum(key)
	ix.mu.RLock()
	rec := ix.byHash[digest]
	if rec == nil {
		ix.mu.RUnlock()
		return Result{Code: CodeNotFound}
	}
	e := rec.entry
	res := Result{KeyID: rec.keyID, Namespace: e.namespace, Name: e.name, Scopes: e.scopeList,
		ScopesHeader: e.scopesHeader, ExpiresAt: rec.notAfter}
	disabled, scopes, limiter := e.disabled, e.scopes, e.limiter
	ix.mu.RUnlock()

	switch {
	case disabled:
		res.Code = CodeDisabled
	case !now.Before(rec.notAfter):
		res.Code = CodeExpired
	case !scopes.grantsAll(requiredScopes):
		res.Code = CodeInsufficientScope
	default:
		res.Code = CodeValid
		if limiter != nil {
			state := limiter.take(now)
			res.RateLimit = &state
			if !state.Allowed {
				res.Code = CodeRateLimited
			}
		}
	}
	if res.Code == CodeValid {
		e.requests.Add(1)
		e.lastUsed.Store(now.UnixNano())
	}
	return res
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

// tokenBucket refills continuously at limit/period up to limit tokens.
type tokenBucket struct {
	mu       sync.Mutex
	limit    int
	capacity float64
	perNano  float64
	tokens   float64
	last     time.Time
}

func newTokenBucket(rl *keywardv1alpha1.RateLimit) *tokenBucket {
	if rl == nil || rl.Requests <= 0 {
		return nil
	}
	p, err := period.Parse(string(rl.Period))
	if err != nil || p.Approx() <= 0 {
		return nil
	}
	c := float64(rl.Requests)
	return &tokenBucket{limit: int(rl.Requests), capacity: c, perNano: c / float64(p.Approx()), tokens: c}
}

func (b *tokenBucket) take(now time.Time) RateLimitState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		if elapsed := now.Sub(b.last); elapsed > 0 {
			b.tokens = min(b.capacity, b.tokens+float64(elapsed)*b.perNano)
		}
	}
	if now.After(b.last) {
		b.last = now
	}
	s := RateLimitState{Limit: b.limit}
	if b.tokens >= 1 {
		b.tokens--
		s.Allowed = true
	} else {
		s.RetryAfter = time.Duration((1 - b.tokens) / b.perNano)
	}
	s.Remaining = int(b.tokens)
	s.Reset = time.Duration((b.capacity - b.tokens) / b.perNano)
	return s
}
