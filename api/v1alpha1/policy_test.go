package v1alpha1_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/guardrail"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// policy creates an APIKeyPolicy from the YAML of its spec, named after the test, and deletes it at the end.
func policy(t *testing.T, suffix, spec string) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + "-" + suffix
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("spec:\n"+indent(spec)), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetAPIVersion("keyward.dev/v1alpha1")
	u.SetKind("APIKeyPolicy")
	u.SetName(name)
	if err := env.Client.Create(context.Background(), u); err != nil {
		t.Fatalf("creating APIKeyPolicy %s: %v", name, err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })
	return name
}

// labelled is a namespace of the test carrying the label guard=<value>, which the test's policies select.
func labelled(t *testing.T, value string) string {
	t.Helper()
	ns := env.Namespace(t)
	n := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: ns}, n); err != nil {
		t.Fatal(err)
	}
	n.Labels["guard"] = value
	if err := env.Client.Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return ns
}

// enforced waits until the admission plugin has seen policy name: a dry run of spec is refused by it.
// (The API server reads policies from a cache, a moment after they are created.)
func enforced(t *testing.T, ns, name, spec string) {
	t.Helper()
	if err := eventually.Poll(func() error {
		err := env.Client.Create(context.Background(), apiKey(t, ns, "probe", spec), client.DryRunAll)
		if err == nil {
			return errors.New("the dry run was admitted")
		}
		if strings.Contains(err.Error(), "APIKeyPolicy "+name+":") {
			return nil
		}
		return fmt.Errorf("the dry run got %w", err)
	}); err != nil {
		t.Fatalf("APIKeyPolicy %s is not enforced: %v", name, err)
	}
}

func TestAPolicyWithABadSelectorPatternOrBoundIsRefusedAtApplyTime(t *testing.T) {
	testenv.Need(t)
	cases := []struct{ name, spec, field, want string }{
		{"unknown selector operator", "namespaceSelector: {matchExpressions: [{key: team, operator: Equals, values: [a]}]}",
			"spec.namespaceSelector.matchExpressions[0].operator", "Unsupported value"},
		{"In without values", "namespaceSelector: {matchExpressions: [{key: team, operator: In}]}",
			"spec.namespaceSelector", "In and NotIn need values"},
		{"Exists with values", "namespaceSelector: {matchExpressions: [{key: team, operator: Exists, values: [a]}]}",
			"spec.namespaceSelector", "Exists and DoesNotExist take none"},
		{"malformed scope pattern", "allowedScopes: [\"orders:**\"]", "spec.allowedScopes[0]", "should match"},
		{"malformed approval pattern", "approvalRequiredScopes: [\"payments::*\"]", "spec.approvalRequiredScopes[0]", "should match"},
		{"too many approval patterns", "approvalRequiredScopes: [" + strings.Repeat("a,", 32) + "b]", "spec.approvalRequiredScopes", "must have at most 32 items"},
		{"malformed duration", "maxValidity: 90 days", "spec.maxValidity", "for example 90d"},
		{"malformed prefix", "allowedPrefixes: [KW]", "spec.allowedPrefixes[0]", "should match"},
		{"rate without its period", "maxRateLimit: {requests: 100}", "spec", "requests and period go together"},
		{"rate period over a day", "maxRateLimit: {requests: 100, period: 2d}", "spec.maxRateLimit.period", "at most 1d"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte("spec:\n"+indent(tc.spec)), &u.Object); err != nil {
				t.Fatal(err)
			}
			u.SetAPIVersion("keyward.dev/v1alpha1")
			u.SetKind("APIKeyPolicy")
			u.SetName("bad-" + strings.ReplaceAll(tc.name, " ", "-"))
			err := env.Client.Create(context.Background(), u, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v; want an error naming %s with %q", tc.spec, err, tc.field, tc.want)
			}
		})
	}
}

func TestAnAPIKeyThatBreaksAPolicyIsRefusedNamingThePolicyAndTheField(t *testing.T) {
	testenv.Need(t)
	value := fmt.Sprintf("strict-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	free := env.Namespace(t) // not labelled: no policy selects it
	bounds := policy(t, "bounds", `namespaceSelector: {matchLabels: {guard: `+value+`}}
maxValidity: 90d
maxGracePeriod: 1h
allowedScopes: ["orders:*", "*:read"]
maxRateLimit: {requests: 100, period: 1m, required: true}
allowedPrefixes: [kw, ord]`)
	rotation := policy(t, "rotation", `namespaceSelector: {matchExpressions: [{key: guard, operator: In, values: [`+value+`]}]}
requireAutoRotation: true`)
	const ok = "rateLimit: {requests: 100, period: 1m}"
	enforced(t, ns, bounds, "validity: 1y\n"+ok)
	enforced(t, ns, rotation, "rotation: {policy: Disabled}\n"+ok)

	cases := []struct {
		name, spec string
		policy     string // "" when admitted
		want       string
	}{
		{"defaults within every bound", ok, "", ""},
		{"validity over the bound", "validity: 1y\n" + ok, bounds, "spec.validity 1y is longer than the policy allows (maxValidity 90d)"},
		{"three months may be 93 days", "validity: 3mo\n" + ok, bounds, "spec.validity 3mo"},
		{"twelve weeks are 84 days", "validity: 12w\n" + ok, "", ""},
		{"a fixed expiry past the bound", "expiresAt: \"" + time.Now().UTC().AddDate(1, 0, 0).Format(time.RFC3339) + "\"\n" + ok, bounds, "spec.expiresAt"},
		{"a fixed expiry is never renewed", "expiresAt: \"" + time.Now().UTC().AddDate(0, 0, 30).Format(time.RFC3339) + "\"\n" + ok, rotation, "requireAutoRotation"},
		{"rotation disabled", "rotation: {policy: Disabled}\n" + ok, rotation, "spec.rotation.policy: Disabled is never renewed"},
		{"grace over the bound", "rotation: {gracePeriod: 2h}\n" + ok, bounds, "spec.rotation.gracePeriod 2h is longer than the policy allows (maxGracePeriod 1h)"},
		{"sixty minutes of grace", "rotation: {gracePeriod: 60m}\n" + ok, "", ""},
		{"a scope outside the patterns", "scopes: [orders:read, billing:write]\n" + ok, bounds, `spec.scopes[1]: scope "billing:write" is not among the scopes the policy allows`},
		{"scopes under the patterns", "scopes: [\"orders:*\", orders:read:own, reports:read]\n" + ok, "", ""},
		{"every scope", "scopes: [\"*\"]\n" + ok, bounds, `scope "*"`},
		{"a wildcard wider than the pattern", "scopes: [\"*:write\"]\n" + ok, bounds, `scope "*:write"`},
		{"no rate limit", "validity: 30d", bounds, "spec.rateLimit is required"},
		{"a faster rate in the same period", "rateLimit: {requests: 1000, period: 1m}", bounds, "spec.rateLimit 1000/1m allows more than the policy (maxRateLimit 100/1m)"},
		{"a faster rate in another period", "rateLimit: {requests: 10, period: 1s}", bounds, "spec.rateLimit 10/1s"},
		{"a slower rate in another period", "rateLimit: {requests: 1, period: 1s}", "", ""},
		{"a prefix outside the list", "prefix: trial\n" + ok, bounds, `spec.prefix "trial" is not among the prefixes the policy allows (allowedPrefixes: kw, ord)`},
		{"a prefix on the list", "prefix: ord\n" + ok, "", ""},
	}
	// The manager judges existing APIKeys with internal/guardrail: it must agree with admission on every case.
	var all keywardv1alpha1.APIKeyPolicyList
	if err := env.Client.List(context.Background(), &all); err != nil {
		t.Fatal(err)
	}
	nsObj := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	applying := guardrail.Applying(all.Items, nsObj.Labels)
	// Another policy a case breaks: the API server reports the first policy that refuses, so either may be named.
	also := map[string]string{"a fixed expiry past the bound": rotation}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := apiKey(t, ns, fmt.Sprintf("k-%d", i), tc.spec)
			var typed keywardv1alpha1.APIKey
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &typed); err != nil {
				t.Fatal(err)
			}
			violations := guardrail.Check(applying, typed.Spec, time.Now())
			if tc.policy != "" && !slices.ContainsFunc(violations, func(v guardrail.Violation) bool {
				return v.Policy == tc.policy && strings.Contains(v.Message, tc.want)
			}) {
				t.Errorf("internal/guardrail does not report %q of %s: %v", tc.want, tc.policy, violations)
			}
			err := env.Client.Create(context.Background(), u)
			if (err != nil) != (len(violations) > 0) {
				t.Errorf("admission says %v; internal/guardrail says %v", err, violations)
			}
			if err != nil && len(violations) > 0 && !slices.ContainsFunc(violations, func(v guardrail.Violation) bool {
				return strings.Contains(err.Error(), v.String())
			}) {
				t.Errorf("admission refused with %v; internal/guardrail words it %v", err, violations)
			}
			switch {
			case tc.policy == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.policy != "" && (err == nil || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err)):
				t.Errorf("%s: %v; want it refused by APIKeyPolicy %s", tc.spec, err, tc.policy)
			case tc.policy != "" && (!strings.Contains(err.Error(), "APIKeyPolicy "+tc.policy+":") || !strings.Contains(err.Error(), tc.want)) &&
				(also[tc.name] == "" || !strings.Contains(err.Error(), "APIKeyPolicy "+also[tc.name]+":")):
				t.Errorf("the refusal does not name the policy %s and %q: %v", tc.policy, tc.want, err)
			}
			// A namespace no policy selects admits the same APIKey.
			if err := env.Client.Create(context.Background(), apiKey(t, free, fmt.Sprintf("k-%d", i), tc.spec)); err != nil {
				t.Errorf("a namespace no policy selects refused it: %v", err)
			}
		})
	}
}

func TestAnAPIKeyCreatedBeforeAPolicyKeepsWorkingAndOnlyChangesToWhatItBreaksAreJudged(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	value := fmt.Sprintf("later-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	old := apiKey(t, ns, "old", "validity: 1y\nscopes: [billing:write]")
	if err := env.Client.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	name := policy(t, "later", `namespaceSelector: {matchLabels: {guard: `+value+`}}
maxValidity: 90d
allowedScopes: ["orders:*"]`)
	enforced(t, ns, name, "validity: 1y")
	update := func(mutate func(u *unstructured.Unstructured)) error {
		u := apiKeyRef(ns, "old")
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
			t.Fatal(err)
		}
		mutate(u)
		return env.Client.Update(ctx, u)
	}
	set := func(v any, path ...string) func(*unstructured.Unstructured) {
		return func(u *unstructured.Unstructured) {
			if err := unstructured.SetNestedField(u.Object, v, path...); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name   string
		mutate func(*unstructured.Unstructured)
		want   string // "" when admitted
	}{
		{"a rotation asked for", func(u *unstructured.Unstructured) {
			u.SetAnnotations(map[string]string{keywardv1alpha1.RotateAnnotation: "now"})
		}, ""},
		{"a finalizer added, as the manager does", func(u *unstructured.Unstructured) { u.SetFinalizers([]string{keywardv1alpha1.WebhookFinalizer}) }, ""},
		{"the description edited", set("billing worker", "spec", "description"), ""},
		{"a longer validity", set("2y", "spec", "validity"), "spec.validity 2y"},
		{"a scope outside the patterns added", set([]any{"billing:write", "invoices:write"}, "spec", "scopes"), `scope "invoices:write"`},
		{"a validity within the bound", set("30d", "spec", "validity"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := update(tc.mutate)
			if tc.want == "" && err != nil {
				t.Errorf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), "APIKeyPolicy "+name+":") || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("%v; want a refusal by %s naming %q", err, name, tc.want)
			}
		})
	}
	if err := env.Client.Delete(ctx, apiKeyRef(ns, "old")); err != nil {
		t.Errorf("deleting an APIKey that breaks a policy: %v", err)
	}
}

func TestATenantWhoMayNotLabelNamespacesCannotEscapeAPolicy(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	value := fmt.Sprintf("tenant-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	name := policy(t, "tenant", `namespaceSelector: {matchLabels: {guard: `+value+`}}
maxValidity: 30d`)
	enforced(t, ns, name, "validity: 1y")
	// The namespace's administrator, with Keyward's admin role (any scope) too.
	const tenant = "tenant-admin"
	bind(t, ns, tenant, "admin")
	bind(t, ns, tenant, "keyward-admin")
	// Proof that the bindings are in the API server's authorizer: the tenant may create an APIKey the policy
	// admits (a dry run).
	if err := eventually.Poll(func() error {
		return as(t, tenant).Create(ctx, apiKey(t, ns, "short", "validity: 30d"), client.DryRunAll)
	}); err != nil {
		t.Fatalf("the tenant's bindings never took effect: %v", err)
	}
	n := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, n); err != nil {
		t.Fatal(err)
	}
	escaped := n.DeepCopy()
	delete(escaped.Labels, "guard")
	if err := as(t, tenant).Patch(ctx, escaped, client.MergeFrom(n)); !apierrors.IsForbidden(err) {
		t.Fatalf("the namespace's admin removing its label: %v; want Forbidden", err)
	}
	if err := as(t, tenant).Create(ctx, apiKey(t, ns, "long", "validity: 1y")); err == nil || !strings.Contains(err.Error(), "APIKeyPolicy "+name+":") {
		t.Errorf("the tenant's APIKey over the bound: %v; want it refused by %s", err, name)
	}
	// Anyone authenticated may read which policies there are, and no one but cluster admins may write them.
	var list keywardv1alpha1.APIKeyPolicyList
	if err := as(t, tenant).List(ctx, &list); err != nil {
		t.Errorf("the tenant listing APIKeyPolicies: %v", err)
	}
	mine := &keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "tenant-own"}}
	if err := as(t, tenant).Create(ctx, mine, client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Errorf("the tenant creating an APIKeyPolicy: %v; want Forbidden", err)
	}
	p := &keywardv1alpha1.APIKeyPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		t.Fatal(err)
	}
	loosened := p.DeepCopy()
	loosened.Spec.MaxValidity = "10y"
	if err := as(t, tenant).Patch(ctx, loosened, client.MergeFrom(p)); !apierrors.IsForbidden(err) {
		t.Errorf("the tenant loosening the policy: %v; want Forbidden", err)
	}
}
