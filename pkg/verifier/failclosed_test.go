package verifier

import (
	"testing"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func TestARateLimitThatCannotBeReadRefusesInsteadOfTurningLimitsOff(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("billing", "orders", key, t0.Add(time.Hour), nil, func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 100, Period: "fortnightly"} // accepted by an older CRD
	}))
	if got := ix.Verify(key, nil, t0); got.Code != CodeRateLimited {
		t.Errorf("a key whose limit cannot be read: %s, want RATE_LIMITED", got.Code)
	}
	if n := ix.Failures().InvalidRateLimits; n != 1 {
		t.Errorf("InvalidRateLimits = %d, want 1", n)
	}
}
