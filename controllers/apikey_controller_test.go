package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestMintsTheFirstKeyIntoAnOwnedSecretAndRecordsOnlyItsHash(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", `
secretName: orders-key
prefix: ord
secretTemplate:
  labels: {team: billing}
  annotations: {reloader.stakater.com/match: "true"}
scopes: [orders:read]`)
	ak := h.waitReady("orders")
	s := h.secret("orders-key")
	key := string(s.Data[keyrecord.DataAPIKey])

	if p, err := keys.Parse(key); err != nil || p.Prefix != "ord" {
		t.Fatalf("the Secret holds no valid ord_ key: %v", err)
	}
	st := ak.Status
	if st.KeyHash != keys.Hash(key) || st.KeyID != keys.Sum(key).ID() || st.KeyHint != keys.Hint(key) {
		t.Errorf("status hash/id/hint do not describe the Secret's key: %+v", st)
	}
	if st.Revision != 1 || st.LastRotationReason != keywardv1alpha1.RotationInitial || st.SecretName != "orders-key" {
		t.Errorf("revision %d reason %q secret %q; want 1, Initial, orders-key", st.Revision, st.LastRotationReason, st.SecretName)
	}
	wantExpiry, wantRenewal := t0.Add(90*24*time.Hour), t0.Add(60*24*time.Hour)
	if !st.IssuedAt.Time.Equal(t0) || !st.ExpiresAt.Time.Equal(wantExpiry) || !st.RenewalTime.Time.Equal(wantRenewal) {
		t.Errorf("issued %v expires %v renews %v; want %v, %v, %v", st.IssuedAt, st.ExpiresAt, st.RenewalTime, t0, wantExpiry, wantRenewal)
	}
	if got := string(s.Data[keyrecord.DataKeyID]); got != st.KeyID {
		t.Errorf("Secret key-id %q, status keyID %q", got, st.KeyID)
	}
	if got := string(s.Data[keyrecord.DataExpiresAt]); got != wantExpiry.Format(time.RFC3339) {
		t.Errorf("Secret expires-at %q", got)
	}
	if s.Labels["team"] != "billing" || s.Annotations["reloader.stakater.com/match"] != "true" ||
		s.Labels[keywardv1alpha1.APIKeyNameLabel] != "orders" {
		t.Errorf("Secret metadata %v %v", s.Labels, s.Annotations)
	}
	if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != ak.UID {
		t.Errorf("the Secret is not controlled by the APIKey: %+v", s.OwnerReferences)
	}
	for _, c := range []string{keywardv1alpha1.ConditionReconciling, keywardv1alpha1.ConditionStalled} {
		if meta.FindStatusCondition(st.Conditions, c) != nil {
			t.Errorf("condition %s is present while false", c)
		}
	}
	if ready := meta.FindStatusCondition(st.Conditions, keywardv1alpha1.ConditionReady); !ready.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready transition time %v does not come from the injected clock", ready.LastTransitionTime)
	}
	if evs := h.waitForEvent(keywardv1alpha1.EventKeyCreated, 1); !strings.Contains(evs[0].Note, st.KeyID) {
		t.Errorf("KeyCreated event %q does not name the key ID", evs[0].Note)
	}
}

func TestEditsThatAreNoRotationReasonNeverMintAKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "secretTemplate: {labels: {team: billing, tier: gold}}")
	before := h.waitReady("orders")
	key := h.key("orders")

	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Description = "now with a description"
		ak.Spec.DisplayName = "Orders"
		ak.Spec.Scopes = []keywardv1alpha1.Scope{"orders:*"}
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 5, Period: "1s"}
		ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: "https://hooks.example.com", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hook"}}
		ak.Spec.SecretTemplate = &keywardv1alpha1.SecretTemplate{Labels: map[string]string{"team": "payments"}}
	})
	after := h.waitFor("orders", "the edit is observed", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.ObservedGeneration == ak.Generation && ak.Generation > before.Generation
	})
	if after.Status.Revision != 1 || after.Status.KeyHash != before.Status.KeyHash || h.key("orders") != key {
		t.Fatalf("an edit of description, scopes, rate limit, webhook or template minted a new key")
	}
	s := h.secret("orders")
	if s.Labels["team"] != "payments" || s.Labels["tier"] != "" {
		t.Errorf("the Secret's template labels were not updated: %v", s.Labels)
	}
}

func TestRenewsAtTheRenewalInstantAndKeepsThePreviousKeyUntilItsExpiry(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 3h\nrotation: {renewBefore: 1h}")
	first := h.waitReady("orders")
	oldKey := h.key("orders")

	h.waitForRequeueBy(t0.Add(2 * time.Hour))
	h.clock.Step(2*time.Hour - time.Second)
	h.touch("orders")
	if ak := h.get("orders"); ak.Status.Revision != 1 {
		t.Fatalf("rotated one second before the renewal time")
	}
	h.stepToRequeue(time.Second)
	ak := h.waitFor("orders", "revision 2", revisionIs(2))
	if ak.Status.LastRotationReason != keywardv1alpha1.RotationExpiring || !ak.Status.IssuedAt.Time.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("reason %q issued %v", ak.Status.LastRotationReason, ak.Status.IssuedAt)
	}
	if len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyHash != first.Status.KeyHash ||
		!ak.Status.PreviousKeys[0].ValidUntil.Time.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("previous keys %+v; want the first key until its own expiry", ak.Status.PreviousKeys)
	}
	if newKey := h.key("orders"); newKey == oldKey || keys.Hash(newKey) != ak.Status.KeyHash {
		t.Fatal("the Secret does not hold the new key")
	}
	h.waitForEvent(keywardv1alpha1.EventKeyRotated, 1)

	h.stepToRequeue(time.Hour)
	h.waitFor("orders", "the previous key is pruned at its expiry", func(ak *keywardv1alpha1.APIKey) bool {
		return len(ak.Status.PreviousKeys) == 0
	})
	if ak := h.get("orders"); ak.Status.Revision != 2 {
		t.Errorf("revision %d after pruning; pruning must not mint", ak.Status.Revision)
	}
}

func TestManualRotationKeepsThePreviousKeyForTheGracePeriodOnly(t *testing.T) {
	testenv.Need(t)
	for _, tc := range []struct {
		name, grace string
		keepFor     time.Duration
	}{
		{"default grace period of one hour", "", time.Hour},
		{"zero grace period revokes at once", "rotation: {gracePeriod: 0s}", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.startManager(managerOptions{})
			h.create("orders", tc.grace)
			first := h.waitReady("orders")
			h.clock.Step(10 * time.Minute)

			h.update("orders", func(ak *keywardv1alpha1.APIKey) {
				ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "leak-2026-11-24"}
			})
			ak := h.waitFor("orders", "revision 2", revisionIs(2))
			if ak.Status.LastRotationReason != keywardv1alpha1.RotationManual || ak.Status.LastHandledRotateToken != "leak-2026-11-24" {
				t.Errorf("reason %q token %q", ak.Status.LastRotationReason, ak.Status.LastHandledRotateToken)
			}
			if tc.keepFor == 0 {
				if len(ak.Status.PreviousKeys) != 0 {
					t.Errorf("previous keys %+v; want none with a zero grace period", ak.Status.PreviousKeys)
				}
			} else if len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyHash != first.Status.KeyHash ||
				!ak.Status.PreviousKeys[0].ValidUntil.Time.Equal(t0.Add(10*time.Minute+tc.keepFor)) {
				t.Errorf("previous keys %+v; want the first key for %v", ak.Status.PreviousKeys, tc.keepFor)
			}

			// The annotation stays (GitOps keeps applying it): touching anything else must not rotate again.
			h.touch("orders")
			if got := h.get("orders").Status.Revision; got != 2 {
				t.Errorf("revision %d: the same rotate token rotated twice", got)
			}
			if got := h.get("orders").Annotations[keywardv1alpha1.RotateAnnotation]; got != "leak-2026-11-24" {
				t.Errorf("the rotate annotation was changed to %q", got)
			}
		})
	}
}

func TestKeysThatAreNotRenewedExpireWithoutANewKey(t *testing.T) {
	testenv.Need(t)
	for _, tc := range []struct{ name, spec string }{
		{"fixed expiresAt", expiresAt(2 * time.Hour)},
		{"rotation policy Disabled", "validity: 2h\nrotation: {policy: Disabled}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.startManager(managerOptions{})
			h.create("trial", tc.spec)
			ak := h.waitReady("trial")
			if ak.Status.RenewalTime != nil {
				t.Errorf("renewal time %v for a key that is never renewed", ak.Status.RenewalTime)
			}
			h.stepToRequeue(2 * time.Hour)
			ak = h.waitFor("trial", "Ready=False Expired", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonExpired))
			if ak.Status.Revision != 1 {
				t.Errorf("revision %d: an expired key was replaced", ak.Status.Revision)
			}
			if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("Stalled is not True for an expired key that only a person can renew")
			}
			h.waitForEvent(keywardv1alpha1.EventKeyExpired, 1)
		})
	}
}

func TestDisablingRejectsAndReenablingRestoresTheSameKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	before := h.waitReady("orders")

	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
	h.waitFor("orders", "Ready=False Disabled", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonDisabled))
	h.waitForEvent(keywardv1alpha1.EventKeyDisabled, 1)

	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = false })
	after := h.waitReady("orders")
	if after.Status.KeyHash != before.Status.KeyHash || after.Status.Revision != 1 {
		t.Error("re-enabling minted a new key")
	}
	h.waitForEvent(keywardv1alpha1.EventKeyEnabled, 1)
}

func TestADeletedSecretIsRecreatedWithANewKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	first := h.waitReady("orders")
	h.key("orders")
	h.clock.Step(time.Minute)

	if err := env.Client.Delete(context.Background(), h.secret("orders")); err != nil {
		t.Fatal(err)
	}
	ak := h.waitFor("orders", "revision 2", revisionIs(2))
	if ak.Status.LastRotationReason != keywardv1alpha1.RotationSecretMissing || keys.Hash(h.key("orders")) != ak.Status.KeyHash {
		t.Errorf("reason %q; the recreated Secret must hold the new key", ak.Status.LastRotationReason)
	}
	if len(ak.Status.PreviousKeys) != 1 || ak.Status.PreviousKeys[0].KeyHash != first.Status.KeyHash {
		t.Errorf("previous keys %+v; the lost key stays valid for the grace period", ak.Status.PreviousKeys)
	}
	h.waitForEvent(keywardv1alpha1.EventSecretRecreated, 1)
}

func TestACrashBetweenSecretAndStatusMintsNoSecondKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	// The first manager writes the Secret, then "crashes": its status patch fails and it stops.
	crashed := make(chan struct{})
	h.startManager(managerOptions{wrapClient: func(c client.Client, stop context.CancelFunc) client.Client {
		return crashingStatusClient{Client: c, crash: func() {
			select {
			case <-crashed:
			default:
				close(crashed)
				stop()
			}
		}}
	}})
	h.create("orders", "")
	eventually.Receive(t, "the manager reaches the status patch and crashes", crashed)
	h.stopManager()
	key := h.key("orders")
	if ak := h.get("orders"); ak.Status.Revision != 0 || ak.Status.KeyHash != "" {
		t.Fatalf("status was written despite the crash: %+v", ak.Status)
	}

	h.startManager(managerOptions{})
	ak := h.waitReady("orders")
	if h.key("orders") != key || ak.Status.KeyHash != keys.Hash(key) || ak.Status.Revision != 1 {
		t.Errorf("after the restart: revision %d; the Secret's key must be kept and recorded, not replaced", ak.Status.Revision)
	}
	if ak.Status.LastRotationReason != keywardv1alpha1.RotationInitial {
		t.Errorf("reason %q, want Initial from the Secret", ak.Status.LastRotationReason)
	}
}

func TestRestartingTheManagerFiveTimesNeverRotates(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	first := h.waitReady("orders")
	key := h.key("orders")
	for i := range 5 {
		h.startManager(managerOptions{}) // stops the running one first
		h.clock.Step(time.Hour)
		h.waitReconciled("orders") // the new manager has reconciled the APIKey it listed
		ak := h.get("orders")
		if ak.Status.Revision != 1 || ak.Status.KeyHash != first.Status.KeyHash || h.key("orders") != key {
			t.Fatalf("restart %d changed the key: revision %d", i+1, ak.Status.Revision)
		}
	}
}

func (h *harness) waitForDeletion(name string) {
	h.t.Helper()
	eventually.Succeeds(h.t, "APIKey "+name+" is deleted", func() error {
		err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: name}, &keywardv1alpha1.APIKey{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return errors.New("it still exists")
		}
		return err
	})
}

func TestASecretKeywardDoesNotOwnIsNeverTouchedAndTheConflictClearsByItself(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: h.ns, Labels: map[string]string{"owner": "someone"}},
		Data:       map[string][]byte{"password": []byte("theirs")},
	}
	if err := env.Client.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	h.startManager(managerOptions{})
	h.create("orders", "")
	ak := h.waitFor("orders", "Stalled SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, "Keyward does not own it") {
		t.Errorf("Stalled condition %+v", c)
	}
	h.waitForEvent(keywardv1alpha1.EventSecretConflict, 1)
	if s := h.secret("orders"); s.ResourceVersion != foreign.ResourceVersion {
		t.Fatalf("the foreign Secret was modified")
	}

	if err := env.Client.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	h.stepToRequeue(DefaultConflictRecheckInterval)
	ak = h.waitReady("orders")
	if ak.Status.Revision != 1 || meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled) != nil {
		t.Errorf("after the conflict cleared: revision %d, conditions %+v", ak.Status.Revision, ak.Status.Conditions)
	}
}

// A conflict with a Secret Keyward does not own (and so does not cache) costs one read per look, and the
// looks back off as the conflict lasts: 10 idle APIKeys in conflict for an hour cost 10 x 8 reads, where a
// look every 30 s with a create and a read each cost 10 x 240 requests.
func TestALastingConflictBacksOffAndCostsOneReadPerLook(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	const n = 10
	for i := range n {
		name := fmt.Sprintf("taken-%d", i)
		if err := env.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns}}); err != nil {
			t.Fatal(err)
		}
		h.create(name, "")
	}
	for i := range n {
		h.waitFor(fmt.Sprintf("taken-%d", i), "Stalled SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	}
	h.waitReconciled("taken-0")
	start, writesBefore := h.writes.requests.Load(), h.writes.snapshot()
	var looks []time.Duration
	for elapsed := time.Duration(0); elapsed < time.Hour; {
		before := h.clock.Now()
		var next time.Time
		// Every APIKey has looked and scheduled its next look: proof that the previous step's reconciles ran.
		eventually.Succeeds(t, "every APIKey in conflict schedules its next look", func() error {
			var scheduled int
			if scheduled, next = h.queue.Load().scheduledAfter(before); scheduled < n {
				return fmt.Errorf("%d of %d looks scheduled", scheduled, n)
			}
			return nil
		})
		h.clock.SetTime(next)
		elapsed += next.Sub(before)
		looks = append(looks, next.Sub(before))
	}
	eventually.Succeeds(t, "the last looks are done", func() error {
		if scheduled, _ := h.queue.Load().scheduledAfter(h.clock.Now()); scheduled < n || !h.queue.Load().idle() {
			return fmt.Errorf("%d of %d looks scheduled", scheduled, n)
		}
		return nil
	})
	requests := h.writes.requests.Load() - start
	// Each look: one read of the Secret per APIKey.
	if len(looks) > 9 || requests > int64(len(looks)*n) {
		t.Errorf("%d looks in an hour (intervals %v), %d requests; want a back-off that doubles", len(looks), looks, requests)
	}
	if snap := h.writes.snapshot(); snap["secrets"] != writesBefore["secrets"] {
		t.Errorf("the manager tried to write Secrets %d times while in conflict", snap["secrets"]-writesBefore["secrets"])
	}
	t.Logf("%d APIKeys in conflict for an hour: %d looks (intervals %v), %d requests", n, len(looks), looks, requests)
	// Whoever resolves the conflict asks for a look at once.
	if err := env.Client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "taken-0", Namespace: h.ns}}); err != nil {
		t.Fatal(err)
	}
	h.update("taken-0", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RequestedAtAnnotation: "now"}
	})
	h.waitReady("taken-0")
}

func TestASecondAPIKeyNamingTheSameSecretConflictsWhileTheFirstKeepsWorking(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("first", "secretName: shared")
	first := h.waitReady("first")
	h.create("second", "secretName: shared")
	second := h.waitFor("second", "SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	if c := meta.FindStatusCondition(second.Status.Conditions, keywardv1alpha1.ConditionReady); !strings.Contains(c.Message, "belongs to APIKey first") {
		t.Errorf("conflict message %q does not name the other APIKey", c.Message)
	}
	h.touch("first")
	if ak := h.get("first"); ak.Status.KeyHash != first.Status.KeyHash || ak.Status.Revision != 1 {
		t.Fatal("the first APIKey's key changed because of the second")
	}

	// Once the first APIKey and its Secret are gone, the second takes over without waiting for a recheck.
	if err := env.Client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), h.secret("shared")); err != nil {
		t.Fatal(err)
	}
	ak := h.waitReady("second")
	if owner := keyrecord.SecretOwner(h.secret("shared")); owner != "second" {
		t.Errorf("the shared Secret belongs to %q", owner)
	}
	if ak.Status.Revision != 1 {
		t.Errorf("revision %d", ak.Status.Revision)
	}
}

func TestAReconcileThatChangesNothingWritesNothing(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	h.waitReady("orders")
	h.waitReconciled("orders") // the status patch is its own; its echo is skipped
	before := h.writes.snapshot()
	if before["secrets"] != 1 || before["apikeys/status"] != 1 {
		t.Errorf("writes for a new key: %v; want one Secret create and one status patch", before)
	}
	if written := h.writes.keysWritten(); len(written) != 1 || !written[h.key("orders")] {
		t.Errorf("the write counter saw %d keys written; want exactly the Secret's key", len(written))
	}
	// An annotation edit triggers a reconcile that has nothing to do.
	h.clock.Step(time.Hour)
	h.touch("orders")
	after := h.writes.snapshot()
	for _, r := range []string{"secrets", "apikeys/status"} {
		if after[r] != before[r] {
			t.Errorf("idle reconciles wrote %s: %d → %d", r, before[r], after[r])
		}
	}
}

func TestEditingTheValidityMovesTheExpiryWithoutANewKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 90d")
	h.waitReady("orders")
	key := h.key("orders")
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Validity = "30d" })
	ak := h.waitFor("orders", "expiry moved", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.ExpiresAt != nil && ak.Status.ExpiresAt.Time.Equal(t0.Add(30*24*time.Hour))
	})
	if ak.Status.Revision != 1 || h.key("orders") != key {
		t.Errorf("a validity edit minted a new key")
	}
	if got := string(h.secret("orders").Data[keyrecord.DataExpiresAt]); got != t0.Add(30*24*time.Hour).Format(time.RFC3339) {
		t.Errorf("the Secret's expires-at is %q", got)
	}
}

// crashingStatusClient fails every status patch after calling crash, like a process that dies between
// writing the Secret and writing status.
type crashingStatusClient struct {
	client.Client
	crash func()
}

func (c crashingStatusClient) Status() client.SubResourceWriter {
	return crashingStatusWriter{SubResourceWriter: c.Client.Status(), crash: c.crash}
}

type crashingStatusWriter struct {
	client.SubResourceWriter
	crash func()
}

func (w crashingStatusWriter) Patch(context.Context, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
	w.crash()
	return errors.New("simulated crash before the status patch")
}

func TestTheManagerCachesOnlyKeywardSecrets(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := managerconfig.CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	opts.Scheme = testenv.Scheme
	c, err := cache.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "ours", Namespace: ns, Labels: map[string]string{keywardv1alpha1.APIKeyNameLabel: "orders"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: ns}},
	} {
		if err := env.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}
	// Every Secret existed before the cache started, so the synced cache holds all it will ever hold of them.
	var list corev1.SecretList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "ours" {
		names := []string{}
		for _, s := range list.Items {
			names = append(names, s.Name)
		}
		t.Errorf("the cache holds Secrets %v; want only the Keyward-labelled one", names)
	}
}

func TestASecretWhoseLabelWasRemovedIsRelabelledNotTreatedAsForeign(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "")
	first := h.waitReady("orders")
	key := h.key("orders")

	s := h.secret("orders")
	delete(s.Labels, keywardv1alpha1.APIKeyNameLabel)
	if err := env.Client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually.Succeeds(t, "the Secret's label is restored", func() error {
		if owner := keyrecord.SecretOwner(h.secret("orders")); owner != "orders" {
			return fmt.Errorf("the Secret is labelled for %q", owner)
		}
		return nil
	})
	h.touch("orders")
	ak := h.waitReady("orders")
	if ak.Status.KeyHash != first.Status.KeyHash || h.key("orders") != key {
		t.Errorf("the key changed after its Secret lost a label (revision %d)", ak.Status.Revision)
	}
}

// An owner reference is whatever the Secret's writer put there. Written to forge a condition line and to
// drive the terminal of whoever reads the condition or the event (CR LF, a forged "Ready=True KeyReady",
// an OSC 52 clipboard write, a right-to-left override), it reaches neither verbatim.
func TestTenantTextInAConflictIsQuotedInTheConditionAndTheEvent(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	forged := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: h.ns,
		Labels: map[string]string{keywardv1alpha1.APIKeyNameLabel: "orders"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "example.com/v1", Kind: "X\r\nReady=True KeyReady",
			Name: "n\x1b]52;c;ZXZpbA==\x07\u202e", UID: "u", Controller: ptr.To(true)}}}}
	if err := env.Client.Create(context.Background(), forged); err != nil {
		t.Fatal(err)
	}
	h.startManager(managerOptions{})
	h.create("orders", "")
	ak := h.waitFor("orders", "Stalled SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	ev := h.waitForEvent(keywardv1alpha1.EventSecretConflict, 1)[0]
	c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
	for what, text := range map[string]string{"the Ready condition": c.Message, "the SecretConflict event": ev.Note} {
		if strings.ContainsAny(text, "\r\n\x1b\x07\u202e") {
			t.Errorf("%s carries the tenant's control characters: %q", what, text)
		}
		if !strings.Contains(text, `"X\r\nReady=True KeyReady"`) {
			t.Errorf("%s does not quote the owner's kind: %q", what, text)
		}
	}
}
