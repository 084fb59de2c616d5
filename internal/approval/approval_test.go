package approval

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func rate(n int32, p string) *keywardv1alpha1.RateLimit {
	return &keywardv1alpha1.RateLimit{Requests: n, Period: keywardv1alpha1.RatePeriod(p)}
}

func approvedFor(spec keywardv1alpha1.APIKeySpec) *keywardv1alpha1.ApprovalStatus {
	return &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob", Covers: Of(spec)}}
}

func TestCoversIsTheSpecsScopesAsASetValidityExpiryAndRateLimit(t *testing.T) {
	at := metav1.NewTime(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	spec := keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"b:read", "a:read"}, Validity: "30d", RateLimit: rate(10, "1s"),
		Description: "not covered"}
	d := &keywardv1alpha1.ApprovalDecision{Covers: Of(spec)}
	for name, tc := range map[string]struct {
		edit func(*keywardv1alpha1.APIKeySpec)
		want bool
	}{
		"the same spec":                {func(*keywardv1alpha1.APIKeySpec) {}, true},
		"scopes in another order":      {func(s *keywardv1alpha1.APIKeySpec) { s.Scopes = []keywardv1alpha1.Scope{"a:read", "b:read"} }, true},
		"a description changed":        {func(s *keywardv1alpha1.APIKeySpec) { s.Description = "other" }, true},
		"a scope added":                {func(s *keywardv1alpha1.APIKeySpec) { s.Scopes = append(s.Scopes, "c:read") }, false},
		"a scope dropped":              {func(s *keywardv1alpha1.APIKeySpec) { s.Scopes = s.Scopes[:1] }, false},
		"another validity":             {func(s *keywardv1alpha1.APIKeySpec) { s.Validity = "31d" }, false},
		"a fixed expiry instead":       {func(s *keywardv1alpha1.APIKeySpec) { s.Validity, s.ExpiresAt = "", &at }, false},
		"a faster rate limit":          {func(s *keywardv1alpha1.APIKeySpec) { s.RateLimit = rate(11, "1s") }, false},
		"no rate limit":                {func(s *keywardv1alpha1.APIKeySpec) { s.RateLimit = nil }, false},
		"the same rate in other units": {func(s *keywardv1alpha1.APIKeySpec) { s.RateLimit = rate(600, "1m") }, false},
	} {
		t.Run(name, func(t *testing.T) {
			s := *spec.DeepCopy()
			tc.edit(&s)
			if got := Covers(d, s); got != tc.want {
				t.Errorf("Covers = %v, want %v", got, tc.want)
			}
		})
	}
	if Covers(nil, spec) {
		t.Error("no decision covers a spec")
	}
}

func TestAKeyIsGrantedOnlyWhatBothTheSpecAndTheApprovalAllow(t *testing.T) {
	approved := keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"payments:refund", "orders:read"}, RateLimit: rate(10, "1s")}
	for name, tc := range map[string]struct {
		spec       keywardv1alpha1.APIKeySpec
		approval   *keywardv1alpha1.ApprovalStatus
		wantScopes []keywardv1alpha1.Scope
		wantRate   *keywardv1alpha1.RateLimit
	}{
		"no approval: the spec": {spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"x:y"}, RateLimit: rate(5, "1s")},
			wantScopes: []keywardv1alpha1.Scope{"x:y"}, wantRate: rate(5, "1s")},
		"only a denial: the spec": {spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"x:y"}},
			approval: &keywardv1alpha1.ApprovalStatus{Denied: &keywardv1alpha1.ApprovalDecision{By: "bob"}}, wantScopes: []keywardv1alpha1.Scope{"x:y"}},
		"the approved spec": {spec: approved, approval: approvedFor(approved), wantScopes: approved.Scopes, wantRate: rate(10, "1s")},
		"a scope added after the approval waits": {
			spec:     keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"payments:refund", "orders:read", "payments:payout"}, RateLimit: rate(10, "1s")},
			approval: approvedFor(approved), wantScopes: []keywardv1alpha1.Scope{"payments:refund", "orders:read"}, wantRate: rate(10, "1s")},
		"a scope dropped after the approval is gone at once": {
			spec:     keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"orders:read"}, RateLimit: rate(10, "1s")},
			approval: approvedFor(approved), wantScopes: []keywardv1alpha1.Scope{"orders:read"}, wantRate: rate(10, "1s")},
		"every scope dropped grants none": {spec: keywardv1alpha1.APIKeySpec{}, approval: approvedFor(approved),
			wantScopes: []keywardv1alpha1.Scope{}, wantRate: rate(10, "1s")},
		"a faster rate limit waits": {spec: keywardv1alpha1.APIKeySpec{Scopes: approved.Scopes, RateLimit: rate(1000, "1m")},
			approval: approvedFor(approved), wantScopes: approved.Scopes, wantRate: rate(10, "1s")},
		"no rate limit keeps the approved one": {spec: keywardv1alpha1.APIKeySpec{Scopes: approved.Scopes},
			approval: approvedFor(approved), wantScopes: approved.Scopes, wantRate: rate(10, "1s")},
		"a slower rate limit is in effect at once": {spec: keywardv1alpha1.APIKeySpec{Scopes: approved.Scopes, RateLimit: rate(60, "1m")},
			approval: approvedFor(approved), wantScopes: approved.Scopes, wantRate: rate(60, "1m")},
	} {
		t.Run(name, func(t *testing.T) {
			g := Granted(&keywardv1alpha1.APIKey{Spec: tc.spec, Status: keywardv1alpha1.APIKeyStatus{Approval: tc.approval}})
			if !slices.Equal(g.Scopes, tc.wantScopes) || (g.Scopes == nil) != (tc.wantScopes == nil) {
				t.Errorf("scopes %q, want %q", g.Scopes, tc.wantScopes)
			}
			if !sameRate(g.RateLimit, tc.wantRate) {
				t.Errorf("rate limit %+v, want %+v", g.RateLimit, tc.wantRate)
			}
		})
	}
}

func TestApplyPutsBackWhatTheApprovalCovers(t *testing.T) {
	approved := keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"a:b"}, Validity: "30d", RateLimit: rate(1, "1s")}
	changed := keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"a:b", "c:d"}, Validity: "1y", Description: "kept", Prefix: "pay"}
	got := Apply(changed, approvedFor(approved).Approved)
	if !Covers(approvedFor(approved).Approved, got) || got.Description != "kept" || got.Prefix != "pay" {
		t.Errorf("Apply = %+v; want the approved scopes, validity and rate limit and the rest of the spec", got)
	}
	if !slices.Equal(Apply(changed, nil).Scopes, changed.Scopes) {
		t.Error("Apply without an approval changed the spec")
	}
}
