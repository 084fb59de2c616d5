package guardrail

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func TestDurationsCompareByNumberInOneUnitAndConservativelyAcross(t *testing.T) {
	cases := []struct {
		value, bound string
		want         bool
	}{
		{"90d", "90d", true},
		{"91d", "90d", false},
		{"3mo", "3mo", true},
		{"3mo", "90d", false}, // three months may be 93 days
		{"12w", "90d", true},
		{"1y", "12mo", false}, // 366 days against 12 × 28
		{"60m", "1h", true},
		{"61m", "1h", false},
		{"bad", "1h", true}, // the CRD refuses it; nothing to judge
	}
	for _, tc := range cases {
		if got := notLonger(tc.value, tc.bound); got != tc.want {
			t.Errorf("notLonger(%s, %s) = %v, want %v", tc.value, tc.bound, got, tc.want)
		}
	}
}

func TestScopesFallUnderPatternsAsTheVerifierReadsThem(t *testing.T) {
	patterns := []keywardv1alpha1.Scope{"orders:*", "*:read", "calls:recording.download"}
	cases := map[string]bool{
		"orders:read": true, "orders:read:own": true, "orders:*": true, "reports:read": true, "*:read": true,
		"calls:recording.download": true, "calls:recordingXdownload": false, "*": false, "*:write": false,
		"reports:write": false, "orders": false,
	}
	for scope, want := range cases {
		if got := allowed(scope, patterns); got != want {
			t.Errorf("allowed(%q) = %v, want %v", scope, got, want)
		}
	}
	if !allowed("anything:at:all", []keywardv1alpha1.Scope{"*"}) {
		t.Error(`"*" does not allow everything`)
	}
}

func TestRatesCompareAsAverages(t *testing.T) {
	cases := []struct {
		rl   keywardv1alpha1.RateLimit
		want bool
	}{
		{keywardv1alpha1.RateLimit{Requests: 100, Period: "1m"}, false},
		{keywardv1alpha1.RateLimit{Requests: 101, Period: "1m"}, true},
		{keywardv1alpha1.RateLimit{Requests: 1, Period: "1s"}, false},
		{keywardv1alpha1.RateLimit{Requests: 2, Period: "1s"}, true},
		{keywardv1alpha1.RateLimit{Requests: 6000, Period: "1h"}, false},
	}
	for _, tc := range cases {
		if got := faster(tc.rl, 100, "1m"); got != tc.want {
			t.Errorf("faster(%d/%s, 100/1m) = %v, want %v", tc.rl.Requests, tc.rl.Period, got, tc.want)
		}
	}
}

func TestAnEmptyOrUnsetSelectorSelectsEveryNamespace(t *testing.T) {
	labels := map[string]string{"tier": "prod"}
	cases := []struct {
		name string
		sel  *keywardv1alpha1.PolicyNamespaceSelector
		want bool
	}{
		{"unset", nil, true},
		{"empty", &keywardv1alpha1.PolicyNamespaceSelector{}, true},
		{"matching label", &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"tier": "prod"}}, true},
		{"other value", &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"tier": "dev"}}, false},
		{"NotIn", &keywardv1alpha1.PolicyNamespaceSelector{MatchExpressions: []keywardv1alpha1.PolicyNamespaceRequirement{
			{Key: "tier", Operator: "NotIn", Values: []string{"prod"}}}}, false},
		{"DoesNotExist", &keywardv1alpha1.PolicyNamespaceSelector{MatchExpressions: []keywardv1alpha1.PolicyNamespaceRequirement{
			{Key: "team", Operator: "DoesNotExist"}}}, true},
	}
	for _, tc := range cases {
		if got := Selects(tc.sel, labels); got != tc.want {
			t.Errorf("%s: Selects = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAnApprovalIsRequiredForScopesUnderAnyPolicysPatternsAndSelfApprovalNeedsEveryAskingPolicy(t *testing.T) {
	pol := func(name string, self bool, patterns ...keywardv1alpha1.Scope) keywardv1alpha1.APIKeyPolicy {
		return keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: keywardv1alpha1.APIKeyPolicySpec{ApprovalRequiredScopes: patterns, AllowSelfApproval: self}}
	}
	spec := keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"orders:read", "payments:refund", "admin:users:write"}}
	for _, tc := range []struct {
		name     string
		policies []keywardv1alpha1.APIKeyPolicy
		scopes   []keywardv1alpha1.Scope
		asking   []string
		self     bool
	}{
		{name: "no policy asks", policies: []keywardv1alpha1.APIKeyPolicy{pol("a", true)}},
		{name: "a pattern matches", policies: []keywardv1alpha1.APIKeyPolicy{pol("a", false, "payments:*")},
			scopes: []keywardv1alpha1.Scope{"payments:refund"}, asking: []string{"a"}},
		{name: "scopes of two policies, in spec order", policies: []keywardv1alpha1.APIKeyPolicy{pol("a", true, "admin:*"), pol("b", true, "payments:refund")},
			scopes: []keywardv1alpha1.Scope{"payments:refund", "admin:users:write"}, asking: []string{"a", "b"}, self: true},
		{name: "one asking policy forbids self-approval", policies: []keywardv1alpha1.APIKeyPolicy{pol("a", true, "payments:*"), pol("b", false, "payments:refund")},
			scopes: []keywardv1alpha1.Scope{"payments:refund"}, asking: []string{"a", "b"}},
		{name: "a policy that does not ask has no say", policies: []keywardv1alpha1.APIKeyPolicy{pol("a", true, "payments:*"), pol("b", false, "billing:*")},
			scopes: []keywardv1alpha1.Scope{"payments:refund"}, asking: []string{"a"}, self: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ApprovalRequired(tc.policies, spec)
			if !slices.Equal(r.Scopes, tc.scopes) || !slices.Equal(r.Policies, tc.asking) || r.SelfApproval != tc.self || r.Needed() != (len(tc.scopes) > 0) {
				t.Errorf("ApprovalRequired = %+v; want scopes %v, policies %v, self-approval %v", r, tc.scopes, tc.asking, tc.self)
			}
		})
	}
}
