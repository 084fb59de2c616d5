package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/approval"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// approvalPolicy creates an APIKeyPolicy that asks for an approval of payments:* in the test's namespace
// (selected by a label of its own) and waits until admission knows it.
func (h *harness) approvalPolicy() *keywardv1alpha1.APIKeyPolicy {
	h.t.Helper()
	value := fmt.Sprintf("a-%d", time.Now().UnixNano())
	pol := &keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "approval-" + value},
		Spec: keywardv1alpha1.APIKeyPolicySpec{ApprovalRequiredScopes: []keywardv1alpha1.Scope{"payments:*"},
			NamespaceSelector: &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"guard": value}}}}
	if err := env.Client.Create(context.Background(), pol); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pol) })
	h.relabel("guard", value)
	return pol
}

// approver binds keyward-approver to user in the test's namespace and waits until the authorizer knows it.
func (h *harness) approver(user string) {
	h.t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-approves", Namespace: h.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-approver"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}); err != nil {
		h.t.Fatal(err)
	}
	// Reading an APIKey that does not exist answers NotFound, not Forbidden, once the binding is in force.
	if err := eventually.Poll(func() error {
		return client.IgnoreNotFound(testenv.Impersonating(env.Config, user).Get(ctx, client.ObjectKey{Namespace: h.ns, Name: "nothing"}, &keywardv1alpha1.APIKey{}))
	}); err != nil {
		h.t.Fatalf("%s's binding never took effect: %v", user, err)
	}
}

// decide writes user's decision on name's spec as it is, as kubectl keyward approve and deny do; deny when
// reason is not "".
func (h *harness) decide(user, name, reason string) error {
	ak := h.get(name)
	before := ak.DeepCopy()
	d := &keywardv1alpha1.ApprovalDecision{By: user, At: metav1.NewTime(time.Now().Truncate(time.Second)), Reason: reason, Covers: approval.Of(ak.Spec)}
	if ak.Status.Approval == nil {
		ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{}
	}
	if reason != "" {
		ak.Status.Approval.Denied = d
	} else {
		ak.Status.Approval.Approved = d
	}
	return testenv.Impersonating(env.Config, user).Status().Patch(context.Background(), ak,
		client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
}

// self is the user name of the test's own client, the author of what it creates.
func (h *harness) self() string {
	h.t.Helper()
	review := &authenticationv1.SelfSubjectReview{}
	if err := env.Client.Create(context.Background(), review); err != nil {
		h.t.Fatal(err)
	}
	return review.Status.UserInfo.Username
}

func readyReasonIs(reason keywardv1alpha1.ConditionReason) func(*keywardv1alpha1.APIKey) bool {
	return func(ak *keywardv1alpha1.APIKey) bool {
		c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
		return c != nil && c.Reason == string(reason)
	}
}

func outboxTypes(ak *keywardv1alpha1.APIKey) []keywardv1alpha1.WebhookEvent {
	var out []keywardv1alpha1.WebhookEvent
	if ak.Status.Webhook != nil {
		for _, m := range ak.Status.Webhook.Outbox {
			out = append(out, m.Type)
		}
	}
	return out
}

// An APIKey asking for a scope that a policy holds for approval gets no key until an approver (not its
// author) approves; a later change waits for a new approval while the approved key keeps working and is
// renewed as approved; a denial stalls the change; once no policy asks, the record goes. Each step is told
// by the Ready reason, an event, a webhook event and the awaiting-approval metric.
func TestAKeyNeedingApprovalIsMintedOnlyOnceApprovedAndALaterChangeWaitsWhileItKeepsWorking(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{judgePolicies: true})
	pol := h.approvalPolicy()
	const bob = "bob"
	h.approver(bob)
	author := h.self()
	h.approver(author) // holding the verb does not let the author approve
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(StatusCollector{Reader: namespaced{h}})

	h.create("refunds", "validity: 30d\nscopes: [payments:refund, orders:read]", h.webhookSpec(rcv))
	ak := h.waitFor("refunds", "AwaitingApproval", readyReasonIs(keywardv1alpha1.ReasonAwaitingApproval))
	if ak.Status.KeyHash != "" || ak.Status.Revision != 0 {
		t.Fatalf("a key was minted before any approval: %+v", ak.Status)
	}
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); !strings.Contains(c.Message, "APIKeyPolicy "+pol.Name) ||
		!strings.Contains(c.Message, "No key is minted until then") {
		t.Errorf("Ready says %q", c.Message)
	}
	if ev := h.waitForEvent(keywardv1alpha1.EventApprovalRequested, 1); !strings.Contains(ev[0].Note, "payments:refund") {
		t.Errorf("ApprovalRequested event: %s", ev[0].Note)
	}
	if got := outboxTypes(ak); !slices.Contains(got, keywardv1alpha1.WebhookEventKeyApprovalRequested) {
		t.Errorf("outbox %v; want key.approval_requested", got)
	}
	if n, err := testutil.GatherAndCount(reg, "keyward_apikey_awaiting_approval"); err != nil || n != 1 {
		t.Errorf("keyward_apikey_awaiting_approval series: %d (%v); want 1", n, err)
	}

	// The author (the test's client, which created it) may not approve; bob may.
	// (Until the author's binding is in force RBAC refuses first; then the separation of duties does.)
	if err := eventually.Poll(func() error {
		if err := h.decide(author, "refunds", ""); err == nil || !strings.Contains(err.Error(), "separation of duties") {
			return fmt.Errorf("the author approving: %w; want it refused for the separation of duties", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.decide(bob, "refunds", ""); err != nil {
		t.Fatal(err)
	}
	ak = h.waitReady("refunds")
	first := ak.Status.KeyID
	if ev := h.waitForEvent(keywardv1alpha1.EventApproved, 1); !strings.Contains(ev[0].Note, "Approved by bob") {
		t.Errorf("Approved event: %s", ev[0].Note)
	}
	h.waitForEvent(keywardv1alpha1.EventKeyCreated, 1)
	msgs := ak.Status.Webhook.Outbox
	i := slices.IndexFunc(msgs, func(m keywardv1alpha1.WebhookMessage) bool { return m.Type == keywardv1alpha1.WebhookEventKeyApproved })
	if i < 0 || msgs[i].DecidedBy != bob || !slices.Equal(msgs[i].ApprovalScopes, []keywardv1alpha1.Scope{"payments:refund"}) {
		t.Errorf("key.approved message: outbox %+v", msgs)
	}
	if n, err := testutil.GatherAndCount(reg, "keyward_apikey_awaiting_approval"); err != nil || n != 0 {
		t.Errorf("keyward_apikey_awaiting_approval series: %d (%v); want none", n, err)
	}

	// A change (a scope more, a longer validity) waits; the key keeps working and is renewed as approved.
	h.update("refunds", func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Scopes = append(ak.Spec.Scopes, "payments:payout")
		ak.Spec.Validity = "90d"
	})
	ak = h.waitFor("refunds", "AwaitingApproval for the change", readyReasonIs(keywardv1alpha1.ReasonAwaitingApproval))
	if ak.Status.KeyID != first || !strings.Contains(meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady).Message,
		"keeps working with what was approved") {
		t.Errorf("while the change waits: key %s (was %s), Ready %+v", ak.Status.KeyID, first, ak.Status.Conditions)
	}
	h.stepToRequeue(21 * 24 * time.Hour) // past the renewal time of a 30-day key
	renewed := h.waitFor("refunds", "revision 2", revisionIs(2))
	if want := t0.Add(21 * 24 * time.Hour).Add(30 * 24 * time.Hour); !renewed.Status.ExpiresAt.Time.Equal(want) {
		t.Errorf("the renewal while the change waits expires %v; want %v, the approved 30 days", renewed.Status.ExpiresAt, want)
	}
	if !readyReasonIs(keywardv1alpha1.ReasonAwaitingApproval)(renewed) {
		t.Errorf("after the renewal Ready is %+v; want still AwaitingApproval", renewed.Status.Conditions)
	}

	// bob denies the change: Stalled, the renewed key keeps working.
	if err := h.decide(bob, "refunds", "payouts go through the treasury team"); err != nil {
		t.Fatal(err)
	}
	ak = h.waitFor("refunds", "ApprovalDenied", readyReasonIs(keywardv1alpha1.ReasonApprovalDenied))
	if !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionStalled) || ak.Status.KeyID != renewed.Status.KeyID {
		t.Errorf("after the denial: conditions %+v, key %s", ak.Status.Conditions, ak.Status.KeyID)
	}
	if ev := h.waitForEvent(keywardv1alpha1.EventApprovalDenied, 1); !strings.Contains(ev[0].Note, "payouts go through the treasury team") {
		t.Errorf("ApprovalDenied event: %s", ev[0].Note)
	}
	if got := outboxTypes(ak); !slices.Contains(got, keywardv1alpha1.WebhookEventKeyDenied) {
		t.Errorf("outbox %v; want key.denied", got)
	}

	// The policy goes: nothing asks for an approval, the change takes effect and the record goes.
	if err := env.Client.Delete(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	ak = h.waitFor("refunds", "Ready without the approval record", func(ak *keywardv1alpha1.APIKey) bool {
		return readyReasonIs(keywardv1alpha1.ReasonKeyReady)(ak) && ak.Status.Approval == nil
	})
	if ak.Status.KeyID != renewed.Status.KeyID {
		t.Errorf("the policy's deletion minted a key: %s", ak.Status.KeyID)
	}
	h.assertNoKeyMaterialLeaked()
}
