package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/delivery"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// receiver is an HTTPS endpoint on loopback with a self-signed certificate, as a team's receiver would be.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	got    []received
	// answer decides the status of each request (n counts requests from 1); 200 when nil.
	answer atomic.Pointer[func(n int) int]
}

type received struct {
	header http.Header
	body   []byte
	parsed notify.Body
	status int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("receiver secret, thirty-two bytes"))}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.got) + 1
		status := http.StatusOK
		if f := r.answer.Load(); f != nil {
			status = (*f)(n)
		}
		d := received{header: req.Header.Clone(), body: body, status: status}
		_ = json.Unmarshal(body, &d.parsed)
		r.got = append(r.got, d)
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) respond(f func(n int) int) { r.answer.Store(&f) }

func (r *receiver) caBundle() string { return caBundleOf(r.srv) }

func (r *receiver) deliveries() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// waitFor waits until the receiver has accepted (2xx) events of these types, in this order after any it
// accepted before, and returns those deliveries.
func (r *receiver) waitFor(types ...string) []received {
	r.t.Helper()
	return eventually.Get(r.t, fmt.Sprintf("the receiver accepts %v last", types), func() ([]received, error) {
		var accepted []received
		for _, d := range r.deliveries() {
			if d.status < 300 {
				accepted = append(accepted, d)
			}
		}
		if len(accepted) >= len(types) {
			tail := accepted[len(accepted)-len(types):]
			var got []string
			for _, d := range tail {
				got = append(got, d.parsed.Type)
			}
			if strings.Join(got, ",") == strings.Join(types, ",") {
				return tail, nil
			}
		}
		var all []string
		for _, d := range r.deliveries() {
			all = append(all, fmt.Sprintf("%s:%d", d.parsed.Type, d.status))
		}
		return nil, fmt.Errorf("it has %v", all)
	})
}

// verify checks a delivery as a receiver would, with the Standard Webhooks reference library. The test's
// fake clock is far from real time, so the timestamp is checked against that clock instead of the library's
// five-minute window.
func (r *receiver) verify(d received, now time.Time) {
	r.t.Helper()
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := wh.VerifyIgnoringTimestamp(d.body, d.header); err != nil {
		r.t.Errorf("%s: the reference library rejects the signature: %v", d.parsed.Type, err)
	}
	if ts := d.header.Get(notify.HeaderTimestamp); ts == "" || d.header.Get(notify.HeaderID) == "" {
		r.t.Errorf("%s: headers %v", d.parsed.Type, d.header)
	}
}

func (h *harness) webhookSpec(r *receiver, mutate ...func(*keywardv1alpha1.WebhookSpec)) func(*keywardv1alpha1.APIKey) {
	if err := env.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: h.ns},
		Data: map[string][]byte{"secret": []byte(r.secret)}}); err != nil && !strings.Contains(err.Error(), "already exists") {
		h.t.Fatal(err)
	}
	return func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: r.srv.URL + "/keyward", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hooks"},
			CABundle: r.caBundle()}
		for _, m := range mutate {
			m(ak.Spec.Webhook)
		}
	}
}

// waitAttemptFailed waits until status.webhook reports the failures-th failed attempt with an error
// containing what. (The failure count alone is no proof: it is written before an attempt is dialled.)
func (h *harness) waitAttemptFailed(name string, failures int32, what string) *keywardv1alpha1.APIKey {
	h.t.Helper()
	return h.waitFor(name, fmt.Sprintf("attempt %d failed with %q", failures, what), func(ak *keywardv1alpha1.APIKey) bool {
		w := ak.Status.Webhook
		return w != nil && w.ConsecutiveFailures == failures && strings.Contains(w.LastError, what)
	})
}

// stepWebhookTo moves the fake clock by d once the delivery controller has scheduled a retry by then.
func (h *harness) stepWebhookTo(d time.Duration) {
	h.t.Helper()
	by := h.clock.Now().Add(d)
	eventually.Succeeds(h.t, "the delivery controller schedules a retry by "+by.Format(time.RFC3339), func() error {
		if !h.webhookQueue.Load().scheduledBetween(h.clock.Now(), by) {
			return fmt.Errorf("retries scheduled at %v", h.webhookQueue.Load().scheduledTimes())
		}
		return nil
	})
	h.clock.Step(d)
}

func TestEveryLifecycleEventIsDeliveredSignedInOrderAndWithoutKeyMaterial(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "rotation: {gracePeriod: 30m}", h.webhookSpec(rcv))
	first := h.waitReady("orders")
	created := rcv.waitFor("key.created")[0]
	if d := created.parsed.Data; d.Namespace != h.ns || d.Name != "orders" || d.KeyID != first.Status.KeyID || d.Revision != 1 || d.ExpiresAt == "" {
		t.Errorf("key.created data %+v", d)
	}

	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	rotated := rcv.waitFor("key.rotated")[0]
	if d := rotated.parsed.Data; d.PreviousKeyID != first.Status.KeyID || d.PreviousValidUntil != t0.Add(30*time.Minute).Format(time.RFC3339) || d.Revision != 2 {
		t.Errorf("key.rotated data %+v; want the first key until the end of the grace period", d)
	}
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations[keywardv1alpha1.RevokeAnnotation] = first.Status.KeyID
	})
	if d := rcv.waitFor("key.revoked")[0].parsed.Data; len(d.RevokedKeyIDs) != 1 || d.RevokedKeyIDs[0] != first.Status.KeyID {
		t.Errorf("key.revoked data %+v", d)
	}
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
	rcv.waitFor("key.disabled")
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = false })
	rcv.waitFor("key.enabled")
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Annotations[keywardv1alpha1.WebhookTestAnnotation] = "ping-1" })
	if d := rcv.waitFor("webhook.test")[0].parsed.Data; d.Token != "ping-1" {
		t.Errorf("webhook.test data %+v", d)
	}
	ak := h.waitFor("orders", "the test is reported", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook != nil && ak.Status.Webhook.LastTest != nil && ak.Status.Webhook.LastTest.Token == "ping-1" &&
			ak.Status.Webhook.LastTest.Result != delivery.TestUnanswered
	})
	if ak.Status.Webhook.LastTest.Result != "HTTP 200 OK" {
		t.Errorf("lastTest %+v", ak.Status.Webhook.LastTest)
	}

	// A key that no renewal replaces: key.expiring an hour before its fixed expiry, then key.expired.
	h.create("trial", expiresAt(2*time.Hour), h.webhookSpec(rcv, func(w *keywardv1alpha1.WebhookSpec) { w.ExpiringBefore = "1h" }))
	rcv.waitFor("key.created")
	h.stepToRequeue(time.Hour)
	rcv.waitFor("key.expiring")
	h.stepToRequeue(time.Hour)
	rcv.waitFor("key.expired")

	ids := map[string]bool{}
	for _, d := range rcv.deliveries() {
		rcv.verify(d, h.clock.Now())
		id := d.header.Get(notify.HeaderID)
		if ids[id] {
			t.Errorf("webhook-id %s used for two events", id)
			for _, d := range rcv.deliveries() {
				t.Logf("  %s %s %s %d", d.parsed.Data.Name, d.parsed.Type, d.header.Get(notify.HeaderID), d.status)
			}
		}
		ids[id] = true
		text := string(d.body) + strings.Join(d.header.Values(notify.HeaderSignature), "")
		for k := range h.writes.keysWritten() {
			if strings.Contains(text, k) || strings.Contains(text, k[strings.IndexByte(k, '_')+1:][:16]) {
				t.Errorf("%s carries key material", d.parsed.Type)
			}
		}
		if strings.Contains(text, "sha256:") {
			t.Errorf("%s carries a key hash", d.parsed.Type)
		}
	}
	var types []string
	for _, d := range rcv.deliveries() {
		if d.parsed.Data.Name == "orders" {
			types = append(types, d.parsed.Type)
		}
	}
	if got := strings.Join(types, " "); got != "key.created key.rotated key.revoked key.disabled key.enabled webhook.test" {
		t.Errorf("orders' deliveries: %s", got)
	}
	ak = h.waitFor("orders", "the outbox is empty", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook != nil && len(ak.Status.Webhook.Outbox) == 0 && ak.Status.Webhook.DeliveredSequence == 5
	})
	if w := ak.Status.Webhook; w.LastDeliveredRevision != 2 || w.LastDeliveryTime == nil || w.LastError != "" || w.ConsecutiveFailures != 0 {
		t.Errorf("webhook status %+v", w)
	}
}

func TestAFailingReceiverGetsTheSameEventAgainOnTheScheduleAndInOrder(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.respond(func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	ak := h.waitAttemptFailed("orders", 1, "500")
	if w := ak.Status.Webhook; w.NextAttemptTime == nil || !w.NextAttemptTime.Time.Equal(t0.Add(5*time.Second)) || !strings.Contains(w.LastError, "500") {
		t.Errorf("after the first failure: %+v", w)
	}
	h.waitForEvent(EventWebhookFailed, 1)
	// A rotation meanwhile queues behind the undelivered event.
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	h.waitFor("orders", "revision 2", revisionIs(2))
	h.stepWebhookTo(5 * time.Second)
	h.waitAttemptFailed("orders", 2, "500")
	h.stepWebhookTo(5 * time.Minute)
	rcv.waitFor("key.created", "key.rotated")

	all := rcv.deliveries()
	if len(all) != 4 || all[0].header.Get(notify.HeaderID) != all[2].header.Get(notify.HeaderID) ||
		all[1].header.Get(notify.HeaderID) != all[2].header.Get(notify.HeaderID) || string(all[0].body) != string(all[2].body) {
		t.Errorf("the retries of key.created do not carry the same webhook-id and body")
	}
	h.waitFor("orders", "success recorded", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook.ConsecutiveFailures == 0 && ak.Status.Webhook.LastError == "" && ak.Status.Webhook.DeliveredSequence == 2
	})
	if n := len(h.events()[EventWebhookFailed]); n != 1 {
		t.Errorf("%d WebhookFailed events; want one, on the transition to failing", n)
	}
}

func TestAnUndeliveredEventIsDeliveredAfterTheManagerRestarts(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.respond(func(int) int { return http.StatusServiceUnavailable })
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	h.waitAttemptFailed("orders", 1, "503")
	h.stopManager()
	firstID := rcv.deliveries()[0].header.Get(notify.HeaderID)

	rcv.respond(func(int) int { return http.StatusOK })
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.stepWebhookTo(5 * time.Second)
	if got := rcv.waitFor("key.created")[0].header.Get(notify.HeaderID); got != firstID {
		t.Errorf("after the restart the event has webhook-id %s, before %s", got, firstID)
	}
}

func TestALoopbackTargetIsRefusedWithoutTheAllowList(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{}})
	h.create("orders", "", h.webhookSpec(rcv))
	ak := h.waitAttemptFailed("orders", 1, "refused")
	if !strings.Contains(ak.Status.Webhook.LastError, "refused to connect") || !strings.Contains(ak.Status.Webhook.LastError, "--webhook-allowed-cidrs") {
		t.Errorf("lastError %q", ak.Status.Webhook.LastError)
	}
	if ev := h.waitForEvent(EventWebhookRefused, 1)[0]; !strings.Contains(ev.Note, "refused") {
		t.Errorf("event %q", ev.Note)
	}
	if n := len(rcv.deliveries()); n != 0 {
		t.Errorf("the loopback receiver got %d requests", n)
	}
}

func TestA410StopsDeliveryUntilTheWebhookSpecChanges(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.respond(func(int) int { return http.StatusGone })
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	h.waitFor("orders", "gone", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook != nil && ak.Status.Webhook.GoneGeneration == ak.Generation
	})
	// A rotation queues key.rotated; the delivery controller reconciles the APIKey with it and must send nothing.
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "r1"}
	})
	queued := h.waitFor("orders", "revision 2 with key.rotated queued", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Revision == 2 && ak.Status.Webhook != nil && len(ak.Status.Webhook.Outbox) == 2
	})
	h.waitWebhookReconciledAt("orders", queued.ResourceVersion)
	if n := len(rcv.deliveries()); n != 1 {
		t.Errorf("%d requests after a 410; want none after the first", n)
	}
	rcv.respond(func(int) int { return http.StatusOK })
	h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Webhook.URL = rcv.srv.URL + "/keyward/v2" })
	rcv.waitFor("key.created", "key.rotated")
}

func TestDeletingAnAPIKeyAnnouncesItBeforeItGoes(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	ak := h.waitReady("orders")
	if !slices.Contains(ak.Finalizers, keywardv1alpha1.WebhookFinalizer) {
		t.Fatalf("an APIKey with a webhook is not held by %s: %v", keywardv1alpha1.WebhookFinalizer, ak.Finalizers)
	}
	rcv.waitFor("key.created")
	if err := env.Client.Delete(context.Background(), ak); err != nil {
		t.Fatal(err)
	}
	deleted := rcv.waitFor("key.deleted")[0]
	rcv.verify(deleted, h.clock.Now())
	if d := deleted.parsed.Data; d.Name != "orders" || d.KeyID != ak.Status.KeyID {
		t.Errorf("key.deleted data %+v", d)
	}
	h.waitForDeletion("orders")
}

func TestADeletedAPIKeyWhoseWebhookDoesNotSubscribeToKeyDeletedGoesAtOnce(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	// The events of the billing-orders sample: key.deleted is not among them, so nothing is queued on
	// deletion and nothing should hold the APIKey (it was held forever: the queued-at mark alone did not wake
	// the delivery controller).
	h.create("orders", "", h.webhookSpec(rcv, func(w *keywardv1alpha1.WebhookSpec) {
		w.Events = []keywardv1alpha1.WebhookEvent{keywardv1alpha1.WebhookEventKeyCreated, keywardv1alpha1.WebhookEventKeyRotated}
	}))
	rcv.waitFor("key.created")
	ak := h.waitFor("orders", "held", func(ak *keywardv1alpha1.APIKey) bool {
		return slices.Contains(ak.Finalizers, keywardv1alpha1.WebhookFinalizer)
	})
	if err := env.Client.Delete(context.Background(), ak); err != nil {
		t.Fatal(err)
	}
	h.waitForDeletion("orders")
}

func TestADeletionIsHeldNoLongerThanTheTimeoutWhenTheReceiverIsDown(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.respond(func(int) int { return http.StatusServiceUnavailable })
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	ak := h.waitFor("orders", "held", func(ak *keywardv1alpha1.APIKey) bool {
		return slices.Contains(ak.Finalizers, keywardv1alpha1.WebhookFinalizer)
	})
	if err := env.Client.Delete(context.Background(), ak); err != nil {
		t.Fatal(err)
	}
	h.waitFor("orders", "key.deleted queued", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook != nil && ak.Status.Webhook.DeletionQueuedAt != nil
	})
	// Before the bound, a retry fails and the finalizer keeps holding the APIKey. Proof that the reconcile of
	// the retry has finished: it reported the second failure, and the controller is idle since.
	h.stepWebhookTo(5 * time.Second)
	h.waitAttemptFailed("orders", 2, "503")
	h.waitWebhookIdle()
	held := h.get("orders")
	if held.DeletionTimestamp.IsZero() || !slices.Contains(held.Finalizers, keywardv1alpha1.WebhookFinalizer) {
		t.Fatalf("5s into a 5m bound the APIKey is not held: deletion %v, finalizers %v", held.DeletionTimestamp, held.Finalizers)
	}
	if n := len(rcv.deliveries()); n < 2 {
		t.Fatalf("the receiver got %d attempts; want the first and the retry", n)
	}
	// At the bound it goes, although key.deleted was never delivered.
	h.stepWebhookTo(DefaultWebhookDeletionTimeout - 5*time.Second)
	h.waitForDeletion("orders")
}

func TestTheDeliveryControllerNeverReconcilesAnAPIKeyThatHasNoWebhook(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("plain", "")
	h.waitReady("plain")
	h.touch("plain")
	// An APIKey with a webhook, created after, proves the delivery controller runs and has drained its queue.
	h.create("hooked", "", h.webhookSpec(rcv))
	rcv.waitFor("key.created")
	h.waitWebhookReconciledAt("hooked", h.get("hooked").ResourceVersion)
	if v := h.webhookSeen.version("plain"); v != 0 {
		t.Errorf("the delivery controller reconciled an APIKey without a webhook (at version %d)", v)
	}
}
