package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// TestAPreviousKeyStillUsedNearTheEndOfItsGraceIsReportedEverywhere rotates two APIKeys (1 h grace), has
// the verifier report that the previous key of one of them is still used, and moves the clock into the
// last quarter of the grace period. Only that APIKey reports it: status.previousKeysInUse, the
// PreviousKeyInUse condition, one Warning event and a key.previous_in_use webhook event with the key's end
// and last use. Once the previous key has ended, the report is gone.
func TestAPreviousKeyStillUsedNearTheEndOfItsGraceIsReportedEverywhere(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{})
	for _, name := range []string{"used", "quiet"} {
		h.create(name, "", h.webhookSpec(rcv))
		h.waitReady(name)
		h.update(name, func(ak *keywardv1alpha1.APIKey) {
			ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
		})
		h.waitFor(name, "revision 2", revisionIs(2))
	}
	used := h.get("used")
	previousID := used.Status.PreviousKeys[0].KeyID
	// The verifier reports, as its own identity, that the previous key was accepted 40 minutes in.
	lastUse := metav1.NewTime(t0.Add(40 * time.Minute))
	base := used.DeepCopy()
	used.Status.Usage = &keywardv1alpha1.UsageStatus{Requests: 1, LastUsedAt: &lastUse,
		Keys: []keywardv1alpha1.KeyUsage{{KeyID: previousID, Valid: 1, LastUsedAt: &lastUse}}}
	if err := testenv.Impersonating(env.Config, testenv.VerifierUser).Status().Patch(context.Background(), used,
		client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		t.Fatal(err)
	}
	h.touch("used") // the manager's cache now shows the report

	h.stepToRequeue(45 * time.Minute) // the last quarter of the hour's grace
	inUse := func(ak *keywardv1alpha1.APIKey) bool {
		c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse)
		return slices.Equal(ak.Status.PreviousKeysInUse, []string{previousID}) && c != nil && c.Status == metav1.ConditionTrue
	}
	ak := h.waitFor("used", "the previous key reported in use", inUse)
	// Both were due at the same instant, so the clock step queued both; used has been reconciled, quiet is
	// reconciled or queued, and waitReconciled waits for the queue to be idle.
	h.waitReconciled("quiet")
	if q := h.get("quiet"); len(q.Status.PreviousKeysInUse) > 0 ||
		meta.FindStatusCondition(q.Status.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse) != nil {
		t.Errorf("an APIKey whose previous key nobody used reports it in use: %+v", q.Status)
	}
	if !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
		t.Error("a previous key in use made the APIKey not Ready")
	}
	evs := h.waitForEvent(keywardv1alpha1.EventPreviousKeyInUse, 1)
	if len(evs) != 1 || evs[0].Regarding.Name != "used" || evs[0].Type != "Warning" {
		t.Errorf("events %+v", evs)
	}
	var msg *keywardv1alpha1.WebhookMessage
	for i, m := range ak.Status.Webhook.Outbox {
		if m.Type == keywardv1alpha1.WebhookEventKeyPreviousInUse {
			msg = &ak.Status.Webhook.Outbox[i]
		}
	}
	if msg == nil || msg.PreviousKeyID != previousID || !msg.PreviousLastUsedAt.Equal(&lastUse) ||
		!msg.PreviousValidUntil.Equal(&ak.Status.PreviousKeys[0].ValidUntil) || msg.KeyID != ak.Status.KeyID {
		t.Errorf("the key.previous_in_use message: %+v (outbox %+v)", msg, ak.Status.Webhook.Outbox)
	}

	h.stepToRequeue(15 * time.Minute) // the previous key's end
	h.waitFor("used", "no previous key in use once it ended", func(ak *keywardv1alpha1.APIKey) bool {
		return len(ak.Status.PreviousKeysInUse) == 0 && len(ak.Status.PreviousKeys) == 0 &&
			meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse) == nil
	})
	if n := len(h.events()[keywardv1alpha1.EventPreviousKeyInUse]); n != 1 {
		t.Errorf("%d PreviousKeyInUse events; want the one", n)
	}
}

// TestAUseOfAPreviousKeyInsideAShortGraceIsReportedBeforeTheKeyStops rotates an APIKey with a 5-minute
// grace period, whose notice is the whole grace, and has the verifier report that the previous key is still
// used. The report alone, with the clock standing still, makes the manager say so: its next scheduled look
// would come at the key's end, too late for any warning.
func TestAUseOfAPreviousKeyInsideAShortGraceIsReportedBeforeTheKeyStops(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("short", "rotation: {gracePeriod: 5m}")
	h.waitReady("short")
	h.update("short", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	ak := h.waitFor("short", "revision 2", revisionIs(2))
	previousID := ak.Status.PreviousKeys[0].KeyID
	if len(ak.Status.PreviousKeysInUse) != 0 {
		t.Fatalf("a previous key nobody used yet is reported in use: %v", ak.Status.PreviousKeysInUse)
	}

	lastUse := metav1.NewTime(h.clock.Now())
	base := ak.DeepCopy()
	ak.Status.Usage = &keywardv1alpha1.UsageStatus{Requests: 1, LastUsedAt: &lastUse,
		Keys: []keywardv1alpha1.KeyUsage{{KeyID: previousID, Valid: 1, LastUsedAt: &lastUse}}}
	if err := testenv.Impersonating(env.Config, testenv.VerifierUser).Status().Patch(context.Background(), ak,
		client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		t.Fatal(err)
	}
	got := h.waitFor("short", "the previous key reported in use", func(ak *keywardv1alpha1.APIKey) bool {
		return slices.Equal(ak.Status.PreviousKeysInUse, []string{previousID}) &&
			meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse)
	})
	if !h.clock.Now().Before(got.Status.PreviousKeys[0].ValidUntil.Time) {
		t.Errorf("reported at %v, not before the previous key's end %v", h.clock.Now(), got.Status.PreviousKeys[0].ValidUntil)
	}
	if evs := h.waitForEvent(keywardv1alpha1.EventPreviousKeyInUse, 1); len(evs) != 1 || evs[0].Regarding.Name != "short" {
		t.Errorf("events %+v", evs)
	}
}
