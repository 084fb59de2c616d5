// Package approval is what an approval of an APIKey covers and what the key may do because of it: the one
// reading of status.approval that the manager (whether a change waits), the verifier (what a key is granted)
// and the plugin (what `kubectl keyward approve` writes) share.
//
// An approval covers the spec's scopes, validity, expiresAt and rate limit as they were when it was given.
// While the spec asks for more than that, the verifier grants a key no scope outside the approved ones and no
// faster rate than the approved one, whatever the spec says: a change needs no help from the manager to wait.
package approval

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/period"
)

// Of is what an approval of spec covers: its scopes (sorted, as a set), validity, expiresAt and rate limit.
func Of(spec keywardv1alpha1.APIKeySpec) keywardv1alpha1.ApprovedSpec {
	out := keywardv1alpha1.ApprovedSpec{Validity: spec.Validity}
	if len(spec.Scopes) > 0 {
		out.Scopes = slices.Sorted(slices.Values(spec.Scopes))
		out.Scopes = slices.Compact(out.Scopes)
	}
	if spec.ExpiresAt != nil {
		out.ExpiresAt = spec.ExpiresAt.DeepCopy()
	}
	if spec.RateLimit != nil {
		rl := *spec.RateLimit
		out.RateLimit = &rl
	}
	return out
}

// Covers reports whether decision d is about spec as it is now: the same scopes (as a set), validity,
// expiresAt and rate limit. A nil decision covers nothing.
func Covers(d *keywardv1alpha1.ApprovalDecision, spec keywardv1alpha1.APIKeySpec) bool {
	if d == nil {
		return false
	}
	want, got := Of(spec), Of(keywardv1alpha1.APIKeySpec{Scopes: d.Covers.Scopes, Validity: d.Covers.Validity,
		ExpiresAt: d.Covers.ExpiresAt, RateLimit: d.Covers.RateLimit})
	return slices.Equal(want.Scopes, got.Scopes) && want.Validity == got.Validity &&
		sameTime(want.ExpiresAt, got.ExpiresAt) && sameRate(want.RateLimit, got.RateLimit)
}

// Grant is what an APIKey's keys may do: its scopes and rate limit.
type Grant struct {
	Scopes    []keywardv1alpha1.Scope
	RateLimit *keywardv1alpha1.RateLimit
}

// Granted is what the verifier lets ak's keys do: the spec's scopes and rate limit, narrowed to what
// status.approval.approved covers when there is an approval. A scope the spec adds after the approval is not
// granted until a new approval covers it; a scope the spec drops is gone at once. Of the two rate limits the
// slower one applies (a spec without one, after an approval with one, keeps the approved one).
func Granted(ak *keywardv1alpha1.APIKey) Grant {
	g := Grant{Scopes: ak.Spec.Scopes, RateLimit: ak.Spec.RateLimit}
	a := ak.Status.Approval
	if a == nil || a.Approved == nil {
		return g
	}
	approved := a.Approved.Covers
	g.Scopes = nil
	for _, s := range ak.Spec.Scopes {
		if slices.Contains(approved.Scopes, s) {
			g.Scopes = append(g.Scopes, s)
		}
	}
	if g.Scopes == nil {
		g.Scopes = []keywardv1alpha1.Scope{} // an empty list grants no scope, as in the spec
	}
	g.RateLimit = Slower(ak.Spec.RateLimit, approved.RateLimit)
	return g
}

// Slower is the rate limit of a and b that allows fewer requests per second on average (nil: no limit). A
// period that does not parse (the CRD refuses those) counts as the slowest, so it is kept and the verifier
// answers RATE_LIMITED as it does for the spec's.
func Slower(a, b *keywardv1alpha1.RateLimit) *keywardv1alpha1.RateLimit {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	ap, errA := period.Parse(string(a.Period))
	bp, errB := period.Parse(string(b.Period))
	switch {
	case errA != nil:
		return a
	case errB != nil:
		return b
	}
	// a.Requests/a's seconds versus b.Requests/b's seconds, without division.
	if int64(a.Requests)*int64(bp.Approx().Seconds()) <= int64(b.Requests)*int64(ap.Approx().Seconds()) {
		return a
	}
	return b
}

// Apply is spec with what a waiting change asks for put back to what the approval approved covers: the key
// the manager mints while the change waits (a renewal, a recreated Secret) is one the approval covers.
func Apply(spec keywardv1alpha1.APIKeySpec, approved *keywardv1alpha1.ApprovalDecision) keywardv1alpha1.APIKeySpec {
	if approved == nil {
		return spec
	}
	c := approved.Covers
	spec.Scopes, spec.Validity, spec.ExpiresAt, spec.RateLimit = c.Scopes, c.Validity, c.ExpiresAt, c.RateLimit
	return spec
}

func sameTime(a, b *metav1.Time) bool {
	return a.Equal(b) // nil-safe; the API server keeps whole seconds
}

func sameRate(a, b *keywardv1alpha1.RateLimit) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}
