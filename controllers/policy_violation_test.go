package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// relabel sets (or, with value "", removes) a label of the test's namespace.
func (h *harness) relabel(key, value string) {
	h.t.Helper()
	n := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: h.ns}, n); err != nil {
		h.t.Fatal(err)
	}
	if value == "" {
		delete(n.Labels, key)
	} else {
		n.Labels[key] = value
	}
	if err := env.Client.Update(context.Background(), n); err != nil {
		h.t.Fatal(err)
	}
}

func violation(ak *keywardv1alpha1.APIKey) *metav1.Condition {
	return meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionPolicyViolation)
}

func TestAnAPIKeyThatBreaksALaterPolicyIsReportedAndKeepsWorking(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{judgePolicies: true})
	h.create("orders", "validity: 30d\nscopes: [orders:read]")
	before := h.waitReady("orders")

	// A policy that selects the namespace by a label it does not carry yet, and requires a rate limit.
	value := fmt.Sprintf("v-%d", time.Now().UnixNano())
	pol := &keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "violation-" + value},
		Spec: keywardv1alpha1.APIKeyPolicySpec{MaxRateLimit: &keywardv1alpha1.PolicyRateLimit{Required: true}, MaxValidity: "7d",
			NamespaceSelector: &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"guard": value}}}}
	if err := env.Client.Create(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pol) })
	want := "APIKeyPolicy " + pol.Name + ": spec.rateLimit is required (maxRateLimit.required)"

	// The namespace gets the label: the namespace watch finds the APIKey that now breaks the policy.
	h.relabel("guard", value)
	ak := h.waitFor("orders", "PolicyViolation", func(ak *keywardv1alpha1.APIKey) bool {
		c := violation(ak)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, want)
	})
	if !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) || ak.Status.KeyID != before.Status.KeyID {
		t.Errorf("a policy violation stopped or replaced the key: Ready %v, key %s (was %s)", ak.Status.Conditions, ak.Status.KeyID, before.Status.KeyID)
	}
	events := h.waitForEvent(keywardv1alpha1.EventPolicyViolation, 1)
	if e := events[0]; e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, want) {
		t.Errorf("PolicyViolation event %s: %s", e.Type, e.Note)
	}
	if c := violation(ak); !strings.Contains(c.Message, "spec.validity 30d is longer than the policy allows (maxValidity 7d)") {
		t.Errorf("the condition does not name every rule broken: %s", c.Message)
	}

	// The renewal obeys the policy: the next key lives 7 days, the current one keeps its 30.
	h.stepToRequeue(20 * 24 * time.Hour)
	renewed := h.waitFor("orders", "revision 2", revisionIs(2))
	if !renewed.Status.ExpiresAt.Time.Equal(t0.Add(27*24*time.Hour)) || len(renewed.Status.PreviousKeys) != 1 ||
		!renewed.Status.PreviousKeys[0].ValidUntil.Time.Equal(t0.Add(30*24*time.Hour)) {
		t.Errorf("renewed: expires %v, previous keys %+v; want the new key until t0+27d and the old one until t0+30d",
			renewed.Status.ExpiresAt, renewed.Status.PreviousKeys)
	}
	before = renewed

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(StatusCollector{Reader: namespaced{h}})
	if n, err := testutil.GatherAndCount(reg, "keyward_apikey_policy_violations"); err != nil || n != 1 {
		t.Errorf("keyward_apikey_policy_violations series: %d (%v); want 1", n, err)
	}

	// The label goes: no policy selects the namespace, the condition goes.
	h.relabel("guard", "")
	h.waitFor("orders", "no PolicyViolation", func(ak *keywardv1alpha1.APIKey) bool { return violation(ak) == nil })

	// It comes back; then the spec obeys the policy (admission judges the change) and the condition goes.
	h.relabel("guard", value)
	h.waitFor("orders", "PolicyViolation again", func(ak *keywardv1alpha1.APIKey) bool { return violation(ak) != nil })
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 100, Period: "1m"}
		ak.Spec.Validity = "7d"
	})
	ak = h.waitFor("orders", "no PolicyViolation once the spec obeys", func(ak *keywardv1alpha1.APIKey) bool { return violation(ak) == nil })
	if ak.Status.KeyID != before.Status.KeyID {
		t.Errorf("obeying the policy minted a key: %s (was %s)", ak.Status.KeyID, before.Status.KeyID)
	}
	if n, err := testutil.GatherAndCount(reg, "keyward_apikey_policy_violations"); err != nil || n != 0 {
		t.Errorf("keyward_apikey_policy_violations series: %d (%v); want none", n, err)
	}
}
