// Package verifier checks presented API keys against the APIKeys in a cluster, in memory and without
// access to Secrets: an index maps the SHA-256 of every current and previous key to what a verification
// needs (owner, scopes, expiry, disabled state, rate limit). It is the small core other Go services import
// to verify in-process: the index, Verify and its Result, route requirements, scopes and the local rate
// limit bucket, with no servers, caches or stores. pkg/verifier/serve feeds it from a watch on APIKeys and
// serves it over HTTP forward auth, a JSON API and Envoy ext_authz (cmd/verifier).
package verifier

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/approval"
	"github.com/keyward-dev/keyward/internal/keys"
)

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
	// betweenDrainBatches, when set (tests), runs after each batch of a drain, with the lock released.
	betweenDrainBatches func()
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

// NamespaceListFailed records that the trusted namespaces could not be listed: until a list succeeds no
// namespace is trusted, since a namespace whose label was removed must not stay trusted because the list
// that would have dropped it failed.
func (ix *Index) NamespaceListFailed(err error) {
	ix.namespaceListErrors.Add(1)
	ix.log.Error(err, "Listing the trusted namespaces failed; no namespace is trusted until a list succeeds")
	ix.TrustNamespaces([]string{})
}

// PeerCountFailed records that the replicas sharing the load could not be counted; the last count stands.
func (ix *Index) PeerCountFailed(err error) {
	ix.peerListErrors.Add(1)
	ix.log.Error(err, "Counting the verifier's replicas failed; the last count stands")
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

	// uses counts the answers for each key since the last flush, kept across updates by digest (the APIKey's
	// requests and last use are their sums); retired holds the counts of keys an update removed, until they
	// are drained.
	uses, retired []*keyUse
}

// rejectionCodes are the refusals counted per key besides RATE_LIMITED: those of a key the index knows.
var rejectionCodes = [...]Code{CodeDisabled, CodeExpired, CodeInvalidRequest, CodeWrongNamespace, CodeInsufficientScope}

// keyUse counts what the verifier answered for one key since the last drain.
type keyUse struct {
	digest                       keys.Digest
	valid, rateLimited, lastUsed atomic.Int64 // lastUsed in Unix nanoseconds
	rejected                     [len(rejectionCodes)]atomic.Int64
}

func (u *keyUse) count(c Code, now time.Time) {
	switch c {
	case CodeValid:
		u.valid.Add(1)
		u.lastUsed.Store(now.UnixNano())
	case CodeRateLimited:
		u.rateLimited.Add(1)
	default:
		for i, rc := range rejectionCodes {
			if rc == c {
				u.rejected[i].Add(1)
				return
			}
		}
	}
}

// keyRecord is one accepted key. Records whose digests share their first 8 bytes form a chain; when several
// APIKeys claim the same full digest the index fails closed for that key until only one claims it.
type keyRecord struct {
	digest   keys.Digest
	entry    *entry
	keyID    string
	notAfter time.Time
	use      *keyUse
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
	// An approval narrows what the spec asks for until a new one covers a change (internal/approval).
	grant := approval.Granted(ak)
	e.scopesHeader, e.scopeList = scopesOf(grant.Scopes)
	e.scopes = newScopeSet(e.scopeList)
	var rl keywardv1alpha1.RateLimit
	if grant.RateLimit != nil {
		rl = *grant.RateLimit
	}
	if rl != e.rateLimit || (e.limiter == nil) != (grant.RateLimit == nil) {
		e.rateLimit = rl
		e.limiter = newTokenBucket(grant.RateLimit)
		if e.limiter != nil && e.limiter.closed {
			ix.invalidRateLimits.Add(1)
			ix.log.Info("spec.rateLimit cannot be read; the APIKey's keys are answered RATE_LIMITED until it is fixed",
				"namespace", ak.Namespace, "name", ak.Name, "period", string(rl.Period))
		}
	}

	ix.unlinkLocked(e)
	before := e.uses
	e.uses = nil
	add := func(hash string, notAfter time.Time) {
		d, err := keys.ParseHash(hash)
		if err != nil || notAfter.IsZero() {
			return
		}
		use := takeUse(&before, d)
		e.uses = append(e.uses, use)
		slot := slotOf(d)
		ix.byHash[slot] = &keyRecord{digest: d, entry: e, keyID: d.ID(), notAfter: notAfter, use: use, next: ix.byHash[slot]}
		e.hashes = append(e.hashes, d)
	}
	for _, p := range ak.Status.PreviousKeys {
		add(p.KeyHash, p.ValidUntil.Time)
	}
	if ak.Status.KeyHash != "" && ak.Status.ExpiresAt != nil {
		add(ak.Status.KeyHash, ak.Status.ExpiresAt.Time)
	}
	e.retired = append(e.retired, before...) // counted until they are drained
}

// takeUse removes and returns the counts of digest d from uses, or new ones.
func takeUse(uses *[]*keyUse, d keys.Digest) *keyUse {
	for i, u := range *uses {
		if u.digest == d {
			*uses = append((*uses)[:i], (*uses)[i+1:]...)
			return u
		}
	}
	return &keyUse{digest: d}
}

// unlinkLocked removes e's records from every chain, leaving other APIKeys' records of the same hashes.
func (ix *Index) unlinkLocked(e *entry) {
	for _, h := range e.hashes {
		slot := slotOf(h)
		var kept *keyRecord
		for r := ix.byHash[slot]; r != nil; r = r.next {
			if r.entry != e {
				kept = &keyRecord{digest: r.digest, entry: r.entry, keyID: r.keyID, notAfter: r.notAfter, use: r.use, next: kept}
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
	rec.use.count(res.Code, now)
	return res
}

// scopesOf returns an APIKey's granted scopes as the X-Keyward-Scopes header carries them (comma-separated)
// and as a list whose strings are parts of that header, so that the index holds an APIKey's scopes once.
// An element of spec.scopes that holds commas is read as a list of scopes: the verifier's cache stores an
// APIKey's scopes so (serve.TrimAPIKey), already joined, and the CRD allows no comma within a scope.
func scopesOf(granted []keywardv1alpha1.Scope) (header string, list []string) {
	if len(granted) == 1 {
		header = string(granted[0])
	} else {
		parts := make([]string, len(granted))
		for i, g := range granted {
			parts[i] = string(g)
		}
		header = joinComma(parts)
	}
	list = make([]string, 0, strings.Count(header, ",")+1)
	for part := range strings.SplitSeq(header, ",") {
		if part != "" {
			list = append(list, part)
		}
	}
	return header, list
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

// Owner is an APIKey that holds a key, and that key's ID.
type Owner struct {
	Namespace, Name, KeyID string
}

// Owners returns the APIKeys, in trusted namespaces, whose current or previous key key is, whatever its
// expiry: what a report of a leaked key names. A string that is not a Keyward key (shape and checksum)
// names none, without a lookup.
func (ix *Index) Owners(key string) []Owner {
	if _, err := keys.Parse(key); err != nil {
		return nil
	}
	d := keys.Sum(key)
	trusted := ix.trusted.Load()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []Owner
	for r := ix.byHash[slotOf(d)]; r != nil; r = r.next {
		if r.digest != d {
			continue
		}
		if trusted != nil {
			if _, ok := (*trusted)[r.entry.namespace]; !ok {
				continue
			}
		}
		out = append(out, Owner{Namespace: r.entry.namespace, Name: r.entry.name, KeyID: r.keyID})
	}
	return out
}
