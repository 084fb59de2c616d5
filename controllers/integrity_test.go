package controllers

import (
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// attackerKey is a well-formed key that someone with write access to Secrets or status chose.
func attackerKey(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// acceptedBy reports what a verifier fed with ak's status answers for key, as the real verifier would.
func acceptedBy(ak *keywardv1alpha1.APIKey, key string, now time.Time) verifier.Code {
	ix := verifier.NewIndex()
	ix.Upsert(ak)
	return ix.Verify(key, nil, now).Code
}

func hasPrevious(ak *keywardv1alpha1.APIKey, hash string) bool {
	return slices.ContainsFunc(ak.Status.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == hash })
}

func TestAnEditOfTheKeyOrItsRecordIsTamperingAnsweredWithANewKey(t *testing.T) {
	testenv.Need(t)
	cases := []struct {
		name string
		// edit changes the Secret and returns the key the editor wants accepted ("" when none).
		edit func(t *testing.T, s *corev1.Secret) string
		// names is what the SecretTampered event must name.
		names string
	}{
		{"a planted previous key valid until 2099", func(t *testing.T, s *corev1.Secret) string {
			k := attackerKey(t)
			s.Annotations[keyrecord.AnnotationPreviousKeys] = `[{"keyHash":"` + keys.Hash(k) + `","validUntil":"2099-01-01T00:00:00Z"}]`
			return k
		}, keyrecord.AnnotationPreviousKeys},
		{"a key of the editor's choice with its matching hash", func(t *testing.T, s *corev1.Secret) string {
			k := attackerKey(t)
			s.Data[keyrecord.DataAPIKey] = []byte(k)
			s.Annotations[keyrecord.AnnotationKeyHash] = keys.Hash(k)
			return k
		}, keyrecord.AnnotationKeyHash},
		{"the revision raised", func(_ *testing.T, s *corev1.Secret) string {
			s.Annotations[keyrecord.AnnotationRevision] = "7"
			return ""
		}, keyrecord.AnnotationRevision},
		{"the issue time moved later, which would extend the key", func(_ *testing.T, s *corev1.Secret) string {
			s.Annotations[keyrecord.AnnotationIssuedAt] = "2030-01-01T00:00:00Z"
			return ""
		}, keyrecord.AnnotationIssuedAt},
		{"the key edited by hand", func(_ *testing.T, s *corev1.Secret) string {
			s.Data[keyrecord.DataAPIKey] = []byte("hunter2")
			return ""
		}, "data api-key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.startManager(managerOptions{})
			h.create("orders", "")
			first := h.waitReady("orders")
			h.clock.Step(10 * time.Minute)

			s := h.secret("orders")
			planted := tc.edit(t, s)
			if err := env.Client.Update(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			ak := h.waitFor("orders", "revision 2", revisionIs(2))
			if ak.Status.LastRotationReason != keywardv1alpha1.RotationSecretTampered {
				t.Errorf("reason %q, want SecretTampered", ak.Status.LastRotationReason)
			}
			newKey := h.key("orders")
			if ak.Status.KeyHash != keys.Hash(newKey) || newKey == planted {
				t.Fatal("the Secret does not hold a fresh key recorded in status")
			}
			// The last genuine key stays valid for the grace period; nothing the editor wrote is trusted.
			want := []keywardv1alpha1.PreviousKey{{KeyID: first.Status.KeyID, KeyHash: first.Status.KeyHash,
				ValidUntil: metav1.NewTime(t0.Add(10*time.Minute + time.Hour))}}
			if len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyHash != want[0].KeyHash ||
				!ak.Status.PreviousKeys[0].ValidUntil.Equal(&want[0].ValidUntil) {
				t.Errorf("previous keys %+v; want only the genuine key for the grace period", ak.Status.PreviousKeys)
			}
			if planted != "" {
				if got := acceptedBy(ak, planted, h.clock.Now()); got != verifier.CodeNotFound {
					t.Errorf("the verifier answers %s for the key the editor planted", got)
				}
				if strings.Contains(h.secret("orders").Annotations[keyrecord.AnnotationPreviousKeys], keys.Hash(planted)) {
					t.Error("the planted hash survived in the Secret's record")
				}
			}
			ev := h.waitForEvent(keywardv1alpha1.EventSecretTampered, 1)[0]
			if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Note, tc.names) || !strings.Contains(ev.Note, ak.Status.KeyID) {
				t.Errorf("event %s %q does not name %s and the new key", ev.Type, ev.Note, tc.names)
			}
		})
	}
}

// withoutStatusPolicy lifts the keyward-status-writers policy for one test, to prove the controller's own
// defence for clusters without it, and puts it back (enforced) afterwards. The policy's refusal comes first.
func withoutStatusPolicy(t testing.TB, genuine, forged *keywardv1alpha1.APIKey) {
	t.Helper()
	ctx := context.Background()
	err := env.Client.Status().Patch(ctx, forged.DeepCopy(), client.MergeFrom(genuine), client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "keyward-status-writers") {
		t.Fatalf("with the shipped policy, forging status as admin: %v; want a refusal by keyward-status-writers", err)
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "keyward-status-writers"}, binding); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		restored := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: binding.Name}, Spec: binding.Spec}
		if err := env.Client.Create(ctx, restored); err != nil {
			t.Errorf("restoring the status policy: %v", err)
		}
		if err := testenv.WaitForPolicies(ctx, env.Config, env.Client); err != nil {
			t.Error(err)
		}
	})
	eventually.Succeeds(t, "the status policy no longer applies once its binding is deleted", func() error {
		return env.Client.Status().Patch(ctx, forged.DeepCopy(), client.MergeFrom(genuine), client.DryRunAll)
	})
}

// forgeStatus writes a status naming planted as the current and a previous key of the APIKey whose genuine
// state is genuine, and returns the forged object.
func forgeStatus(t testing.TB, genuine *keywardv1alpha1.APIKey, planted string) *keywardv1alpha1.APIKey {
	t.Helper()
	forged := genuine.DeepCopy()
	forged.Status.KeyHash = keys.Hash(planted)
	forged.Status.PreviousKeys = []keywardv1alpha1.PreviousKey{{KeyID: keys.Sum(planted).ID(), KeyHash: keys.Hash(planted),
		ValidUntil: metav1.NewTime(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC))}}
	return forged
}

func statusPutBack(genuine *keywardv1alpha1.APIKey) func(*keywardv1alpha1.APIKey) bool {
	return func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.KeyHash == genuine.Status.KeyHash && len(ak.Status.PreviousKeys) == 0
	}
}

// unguardedStatus starts a manager with one Ready APIKey "orders" and lifts the status policy, so that a
// forged status (returned, not yet written) reaches the controller.
func unguardedStatus(tb testing.TB) (h *harness, genuine, forged *keywardv1alpha1.APIKey) {
	tb.Helper()
	testenv.Need(tb)
	h = newHarness(tb)
	h.startManager(managerOptions{})
	h.create("orders", "")
	genuine = h.waitReady("orders")
	forged = forgeStatus(tb, genuine, attackerKey(tb))
	withoutStatusPolicy(tb, genuine, forged)
	return h, genuine, forged
}

// How fast a forged status is put back is measured by BenchmarkForgedStatusPutBack; this test proves that
// it is, and how.
func TestAForgedStatusIsPutBackWithAnEventNamingTheFields(t *testing.T) {
	h, genuine, forged := unguardedStatus(t)
	if err := env.Client.Status().Patch(context.Background(), forged, client.MergeFrom(genuine)); err != nil {
		t.Fatal(err)
	}
	ak := h.waitFor("orders", "status is put back", statusPutBack(genuine))
	if ak.Status.Revision != 1 || ak.Status.RecordSignature != genuine.Status.RecordSignature {
		t.Errorf("putting status back changed the key: revision %d", ak.Status.Revision)
	}
	ev := h.waitForEvent(keywardv1alpha1.EventStatusRestored, 1)[0]
	if !strings.Contains(ev.Note, "status.keyHash") || !strings.Contains(ev.Note, "status.previousKeys") {
		t.Errorf("StatusRestored %q does not name the forged fields", ev.Note)
	}
}

// BenchmarkForgedStatusPutBack measures how long a forged status stands before the controller puts it back
// (ms/forgery); the target is under a second.
func BenchmarkForgedStatusPutBack(b *testing.B) {
	h, genuine, _ := unguardedStatus(b)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		current := h.get("orders")
		forged := forgeStatus(b, current, attackerKey(b))
		start := time.Now()
		if err := env.Client.Status().Patch(context.Background(), forged, client.MergeFrom(current)); err != nil {
			b.Fatal(err)
		}
		h.waitFor("orders", "status is put back", statusPutBack(genuine))
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/forgery")
}

func TestAForgedStatusNeverBecomesTheLastKnownKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	genuine := h.waitReady("orders")
	h.stopManager()

	// With the manager down, someone forges status and deletes the Secret, hoping the forged key is kept
	// for the grace period as the "last known" key.
	planted := attackerKey(t)
	forged := genuine.DeepCopy()
	forged.Status.KeyHash = keys.Hash(planted)
	withoutStatusPolicy(t, genuine, forged)
	if err := env.Client.Status().Patch(context.Background(), forged, client.MergeFrom(genuine)); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), h.secret("orders")); err != nil {
		t.Fatal(err)
	}
	h.startManager(managerOptions{})
	ak := h.waitFor("orders", "a new key", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.KeyHash != "" && ak.Status.KeyHash != keys.Hash(planted) && ak.Status.KeyHash != genuine.Status.KeyHash
	})
	if hasPrevious(ak, keys.Hash(planted)) || acceptedBy(ak, planted, h.clock.Now()) != verifier.CodeNotFound {
		t.Errorf("the forged key is accepted: previous keys %+v", ak.Status.PreviousKeys)
	}
	h.waitForEvent(keywardv1alpha1.EventStatusRestored, 1)
}

func TestAZeroGraceRotationRevokesEveryEarlierKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 3h\nrotation: {renewBefore: 1h}")
	first := h.waitReady("orders")
	h.stepToRequeue(2 * time.Hour)
	second := h.waitFor("orders", "revision 2", revisionIs(2))
	if !hasPrevious(second, first.Status.KeyHash) {
		t.Fatalf("the renewal did not keep the first key: %+v", second.Status.PreviousKeys)
	}

	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Rotation.GracePeriod = "0s"
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "leaked"}
	})
	ak := h.waitFor("orders", "revision 3", revisionIs(3))
	if len(ak.Status.PreviousKeys) != 0 {
		t.Errorf("previous keys %+v after a zero-grace rotation; want none", ak.Status.PreviousKeys)
	}
	for _, old := range []string{h.writes.keyOf(first.Status.KeyHash), h.writes.keyOf(second.Status.KeyHash)} {
		if got := acceptedBy(ak, old, h.clock.Now()); got != verifier.CodeNotFound {
			t.Errorf("an earlier key is still %s", got)
		}
	}
	if ev := h.waitForEvent(keywardv1alpha1.EventKeyRotated, 2); !slices.ContainsFunc(ev, func(e eventsv1.Event) bool {
		return strings.Contains(e.Note, first.Status.KeyID) && strings.Contains(e.Note, "revoked too")
	}) {
		t.Errorf("no KeyRotated event says the earlier key %s was revoked too", first.Status.KeyID)
	}
}

func TestTheRevokeAnnotationRevokesKeysByIDAndOnlyThose(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 3h\nrotation: {renewBefore: 1h, gracePeriod: 30m}")
	first := h.waitReady("orders")
	h.stepToRequeue(2 * time.Hour)
	h.waitFor("orders", "revision 2", revisionIs(2))
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	third := h.waitFor("orders", "revision 3", revisionIs(3))
	if len(third.Status.PreviousKeys) != 2 {
		t.Fatalf("previous keys %+v; want the first and second keys", third.Status.PreviousKeys)
	}
	second := third.Status.PreviousKeys[0].KeyID // the manual rotation's grace (30m) ends first

	// Revoking a previous key drops it at once and mints nothing.
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations[keywardv1alpha1.RevokeAnnotation] = first.Status.KeyID
	})
	ak := h.waitFor("orders", "the first key is dropped", func(ak *keywardv1alpha1.APIKey) bool { return !hasPrevious(ak, first.Status.KeyHash) })
	if ak.Status.Revision != 3 || len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyID != second {
		t.Errorf("revoking one previous key: revision %d, previous %+v", ak.Status.Revision, ak.Status.PreviousKeys)
	}
	if ev := h.waitForEvent(keywardv1alpha1.EventKeyRevoked, 1)[0]; !strings.Contains(ev.Note, first.Status.KeyID) {
		t.Errorf("KeyRevoked %q does not name the key", ev.Note)
	}

	// Revoking the current key mints a new one and keeps the revoked key for no grace period at all.
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations[keywardv1alpha1.RevokeAnnotation] = first.Status.KeyID + "," + third.Status.KeyID
	})
	ak = h.waitFor("orders", "revision 4", revisionIs(4))
	if ak.Status.LastRotationReason != keywardv1alpha1.RotationRevoked || hasPrevious(ak, third.Status.KeyHash) {
		t.Errorf("reason %q previous %+v; want Revoked and the revoked key gone", ak.Status.LastRotationReason, ak.Status.PreviousKeys)
	}
	if len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyID != second {
		t.Errorf("previous keys %+v; the second key was not named and keeps its grace", ak.Status.PreviousKeys)
	}
	h.waitForEvent(keywardv1alpha1.EventKeyRevoked, 2)

	// The annotation stays, as GitOps keeps it; it names no live key any more and changes nothing.
	h.touch("orders")
	if got := h.get("orders"); got.Status.Revision != 4 || len(got.Status.PreviousKeys) != 1 {
		t.Errorf("the revoke annotation acted twice: revision %d", got.Status.Revision)
	}
}

func TestASecretLeftBehindByADeletedAPIKeyIsNotAdopted(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	first := h.waitReady("orders")
	oldKey := h.key("orders")

	// envtest runs no garbage collector: the Secret outlives its APIKey, as it does while the collector is
	// behind, still controlled by the deleted APIKey's UID.
	if err := env.Client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	h.waitForDeletion("orders")
	left := h.secret("orders")
	h.create("orders", "")
	ak := h.waitFor("orders", "SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled); c == nil || !strings.Contains(c.Message, "earlier APIKey") {
		t.Errorf("Stalled %+v does not explain the earlier APIKey's Secret", c)
	}
	if ak.Status.KeyHash != "" || h.secret("orders").ResourceVersion != left.ResourceVersion {
		t.Fatal("the earlier APIKey's key was brought back or its Secret touched")
	}

	// Once the collector removes it, the new APIKey gets a key of its own.
	if err := env.Client.Delete(context.Background(), left); err != nil {
		t.Fatal(err)
	}
	ak = h.waitReady("orders")
	if ak.Status.KeyHash == first.Status.KeyHash || h.key("orders") == oldKey || ak.Status.Revision != 1 {
		t.Errorf("the re-created APIKey got the old key back")
	}
}

func TestAnOrphanedSecretIsAdoptedOnlyWithTheOptInAnnotation(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	first := h.waitReady("orders")
	key := h.key("orders")

	// kubectl delete --cascade=orphan: the Secret loses its owner and stays.
	s := h.secret("orders")
	s.OwnerReferences = nil
	if err := env.Client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	h.waitForDeletion("orders")
	h.create("orders", "")
	ak := h.waitFor("orders", "SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); !strings.Contains(c.Message, keywardv1alpha1.AdoptOrphanAnnotation) {
		t.Errorf("the conflict %q does not tell how to adopt", c.Message)
	}

	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.AdoptOrphanAnnotation: "true"}
	})
	ak = h.waitReady("orders")
	if ak.Status.KeyHash != first.Status.KeyHash || ak.Status.Revision != 1 || h.key("orders") != key {
		t.Errorf("adopting the orphan minted a new key (revision %d)", ak.Status.Revision)
	}
	if ref := metav1.GetControllerOf(h.secret("orders")); ref == nil || ref.UID != ak.UID {
		t.Errorf("the Secret is not controlled by the new APIKey: %+v", ref)
	}
}

func TestAnExpiredKeyIsNotRevivedByAValidityEdit(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("trial", "validity: 2h\nrotation: {policy: Disabled}")
	h.waitReady("trial")
	h.stepToRequeue(2 * time.Hour)
	h.waitFor("trial", "Expired", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonExpired))

	h.update("trial", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Validity = "30d" })
	ak := h.waitFor("trial", "the edit judged", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Generation == 2 && ak.Status.ObservedGeneration == 2
	})
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c.Reason != string(keywardv1alpha1.ReasonExpired) {
		t.Errorf("Ready %s/%s after lengthening the validity of an expired key", c.Status, c.Reason)
	}
	if !ak.Status.ExpiresAt.Time.Equal(t0.Add(2*time.Hour)) || ak.Status.Revision != 1 {
		t.Errorf("expiry %v revision %d; want the original expiry and no new key", ak.Status.ExpiresAt, ak.Status.Revision)
	}
	if got := acceptedBy(ak, h.key("trial"), h.clock.Now()); got != verifier.CodeExpired {
		t.Errorf("the verifier answers %s for the expired key", got)
	}
}

// A namespace editor saves the Secret's record, lets the key expire by moving expiresAt into the past, sets
// the validity back and restores the saved record: a genuine signature over the same revision with the
// later expiry it once had. The key must stay stopped: a minted key's expiry never moves later, and that
// record is tampering, answered with a new key and a SecretTampered event.
func TestARestoredRecordWithALaterExpiryIsTamperingAndNeverRevivesTheKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	// Without automatic rotation, so that nothing but the restored record can bring a key back.
	h.create("orders", "validity: 90d\nrotation: {policy: Disabled}")
	h.waitReady("orders")
	oldKey := h.key("orders")
	saved := map[string]string{}
	for k, v := range h.secret("orders").Annotations {
		if strings.HasPrefix(k, "keyward.dev/") {
			saved[k] = v
		}
	}

	end := metav1.NewTime(h.clock.Now().Add(time.Hour))
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Validity, ak.Spec.ExpiresAt = "", &end })
	h.waitFor("orders", "the earlier expiry", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.ExpiresAt != nil && ak.Status.ExpiresAt.Time.Equal(end.Time)
	})
	h.stepToRequeue(time.Hour)
	h.waitFor("orders", "Expired", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonExpired))

	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Validity, ak.Spec.ExpiresAt = "90d", nil })
	ak := h.waitFor("orders", "the edit judged", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Generation == 3 && ak.Status.ObservedGeneration == 3
	})
	if ak.Status.Revision != 1 || !ak.Status.ExpiresAt.Time.Equal(end.Time) {
		t.Errorf("revision %d expiry %v after the validity edit; a longer validity must not extend a minted key",
			ak.Status.Revision, ak.Status.ExpiresAt)
	}
	if got := acceptedBy(ak, oldKey, h.clock.Now()); got == verifier.CodeValid {
		t.Fatal("a longer validity revived the expired key")
	}

	s := h.secret("orders")
	maps.Copy(s.Annotations, saved)
	if err := env.Client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	ak = h.waitFor("orders", "revision 2", revisionIs(2))
	if ak.Status.LastRotationReason != keywardv1alpha1.RotationSecretTampered {
		t.Errorf("reason %q, want SecretTampered", ak.Status.LastRotationReason)
	}
	if got := acceptedBy(ak, oldKey, h.clock.Now()); got == verifier.CodeValid {
		t.Errorf("the restored record revived the expired key: %s", got)
	}
	ev := h.waitForEvent(keywardv1alpha1.EventSecretTampered, 1)[0]
	if !strings.Contains(ev.Note, keyrecord.AnnotationExpiresAt) {
		t.Errorf("the SecretTampered event does not name %s: %q", keyrecord.AnnotationExpiresAt, ev.Note)
	}
	h.assertNoKeyMaterialLeaked()
}

func TestCalendarExpiryIsComputedInUTCWhateverTheClocksZone(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	// 23:00 UTC on 30 January is 01:00 on 31 January at UTC+2: a month later is 28 February at 23:00 UTC,
	// but 27 February at 23:00 UTC if computed in local time.
	h.clock.SetTime(time.Date(2026, 1, 31, 1, 0, 0, 0, time.FixedZone("UTC+2", 2*3600)))
	h.startManager(managerOptions{})
	h.create("orders", "validity: 1mo")
	ak := h.waitReady("orders")
	want := time.Date(2026, 2, 28, 23, 0, 0, 0, time.UTC)
	if !ak.Status.ExpiresAt.Time.Equal(want) {
		t.Fatalf("expiry %v, want %v", ak.Status.ExpiresAt.UTC(), want)
	}
	before := h.writes.snapshot()
	h.touch("orders")
	if ak := h.get("orders"); !ak.Status.ExpiresAt.Time.Equal(want) || h.writes.snapshot()["secrets"] != before["secrets"] {
		t.Errorf("the next reconcile moved the expiry to %v or rewrote the Secret", ak.Status.ExpiresAt.UTC())
	}
}

func TestAFarFixedExpiryStallsAndIsLookedAtAgainWhenTheClockMakesItValid(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	// The admission policy bounds expiresAt by the APIKey's real creation time; the controller judges it
	// against its own clock, which here runs ten years behind the expiry minus half a day.
	expiresAt := time.Now().UTC().AddDate(9, 0, 0).Truncate(24 * time.Hour)
	h.clock.SetTime(expiresAt.AddDate(-10, 0, 0).Add(-12 * time.Hour))
	h.startManager(managerOptions{})
	h.create("trial", "expiresAt: "+expiresAt.Format(time.RFC3339))
	ak := h.waitFor("trial", "InvalidSpec", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonInvalidSpec))
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled); c == nil || !strings.Contains(c.Message, "spec.expiresAt") {
		t.Errorf("Stalled %+v does not name spec.expiresAt", c)
	}
	if ak.Status.Revision != 0 {
		t.Fatal("a key was minted for a spec judged invalid")
	}
	h.stepToRequeue(12 * time.Hour) // the next UTC midnight
	if ak := h.waitReady("trial"); !ak.Status.ExpiresAt.Time.Equal(expiresAt) {
		t.Errorf("expiry %v", ak.Status.ExpiresAt)
	}
}

func TestObservedGenerationMovesOnlyWhenTheKeyWasJudged(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	h.waitReady("orders")

	h.startManager(managerOptions{wrapClient: func(c client.Client, _ context.CancelFunc) client.Client {
		return failingSecretReads{Client: c}
	}})
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Description = "edited while Secrets cannot be read" })
	ak := h.waitFor("orders", "Reconciling", func(ak *keywardv1alpha1.APIKey) bool {
		return meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReconciling)
	})
	ready := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
	if ak.Generation != 2 || ak.Status.ObservedGeneration != 1 || ready.ObservedGeneration != 1 {
		t.Errorf("generation %d, observedGeneration %d, Ready's %d; a failed reconcile must not claim the new generation",
			ak.Generation, ak.Status.ObservedGeneration, ready.ObservedGeneration)
	}

	h.startManager(managerOptions{})
	h.waitReady("orders") // readyIs checks that both observedGenerations reached 2
}

// failingSecretReads fails every read of a Secret, like an API server that cannot be reached.
type failingSecretReads struct{ client.Client }

func (c failingSecretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return errors.New("simulated outage reading Secrets")
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// Whoever may write Secrets in a namespace can label one as Keyward's, and the manager caches every Secret
// with that label: the cache, as the manager builds it, holds only what Keyward reads and writes of it.
func TestTheManagersCacheHoldsNoMoreOfALabelledSecretThanKeywardReads(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	bulk := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bulk", Namespace: ns,
		Labels:      map[string]string{keywardv1alpha1.APIKeyNameLabel: "ghost", "tenant": "x"},
		Annotations: map[string]string{"tenant.example/blob": strings.Repeat("a", 200<<10)}},
		Data: map[string][]byte{"blob": make([]byte, 700<<10), keyrecord.DataAPIKey: make([]byte, 100<<10)}}
	if err := env.Client.Create(context.Background(), bulk); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(testenv.ImpersonatingConfig(env.Config, testenv.ManagerUser), func() cache.Options {
		opts := managerconfig.CacheOptions(ns)
		opts.Scheme = testenv.Scheme
		return opts
	}())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Start(ctx) }()
	got := &corev1.Secret{}
	eventually.Succeeds(t, "the manager's cache shows the labelled Secret", func() error {
		return c.Get(ctx, client.ObjectKeyFromObject(bulk), got)
	})
	size := 0
	for k, v := range got.Data {
		size += len(k) + len(v)
	}
	for k, v := range got.Annotations {
		size += len(k) + len(v)
	}
	if size > 8<<10 || got.Labels["tenant"] != "" {
		t.Errorf("the cached copy keeps %d bytes of data and annotations (labels %v); want what Keyward reads, bounded", size, got.Labels)
	}
}

// The manager writes a Secret with a merge patch from its trimmed copy: what others put in it (data keys,
// annotations, labels, owners) stays through a rotation.
func TestARotationLeavesWhatOthersPutInTheSecret(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	h.waitReady("orders")
	s := h.secret("orders")
	s.Data["ca.crt"] = []byte("theirs")
	s.Annotations["team.example/note"] = "keep me"
	s.Labels["team.example/tier"] = "gold"
	s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "cm", UID: "cm-uid"})
	if err := env.Client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	h.waitFor("orders", "revision 2", revisionIs(2))
	s = h.secret("orders")
	if string(s.Data["ca.crt"]) != "theirs" || s.Annotations["team.example/note"] != "keep me" || s.Labels["team.example/tier"] != "gold" ||
		len(s.OwnerReferences) != 2 {
		t.Errorf("a rotation dropped what others put in the Secret: data %v, annotations %v, labels %v, owners %v",
			slices.Collect(maps.Keys(s.Data)), s.Annotations, s.Labels, s.OwnerReferences)
	}
}
