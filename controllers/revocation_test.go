package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/policy"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// A leaked key must stop whatever someone who may write Secrets did to its Secret first: made it immutable
// (no new key can be written there) or relabelled it to another APIKey (Keyward may no longer use it).
func TestRevocationLandsInStatusWhateverStateTheSecretIsIn(t *testing.T) {
	testenv.Need(t)
	type breakage struct {
		name string
		// apply breaks the Secret; repair makes it writable again.
		apply, repair func(h *harness)
		reason        keywardv1alpha1.ConditionReason
		// names is what Ready's message and an event must say about the Secret.
		names string
	}
	breakages := []breakage{
		{name: "immutable",
			apply: func(h *harness) {
				s := h.secret("orders")
				s.Immutable = ptr.To(true)
				if err := env.Client.Update(context.Background(), s); err != nil {
					h.t.Fatal(err)
				}
			},
			// An immutable Secret can only be deleted; Keyward writes the key into a new one.
			repair: func(h *harness) {
				if err := env.Client.Delete(context.Background(), h.secret("orders")); err != nil {
					h.t.Fatal(err)
				}
			},
			reason: keywardv1alpha1.ReasonSecretUnwritable, names: "immutable"},
		{name: "relabelled to another APIKey",
			apply:  func(h *harness) { relabel(h, "payments") },
			repair: func(h *harness) { relabel(h, "orders") },
			reason: keywardv1alpha1.ReasonSecretConflict, names: "belongs to APIKey payments"},
	}
	type action struct {
		name string
		do   func(h *harness, keyID string) *keywardv1alpha1.APIKey
		// refused is what the verifier answers for the leaked key afterwards; withdrawn: status shows no key.
		refused   verifier.Code
		withdrawn bool
	}
	actions := []action{
		{name: "revoked by ID", refused: verifier.CodeNotFound, withdrawn: true,
			do: func(h *harness, keyID string) *keywardv1alpha1.APIKey {
				return h.update("orders", func(ak *keywardv1alpha1.APIKey) {
					ak.Annotations = map[string]string{keywardv1alpha1.RevokeAnnotation: keyID}
				})
			}},
		{name: "rotated with a zero grace period", refused: verifier.CodeNotFound, withdrawn: true,
			do: func(h *harness, _ string) *keywardv1alpha1.APIKey {
				return h.update("orders", func(ak *keywardv1alpha1.APIKey) {
					ak.Spec.Rotation = &keywardv1alpha1.RotationSpec{GracePeriod: "0s"}
					ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "leaked"}
				})
			}},
		{name: "disabled", refused: verifier.CodeDisabled,
			do: func(h *harness, _ string) *keywardv1alpha1.APIKey {
				return h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
			}},
	}
	for _, b := range breakages {
		for _, a := range actions {
			t.Run(b.name+"/"+a.name, func(t *testing.T) {
				h := newHarness(t)
				h.startManager(managerOptions{})
				h.create("orders", "validity: 30d")
				first := h.waitReady("orders")
				leaked := h.key("orders")

				b.apply(h)
				h.waitFor("orders", "Ready says the Secret is "+b.name, readyIs(metav1.ConditionFalse, b.reason))

				// The first reconcile that sees the request puts it into status: no retry, no back-off.
				asked := a.do(h, first.Status.KeyID)
				h.waitReconciledAt("orders", asked.ResourceVersion)
				ak := h.get("orders")
				if got := acceptedBy(ak, leaked, h.clock.Now()); got != a.refused {
					t.Fatalf("the verifier answers %s for the leaked key, want %s; status %+v", got, a.refused, ak.Status)
				}
				ready := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
				if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != string(b.reason) || !strings.Contains(ready.Message, b.names) {
					t.Errorf("Ready %+v does not say that the Secret is %s", ready, b.names)
				}
				if a.withdrawn {
					if ak.Status.KeyHash != "" || ak.Status.Revision != first.Status.Revision+1 {
						t.Errorf("status shows key %q at revision %d; want no key at revision %d", ak.Status.KeyID, ak.Status.Revision, first.Status.Revision+1)
					}
					ev := h.waitForEvent(keywardv1alpha1.EventKeyWithdrawn, 1)[0]
					if !strings.Contains(ev.Note, first.Status.KeyID) || !strings.Contains(ev.Note, b.names) {
						t.Errorf("the KeyWithdrawn event %q does not name the key and what is wrong with the Secret", ev.Note)
					}
				}
				if b.reason == keywardv1alpha1.ReasonSecretUnwritable && !eventSays(h.waitForEvent(keywardv1alpha1.EventSecretUnwritable, 1), "immutable") {
					t.Error("no SecretUnwritable event says the Secret is immutable")
				}

				// Once the Secret can be written again, the new key follows and the leaked one stays refused.
				b.repair(h)
				want := readyIs(metav1.ConditionTrue, keywardv1alpha1.ReasonKeyReady)
				if !a.withdrawn {
					want = readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonDisabled)
				}
				ak = h.waitFor("orders", "the Secret is used again", func(ak *keywardv1alpha1.APIKey) bool {
					return want(ak) && ak.Status.KeyHash != "" && (!a.withdrawn || ak.Status.KeyHash != first.Status.KeyHash)
				})
				fresh := h.key("orders")
				if keys.Hash(fresh) != ak.Status.KeyHash {
					t.Fatalf("the Secret's key is not the one status shows")
				}
				if got := acceptedBy(ak, leaked, h.clock.Now()); got != a.refused {
					t.Errorf("after the repair the leaked key is %s, want %s", got, a.refused)
				}
				if got := acceptedBy(ak, fresh, h.clock.Now()); a.withdrawn && got != verifier.CodeValid {
					t.Errorf("the new key is %s", got)
				}
				h.assertNoKeyMaterialLeaked()
			})
		}
	}
}

// relabel points the Secret of orders at another APIKey, as someone who may patch Secrets could.
func relabel(h *harness, to string) {
	h.t.Helper()
	s := h.secret("orders")
	s.Labels[keywardv1alpha1.APIKeyNameLabel] = to
	if err := env.Client.Update(context.Background(), s); err != nil {
		h.t.Fatal(err)
	}
}

func eventSays(evs []eventsv1.Event, text string) bool {
	for _, e := range evs {
		if strings.Contains(e.Note, text) {
			return true
		}
	}
	return false
}

// Revisions restart at 1 for a re-created APIKey, so only the UID in the signature tells the record of a
// deleted APIKey from one of its successor's.
func TestARecordOfADeletedAPIKeyIsRefusedByItsSuccessorOfTheSameName(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 30d")
	h.waitReady("orders")
	for i := range 2 {
		h.update("orders", func(ak *keywardv1alpha1.APIKey) {
			ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: fmt.Sprint("r", i)}
		})
		h.waitFor("orders", "the rotation", revisionIs(int64(i+2)))
	}
	saved := h.secret("orders")
	old := string(saved.Data[keyrecord.DataAPIKey])

	// Delete the APIKey and, as the garbage collector would, its Secret; then re-create it.
	ctx := context.Background()
	if err := env.Client.Delete(ctx, h.get("orders")); err != nil {
		t.Fatal(err)
	}
	h.waitForDeletion("orders")
	if err := env.Client.Delete(ctx, saved); err != nil {
		t.Fatal(err)
	}
	h.create("orders", "validity: 30d")
	successor := h.waitReady("orders")
	if successor.Status.Revision != 1 {
		t.Fatalf("the successor starts at revision %d", successor.Status.Revision)
	}

	// Someone who may write Secrets puts the saved record (revision 3, signed by Keyward) back.
	s := h.secret("orders")
	for k, v := range saved.Annotations {
		if strings.HasPrefix(k, "keyward.dev/") {
			s.Annotations[k] = v
		}
	}
	s.Data = saved.Data
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	ev := h.waitForEvent(keywardv1alpha1.EventSecretTampered, 1)[0]
	if !strings.Contains(ev.Note, keyrecord.AnnotationSignature) && !strings.Contains(ev.Note, "keyward.dev/") {
		t.Errorf("the SecretTampered event %q does not name what was changed", ev.Note)
	}
	ak := h.waitFor("orders", "a new key replaces the planted one", revisionIs(2))
	if got := acceptedBy(ak, old, h.clock.Now()); got != verifier.CodeNotFound {
		t.Errorf("the deleted APIKey's key is %s for its successor", got)
	}
	if h.key("orders") == old {
		t.Error("the Secret still holds the deleted APIKey's key")
	}
}

func TestAHundredRotationsInARowKeepTheSecretSmallAndTheKeyRenewable(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 30d\nrotation: {renewBefore: 10d, gracePeriod: 1d}")
	h.waitReady("orders")
	const rotations = 100
	for i := range rotations {
		h.update("orders", func(ak *keywardv1alpha1.APIKey) {
			ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: fmt.Sprint("rotation-", i)}
		})
		h.waitFor("orders", fmt.Sprint("rotation ", i+1), revisionIs(int64(i+2)))
	}
	ak := h.waitReady("orders")
	if n := len(ak.Status.PreviousKeys); n != policy.MaxPreviousKeys {
		t.Errorf("status lists %d previous keys after %d rotations within their grace period; want the cap, %d", n, rotations, policy.MaxPreviousKeys)
	}
	s := h.secret("orders")
	size := 0
	for k, v := range s.Annotations {
		size += len(k) + len(v)
	}
	if size > 4<<10 {
		t.Errorf("the Secret's annotations hold %d bytes after %d rotations", size, rotations)
	}
	if !eventSays(h.waitForEvent(keywardv1alpha1.EventPreviousKeysDropped, 1), "oldest") {
		t.Error("no PreviousKeysDropped event names the keys it dropped")
	}

	// The record stays writable: the renewal 20 days on mints the next key.
	h.stepToRequeue(20 * 24 * time.Hour)
	renewed := h.waitFor("orders", "the renewal", revisionIs(rotations+2))
	if renewed.Status.LastRotationReason != keywardv1alpha1.RotationExpiring {
		t.Errorf("reason %q, want Expiring", renewed.Status.LastRotationReason)
	}
	eventually.Succeeds(t, "the renewed key is in the Secret", func() error {
		if keys.Hash(h.key("orders")) != renewed.Status.KeyHash {
			return fmt.Errorf("the Secret holds another key")
		}
		return nil
	})
}
