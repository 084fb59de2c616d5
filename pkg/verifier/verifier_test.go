package verifier

import (
	"fmt"
	"strings"
	"testing"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/verifiertest"
)

// The fixtures of internal/verifiertest, by the names these tests use.
var (
	t0         = verifiertest.T0
	mintKey    = verifiertest.MintKey
	apiKey     = verifiertest.APIKey
	withScopes = verifiertest.WithScopes
)

func TestVerifyChecksInTheDocumentedOrder(t *testing.T) {
	current, previous, stranger := mintKey(t, "ord"), mintKey(t, "ord"), mintKey(t, "ord")
	expires := t0.Add(24 * time.Hour)
	prevUntil := t0.Add(time.Hour)
	build := func(mutate ...func(*keywardv1alpha1.APIKey)) *Index {
		ix := NewIndex()
		ix.Upsert(apiKey("billing", "orders", current, expires, map[string]time.Time{previous: prevUntil}, mutate...))
		return ix
	}
	disabled := func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true }
	limited := func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 1, Period: "1m"}
	}
	cases := []struct {
		name   string
		ix     *Index
		key    string
		scopes []string
		now    time.Time
		want   Code
	}{
		{"current key", build(withScopes("orders:read")), current, []string{"orders:read"}, t0, CodeValid},
		{"previous key before its validUntil", build(), previous, nil, prevUntil.Add(-time.Second), CodeValid},
		{"previous key at its validUntil", build(), previous, nil, prevUntil, CodeExpired},
		{"current key at its expiry", build(), current, nil, expires, CodeExpired},
		{"garbage", build(), "hello", nil, t0, CodeMalformed},
		{"bad checksum", build(), current[:len(current)-1] + flipChar(current[len(current)-1]), nil, t0, CodeMalformed},
		{"valid format, unknown", build(), stranger, nil, t0, CodeNotFound},
		{"disabled wins over expired", build(disabled), current, nil, expires.Add(time.Hour), CodeDisabled},
		{"disabled applies to previous keys", build(disabled), previous, nil, t0, CodeDisabled},
		{"expired wins over scope", build(), current, []string{"orders:write"}, expires, CodeExpired},
		{"missing scope", build(withScopes("orders:read")), current, []string{"orders:write"}, t0, CodeInsufficientScope},
		{"no scopes grant nothing", build(), current, []string{"orders:read"}, t0, CodeInsufficientScope},
		{"scope wins over rate limit", build(limited), current, []string{"x"}, t0, CodeInsufficientScope},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.ix.Verify(tc.key, tc.scopes, tc.now)
			if got.Code != tc.want {
				t.Fatalf("Verify = %s, want %s", got.Code, tc.want)
			}
			if tc.want != CodeMalformed && tc.want != CodeNotFound && (got.Name != "orders" || got.Namespace != "billing" || got.KeyID != keys.Sum(tc.key).ID()) {
				t.Errorf("result does not identify the key: %+v", got)
			}
		})
	}
}

func flipChar(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestScopeWildcards(t *testing.T) {
	cases := []struct {
		granted  []string
		required string
		want     bool
	}{
		{[]string{"*"}, "anything:at:all", true},
		{[]string{"orders:*"}, "orders:read", true},
		{[]string{"orders:*"}, "orders:read:own", true},
		{[]string{"orders:*"}, "orders", false},
		{[]string{"orders:*"}, "invoices:read", false},
		{[]string{"*:read"}, "orders:read", true},
		{[]string{"*:read"}, "orders:write", false},
		{[]string{"*:read"}, "orders:read:own", false},
		{[]string{"orders:read"}, "orders:read", true},
		{[]string{"orders:read"}, "orders:readx", false},
		{[]string{"orders:*:own"}, "orders:read:own", true},
		{[]string{"orders:*:own"}, "orders:read:all", false},
		{nil, "orders:read", false},
	}
	for _, tc := range cases {
		if got := newScopeSet(tc.granted).grants(tc.required); got != tc.want {
			t.Errorf("%v grants %q = %v, want %v", tc.granted, tc.required, got, tc.want)
		}
	}
}

func TestRateLimitIsSharedByCurrentAndPreviousKeysAndRefills(t *testing.T) {
	current, previous := mintKey(t, "kw"), mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("ns", "limited", current, t0.Add(24*time.Hour), map[string]time.Time{previous: t0.Add(time.Hour)},
		func(ak *keywardv1alpha1.APIKey) {
			ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 2, Period: "1m"}
		}))

	if r := ix.Verify(current, nil, t0); r.Code != CodeValid || r.RateLimit.Remaining != 1 || r.RateLimit.Limit != 2 {
		t.Fatalf("first: %+v %+v", r.Code, r.RateLimit)
	}
	if r := ix.Verify(previous, nil, t0); r.Code != CodeValid || r.RateLimit.Remaining != 0 {
		t.Fatalf("second, with the previous key: %+v %+v", r.Code, r.RateLimit)
	}
	r := ix.Verify(current, nil, t0)
	if r.Code != CodeRateLimited || r.RateLimit.RetryAfter != 30*time.Second {
		t.Fatalf("third: %s, retry after %v; want RATE_LIMITED after 30s (2 per minute)", r.Code, r.RateLimit.RetryAfter)
	}
	if r := ix.Verify(current, nil, t0.Add(30*time.Second)); r.Code != CodeValid {
		t.Errorf("after 30s one token is back: %s", r.Code)
	}
	// A status update (say, the usage flush) must not refill the bucket.
	ix.Upsert(apiKey("ns", "limited", current, t0.Add(24*time.Hour), nil,
		func(ak *keywardv1alpha1.APIKey) {
			ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 2, Period: "1m"}
		}))
	if r := ix.Verify(current, nil, t0.Add(30*time.Second)); r.Code != CodeRateLimited {
		t.Errorf("an update refilled the bucket: %s", r.Code)
	}
}

func TestUpdatesAndDeletesChangeAnswersAtOnce(t *testing.T) {
	k1, k2 := mintKey(t, "kw"), mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("ns", "a", k1, t0.Add(time.Hour), nil))
	if ix.Verify(k1, nil, t0).Code != CodeValid {
		t.Fatal("k1 not valid")
	}
	ix.Upsert(apiKey("ns", "a", k2, t0.Add(time.Hour), nil)) // rotated with a zero grace period
	if got := ix.Verify(k1, nil, t0).Code; got != CodeNotFound {
		t.Errorf("replaced key without grace: %s", got)
	}
	if ix.Verify(k2, nil, t0).Code != CodeValid || ix.Len() != 1 {
		t.Errorf("new key not valid or stale entries left (%d keys)", ix.Len())
	}
	ix.Delete("ns", "a")
	if got := ix.Verify(k2, nil, t0).Code; got != CodeNotFound || ix.Len() != 0 {
		t.Errorf("after delete: %s, %d keys", got, ix.Len())
	}
}

func TestUsageCountsValidVerificationsAndDrains(t *testing.T) {
	k := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("ns", "a", k, t0.Add(time.Hour), nil))
	ix.Upsert(apiKey("ns", "unused", mintKey(t, "kw"), t0.Add(time.Hour), nil))
	for i := range 3 {
		ix.Verify(k, nil, t0.Add(time.Duration(i)*time.Second))
	}
	ix.Verify(k, []string{"nope"}, t0.Add(time.Minute)) // denied: not counted
	u := ix.DrainUsage()
	if len(u) != 1 || u[0].Name != "a" || u[0].Requests != 3 || !u[0].LastUsed.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("usage %+v", u)
	}
	if again := ix.DrainUsage(); len(again) != 0 {
		t.Errorf("drained twice: %+v", again)
	}
	ix.RestoreUsage(u[0])
	if again := ix.DrainUsage(); len(again) != 1 || again[0].Requests != 3 {
		t.Errorf("restored usage: %+v", again)
	}
}

func TestRequirementsListsSaysWhatVerifyReads(t *testing.T) {
	req := Requirements{Scopes: []string{"orders:read, orders:write", " "}, Namespaces: []string{"billing,shop"},
		Query: "scope=invoices:read&namespace=billing&other=x&scopes=a%3Ab"}
	scopes, namespaces := req.Lists()
	if got := strings.Join(scopes, " "); got != "orders:read orders:write invoices:read a:b" {
		t.Errorf("scopes %q", got)
	}
	if got := strings.Join(namespaces, " | "); got != "billing,shop | billing" {
		t.Errorf("namespaces %q", got)
	}
	many := Requirements{Scopes: []string{strings.Repeat("s,", 100)}, Namespaces: []string{strings.Repeat("n,", 100)}}
	if s, n := many.Lists(); len(s) != MaxRequiredScopes || len(n) != 1 || strings.Count(n[0], ",") != MaxRequiredNamespaces-1 {
		t.Errorf("over the caps: %d scopes, namespaces %q", len(s), n)
	}
}

func TestUsagePerKeySurvivesStatusUpdatesAndARemovedKeyIsReportedOnce(t *testing.T) {
	current, previous := mintKey(t, "ord"), mintKey(t, "ord")
	expires, until := t0.Add(24*time.Hour), t0.Add(time.Hour)
	ix := NewIndex()
	ix.Upsert(apiKey("billing", "orders", current, expires, map[string]time.Time{previous: until}, withScopes("orders:read")))
	ix.Verify(current, nil, t0)
	ix.Verify(previous, []string{"orders:write"}, t0)
	// A status write (the usage report, a condition) between the uses and the drain keeps the counts.
	ix.Upsert(apiKey("billing", "orders", current, expires, map[string]time.Time{previous: until}, withScopes("orders:read")))
	ix.Verify(current, nil, t0.Add(time.Second))
	// The previous key is revoked after it was used: its count is still reported, once.
	ix.Verify(previous, nil, t0)
	ix.Upsert(apiKey("billing", "orders", current, expires, nil, withScopes("orders:read")))
	if got := ix.Verify(mintKey(t, "ord"), nil, t0).Code; got != CodeNotFound {
		t.Fatalf("an unknown key: %s", got)
	}

	byID := func(us []Usage) map[string]KeyUse {
		out := map[string]KeyUse{}
		for _, u := range us {
			for _, k := range u.Keys {
				out[k.KeyID] = k
			}
		}
		return out
	}
	drained := ix.DrainUsage()
	got := byID(drained)
	cur, prev := got[keys.IDFromHash(keys.Hash(current))], got[keys.IDFromHash(keys.Hash(previous))]
	if len(got) != 2 || cur.Valid != 2 || !cur.LastUsed.Equal(t0.Add(time.Second)) || prev.Valid != 1 || prev.Rejected[CodeInsufficientScope] != 1 {
		t.Errorf("drained %+v", drained)
	}
	if len(drained) != 1 || drained[0].Requests != 3 {
		t.Errorf("per APIKey: %+v; want 3 requests", drained)
	}
	if again := ix.DrainUsage(); len(again) != 0 {
		t.Errorf("a second drain reports %+v", again)
	}
	ix.RestoreUsage(drained[0])
	if back := byID(ix.DrainUsage()); back[cur.KeyID].Valid != 2 || len(back) != 1 {
		t.Errorf("restored %+v; want the current key's counts back, the removed key's dropped", back)
	}
}

// A drain holds the index's lock a batch at a time: between two batches a verification (or an update) can
// take it, so a drain of a large index never stops verification for its whole length, and no use is lost.
func TestADrainReleasesTheIndexBetweenBatches(t *testing.T) {
	ix := NewIndex()
	victim := mintKey(t, "kw")
	ix.Upsert(apiKey("victim", "other", victim, t0.Add(time.Hour), nil))
	for i := range 3 * drainBatch {
		k := mintKey(t, "kw")
		ix.Upsert(apiKey("crowded", fmt.Sprintf("key-%04d", i), k, t0.Add(time.Hour), nil))
		ix.Verify(k, nil, t0)
	}
	batches, verified := 0, 0
	ix.betweenDrainBatches = func() {
		batches++
		if !ix.mu.TryLock() {
			t.Error("the index is still locked between two batches")
			return
		}
		ix.mu.Unlock()
		if ix.Verify(victim, nil, t0).Code == CodeValid {
			verified++
		}
	}
	crowded, victimUses := 0, int64(0)
	for drain := range 2 { // a use made during a drain is reported by it or by the next one
		for _, u := range ix.DrainUsage() {
			if u.Namespace == "crowded" {
				crowded++
			} else {
				victimUses += u.Requests
			}
		}
		if drain == 0 {
			ix.betweenDrainBatches = nil
		}
	}
	if batches < 4 || verified != batches {
		t.Errorf("%d batches, %d verifications between them", batches, verified)
	}
	if crowded != 3*drainBatch || victimUses != int64(verified) {
		t.Errorf("drained %d crowded APIKeys (want %d) and %d of the victim's %d uses", crowded, 3*drainBatch, victimUses, verified)
	}
}

// A change of an approved APIKey's scopes or rate limit waits for its approval at the verifier itself: the
// key gets only the approved scopes and the slower rate, whether the index reads the APIKey as the watch
// trims it or whole, and a scope dropped from the spec is gone at once.
func TestAKeyGetsOnlyWhatItsApprovalCoversWhileAChangeWaits(t *testing.T) {
	current := mintKey(t, "pay")
	approved := func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Scopes = []keywardv1alpha1.Scope{"payments:refund", "orders:read", "payments:payout"} // payout added since
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 1000, Period: "1s"}                  // and a faster rate
		ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob",
			Covers: keywardv1alpha1.ApprovedSpec{Scopes: []keywardv1alpha1.Scope{"orders:read", "payments:refund"},
				RateLimit: &keywardv1alpha1.RateLimit{Requests: 1, Period: "1m"}}}}
	}
	ix := NewIndex()
	ix.Upsert(apiKey("billing", "refunds", current, t0.Add(24*time.Hour), nil, approved))
	for _, tc := range []struct {
		scopes []string
		want   Code
	}{
		{[]string{"payments:refund"}, CodeValid},
		{[]string{"payments:payout"}, CodeInsufficientScope},
		{[]string{"orders:read"}, CodeRateLimited}, // the approved 1/1m, not the spec's 1000/1s
	} {
		if got := ix.Verify(current, tc.scopes, t0); got.Code != tc.want {
			t.Errorf("Verify(%v) = %s, want %s", tc.scopes, got.Code, tc.want)
		}
	}
	dropped := NewIndex()
	dropped.Upsert(apiKey("billing", "refunds", current, t0.Add(24*time.Hour), nil, approved, func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Scopes = []keywardv1alpha1.Scope{"orders:read"}
	}))
	if got := dropped.Verify(current, []string{"payments:refund"}, t0); got.Code != CodeInsufficientScope {
		t.Errorf("a scope dropped from the spec: %s, want %s", got.Code, CodeInsufficientScope)
	}
}
