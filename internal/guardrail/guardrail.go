// Package guardrail judges an APIKey's spec against the APIKeyPolicies that select its namespace, as the
// admission policy keyward-apikey-policies does at apply time, for what admission cannot see: APIKeys that
// were created before a policy they break. The rules are those of config/access/apikey_policies_policy.yaml,
// written in Go; a test in api/v1alpha1 runs both on the same cases and fails when they disagree.
package guardrail

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/period"
)

// Violation is one way an APIKey breaks one policy.
type Violation struct {
	// Policy is the APIKeyPolicy's name; Field the spec field, as the admission message names it.
	Policy string
	Field  string
	// Message says what is wrong, in the admission policy's words, without the policy's name.
	Message string
}

// String is the violation as the admission policy words it.
func (v Violation) String() string { return "APIKeyPolicy " + v.Policy + ": " + v.Message }

// Selects is whether sel selects a namespace with these labels: unset or empty selects every namespace. A
// selector that does not parse (the CRD refuses those) selects none.
func Selects(sel *keywardv1alpha1.PolicyNamespaceSelector, nsLabels map[string]string) bool {
	if sel == nil {
		return true
	}
	ls := &metav1.LabelSelector{MatchLabels: sel.MatchLabels}
	for _, e := range sel.MatchExpressions {
		ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: e.Key, Operator: e.Operator, Values: e.Values})
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(nsLabels))
}

// Applying is the policies among all that select a namespace with these labels, in name order.
func Applying(all []keywardv1alpha1.APIKeyPolicy, nsLabels map[string]string) []keywardv1alpha1.APIKeyPolicy {
	var out []keywardv1alpha1.APIKeyPolicy
	for _, p := range all {
		if Selects(p.Spec.NamespaceSelector, nsLabels) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b keywardv1alpha1.APIKeyPolicy) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Check is every way spec, of an APIKey created at created, breaks the policies, in their order and the
// admission policy's order of rules.
func Check(policies []keywardv1alpha1.APIKeyPolicy, spec keywardv1alpha1.APIKeySpec, created time.Time) []Violation {
	var out []Violation
	for _, p := range policies {
		out = append(out, check(p, spec, created)...)
	}
	return out
}

// Long and short are a unit's length when it is the bounded value (months 31 days, years 366) and when it is
// the bound (28 and 365), so that no calendar date lets a value through that is longer than its bound.
var (
	long  = map[period.Unit]int64{period.Second: 1, period.Minute: 60, period.Hour: 3600, period.Day: 86400, period.Week: 604800, period.Month: 2678400, period.Year: 31622400}
	short = map[period.Unit]int64{period.Second: 1, period.Minute: 60, period.Hour: 3600, period.Day: 86400, period.Week: 604800, period.Month: 2419200, period.Year: 31536000}
)

// notLonger is whether value is at most bound, as the admission policy compares durations. A value or bound
// that does not parse (the CRD refuses those) passes, as the admission policy cannot judge it either.
func notLonger(value, bound string) bool {
	v, err1 := period.Parse(value)
	b, err2 := period.Parse(bound)
	if err1 != nil || err2 != nil {
		return true
	}
	if v.Unit == b.Unit {
		return v.N <= b.N
	}
	return int64(v.N)*long[v.Unit] <= int64(b.N)*short[b.Unit]
}

func check(p keywardv1alpha1.APIKeyPolicy, spec keywardv1alpha1.APIKeySpec, created time.Time) []Violation {
	var out []Violation
	add := func(field, format string, args ...any) {
		out = append(out, Violation{Policy: p.Name, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	s := p.Spec
	if s.MaxValidity != "" {
		validity := string(spec.Validity)
		if validity == "" {
			validity = "90d"
		}
		if spec.ExpiresAt == nil && !notLonger(validity, string(s.MaxValidity)) {
			add("spec.validity", "spec.validity %s is longer than the policy allows (maxValidity %s)", validity, s.MaxValidity)
		}
		if b, err := period.Parse(string(s.MaxValidity)); spec.ExpiresAt != nil && err == nil && !created.IsZero() &&
			spec.ExpiresAt.After(created.Add(time.Duration(int64(b.N)*short[b.Unit])*time.Second)) {
			add("spec.expiresAt", "spec.expiresAt %s is more than %s after the APIKey was created (maxValidity)",
				spec.ExpiresAt.UTC().Format(time.RFC3339), s.MaxValidity)
		}
	}
	if s.RequireAutoRotation {
		switch {
		case spec.ExpiresAt != nil:
			add("spec.expiresAt", "spec.expiresAt: a fixed expiry is never renewed, and the policy requires automatic rotation (requireAutoRotation); use validity with rotation policy Auto")
		case spec.Rotation != nil && spec.Rotation.Policy == keywardv1alpha1.RotationPolicyDisabled:
			add("spec.rotation.policy", "spec.rotation.policy: Disabled is never renewed, and the policy requires automatic rotation (requireAutoRotation); use validity with rotation policy Auto")
		}
	}
	if s.MaxGracePeriod != "" {
		grace := "1h"
		if spec.Rotation != nil && spec.Rotation.GracePeriod != "" {
			grace = string(spec.Rotation.GracePeriod)
		}
		if !notLonger(grace, string(s.MaxGracePeriod)) {
			add("spec.rotation.gracePeriod", "spec.rotation.gracePeriod %s is longer than the policy allows (maxGracePeriod %s)", grace, s.MaxGracePeriod)
		}
	}
	if s.AllowedScopes != nil {
		for i, sc := range spec.Scopes {
			if !allowed(string(sc), s.AllowedScopes) {
				add(fmt.Sprintf("spec.scopes[%d]", i), "spec.scopes[%d]: scope %q is not among the scopes the policy allows (allowedScopes: %s)",
					i, sc, joinScopes(s.AllowedScopes))
			}
		}
	}
	if r := s.MaxRateLimit; r != nil {
		switch {
		case spec.RateLimit == nil && r.Required:
			add("spec.rateLimit", "spec.rateLimit is required (maxRateLimit.required)")
		case spec.RateLimit != nil && r.Requests > 0 && faster(*spec.RateLimit, r.Requests, string(r.Period)):
			add("spec.rateLimit", "spec.rateLimit %d/%s allows more than the policy (maxRateLimit %d/%s)",
				spec.RateLimit.Requests, spec.RateLimit.Period, r.Requests, r.Period)
		}
	}
	if s.AllowedPrefixes != nil {
		prefix := spec.Prefix
		if prefix == "" {
			prefix = "kw"
		}
		if !slices.Contains(s.AllowedPrefixes, prefix) {
			add("spec.prefix", "spec.prefix %q is not among the prefixes the policy allows (allowedPrefixes: %s)", prefix, strings.Join(s.AllowedPrefixes, ", "))
		}
	}
	return out
}

// faster is whether rl allows more requests per second on average than requests per bound.
func faster(rl keywardv1alpha1.RateLimit, requests int32, bound string) bool {
	rp, err1 := period.Parse(string(rl.Period))
	bp, err2 := period.Parse(bound)
	if err1 != nil || err2 != nil {
		return false
	}
	return int64(rl.Requests)*int64(bp.N)*short[bp.Unit] > int64(requests)*int64(rp.N)*short[rp.Unit]
}

// allowed is whether scope falls under one of the patterns, read as the verifier reads scopes.
func allowed(scope string, patterns []keywardv1alpha1.Scope) bool {
	for _, p := range patterns {
		if p == "*" || patternRegexp(string(p)).MatchString(scope) {
			return true
		}
	}
	return false
}

// patternRegexp is the expression the admission policy builds from a pattern: "*" segments match one
// segment, a trailing "*" one or more.
func patternRegexp(p string) *regexp.Regexp {
	body := p
	tail := ""
	if strings.HasSuffix(p, ":*") {
		body, tail = p[:len(p)-1], ".+"
	}
	body = strings.ReplaceAll(strings.ReplaceAll(body, ".", `\.`), "*", "[^:]+")
	return regexp.MustCompile("^" + body + tail + "$")
}

func joinScopes(s []keywardv1alpha1.Scope) string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return strings.Join(out, ", ")
}

// StrictestMaxValidity is the shortest maxValidity among the policies, "" when none sets one: what a key
// minted now may be valid for at most.
func StrictestMaxValidity(policies []keywardv1alpha1.APIKeyPolicy) string {
	best, bestLen := "", time.Duration(0)
	for _, p := range policies {
		b, err := period.Parse(string(p.Spec.MaxValidity))
		if err != nil {
			continue
		}
		if best == "" || b.Approx() < bestLen {
			best, bestLen = b.String(), b.Approx()
		}
	}
	return best
}

// Requirement is what the policies ask of an APIKey before its key may have its scopes: an approval, of
// the scopes that fall under some policy's approvalRequiredScopes.
type Requirement struct {
	// Scopes are the spec's scopes that need an approval, in spec order; empty when none does.
	Scopes []keywardv1alpha1.Scope
	// Policies name the policies that ask for it, in name order.
	Policies []string
	// SelfApproval is whether the author of the change may approve it: only when every policy asking for
	// the approval allows it (allowSelfApproval), as the admission policy judges each one on its own.
	SelfApproval bool
}

// Needed reports whether an approval is needed.
func (r Requirement) Needed() bool { return len(r.Scopes) > 0 }

// ApprovalRequired is what the policies (those that apply) ask of spec before its key may be minted or its
// change take effect.
func ApprovalRequired(policies []keywardv1alpha1.APIKeyPolicy, spec keywardv1alpha1.APIKeySpec) Requirement {
	r := Requirement{SelfApproval: true}
	for _, p := range policies {
		asks := false
		for _, sc := range spec.Scopes {
			if len(p.Spec.ApprovalRequiredScopes) > 0 && allowed(string(sc), p.Spec.ApprovalRequiredScopes) {
				asks = true
				if !slices.Contains(r.Scopes, sc) {
					r.Scopes = append(r.Scopes, sc)
				}
			}
		}
		if asks {
			r.Policies = append(r.Policies, p.Name)
			r.SelfApproval = r.SelfApproval && p.Spec.AllowSelfApproval
		}
	}
	if !r.Needed() {
		r.SelfApproval = false
	}
	slices.SortStableFunc(r.Scopes, func(a, b keywardv1alpha1.Scope) int {
		return slices.Index(spec.Scopes, a) - slices.Index(spec.Scopes, b)
	})
	return r
}
