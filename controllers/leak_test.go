package controllers

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// reportLeak adds, as a namespace editor would (kubectl keyward report-leak), a report that keyID of name
// leaked.
func (h *harness) reportLeak(name, keyID string) {
	h.t.Helper()
	ctx := context.Background()
	const editor = "leak-reporter"
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "leak-reporter", Namespace: h.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: editor}}}); err != nil && !strings.Contains(err.Error(), "already exists") {
		h.t.Fatal(err)
	}
	if err := eventually.Poll(func() error {
		ak := h.get(name)
		changed := ak.DeepCopy()
		changed.Status.Leaks = append(changed.Status.Leaks, keywardv1alpha1.LeakReport{KeyID: keyID, ReportedAt: metav1.Now(),
			URL: "https://github.com/octo/app/blob/main/.env", Source: "content", Reporter: "github-secret-scanning"})
		return testenv.Impersonating(env.Config, editor).Status().Patch(ctx, changed, client.MergeFrom(ak))
	}); err != nil {
		h.t.Fatal(err)
	}
}

func leakCondition(ak *keywardv1alpha1.APIKey) string {
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionKeyLeaked); c != nil {
		return c.Message
	}
	return ""
}

// A key reported leaked is stopped at once and replaced (leakResponse Rotate, the default), and told by the
// KeyLeaked condition, a Warning event and key.leaked with where it was found; a report of a key already
// stopped changes nothing.
func TestAKeyReportedLeakedIsStoppedAtOnceAndReplaced(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{})
	h.create("orders", "", h.webhookSpec(rcv))
	leaked := h.waitReady("orders").Status.KeyID

	h.reportLeak("orders", leaked)
	ak := h.waitFor("orders", "revision 2, the leaked key gone", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Revision == 2 && ak.Status.KeyHash != "" && strings.Contains(leakCondition(ak), "no longer accepted")
	})
	for _, p := range ak.Status.PreviousKeys {
		if p.KeyID == leaked {
			t.Errorf("the leaked key is still accepted as a previous key until %v", p.ValidUntil)
		}
	}
	if ev := h.waitForEvent(keywardv1alpha1.EventKeyLeaked, 1); ev[0].Type != "Warning" ||
		!strings.Contains(ev[0].Note, "Key "+leaked+" was reported leaked") || !strings.Contains(ev[0].Note, "https://github.com/octo/app/blob/main/.env") {
		t.Errorf("KeyLeaked event: %s %s", ev[0].Type, ev[0].Note)
	}
	i := slices.IndexFunc(ak.Status.Webhook.Outbox, func(m keywardv1alpha1.WebhookMessage) bool { return m.Type == keywardv1alpha1.WebhookEventKeyLeaked })
	if i < 0 {
		t.Fatalf("no key.leaked in the outbox %+v", ak.Status.Webhook.Outbox)
	}
	if m := ak.Status.Webhook.Outbox[i]; m.LeakedKeyID != leaked || m.LeakURL != "https://github.com/octo/app/blob/main/.env" ||
		m.LeakSource != "content" || !slices.Contains(m.RevokedKeyIDs, leaked) {
		t.Errorf("key.leaked message %+v", m)
	}

	// The report stays; looking again (a replayed report finds its entry there) mints nothing more.
	h.touch("orders")
	h.waitReconciled("orders")
	if again := h.get("orders"); again.Status.Revision != 2 {
		t.Errorf("looking again at the reported APIKey minted revision %d", again.Status.Revision)
	}
	h.assertNoKeyMaterialLeaked()
}

// With leakResponse Notify the key keeps working: the condition says it is still accepted, and
// keyward_apikey_leaked_keys_accepted counts it (the alert KeywardLeakedKeyStillAccepted fires on it).
func TestALeakReportUnderNotifyChangesNoKeyAndIsCounted(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "leakResponse: Notify")
	leaked := h.waitReady("orders").Status.KeyID
	h.reportLeak("orders", leaked)
	ak := h.waitFor("orders", "KeyLeaked", func(ak *keywardv1alpha1.APIKey) bool { return strings.Contains(leakCondition(ak), "still accepted") })
	if ak.Status.KeyID != leaked || ak.Status.Revision != 1 {
		t.Errorf("Notify changed the key: %s revision %d", ak.Status.KeyID, ak.Status.Revision)
	}
	h.waitForEvent(keywardv1alpha1.EventKeyLeaked, 1)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(StatusCollector{Reader: namespaced{h}})
	if n, err := testutil.GatherAndCount(reg, "keyward_apikey_leaked_keys_accepted"); err != nil || n != 1 {
		t.Errorf("keyward_apikey_leaked_keys_accepted series: %d (%v); want 1", n, err)
	}
}

// With leakResponse Disable every key stops and none is minted until someone asks for a new one with a new
// keyward.dev/rotate value; the leaked key stays stopped after that.
func TestALeakReportUnderDisableStopsEveryKeyUntilANewRotation(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "leakResponse: Disable")
	h.waitReady("orders")
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	rotated := h.waitFor("orders", "revision 2", revisionIs(2))
	previous := rotated.Status.PreviousKeys[0].KeyID
	h.reportLeak("orders", rotated.Status.KeyID)
	ak := h.waitFor("orders", "every key withdrawn", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.KeyHash == "" && len(ak.Status.PreviousKeys) == 0 && readyReasonIs(keywardv1alpha1.ReasonKeyLeaked)(ak)
	})
	if !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionStalled) || ak.Status.LastRotationReason != keywardv1alpha1.RotationLeaked {
		t.Errorf("held: conditions %+v, reason %s", ak.Status.Conditions, ak.Status.LastRotationReason)
	}
	h.touch("orders")
	h.waitReconciled("orders")
	if held := h.get("orders"); held.Status.KeyHash != "" {
		t.Fatalf("a key was minted while held: %s", held.Status.KeyID)
	}
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Annotations[keywardv1alpha1.RotateAnnotation] = "after-the-leak" })
	fresh := h.waitReady("orders")
	if fresh.Status.KeyID == rotated.Status.KeyID || fresh.Status.KeyID == previous ||
		slices.ContainsFunc(fresh.Status.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool {
			return p.KeyID == rotated.Status.KeyID || p.KeyID == previous
		}) {
		t.Errorf("after the new rotation: key %s, previous %+v; want neither earlier key", fresh.Status.KeyID, fresh.Status.PreviousKeys)
	}
}
