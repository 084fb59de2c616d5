package controllers

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/delivery"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// holdingReceiver is an HTTPS receiver that takes each request and holds it, answering only when the test
// lets it (or the sender gives up): the receiver of a tenant who wants to tie up the shared delivery workers.
type holdingReceiver struct {
	srv      *httptest.Server
	release  chan struct{}
	inFlight atomic.Int32
	peak     atomic.Int32
	ended    atomic.Int32
	arrived  atomic.Int32
	once     sync.Once
}

func newHoldingReceiver(t *testing.T) *holdingReceiver {
	r := &holdingReceiver{release: make(chan struct{})}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.arrived.Add(1)
		n := r.inFlight.Add(1)
		for p := r.peak.Load(); n > p && !r.peak.CompareAndSwap(p, n); p = r.peak.Load() {
		}
		defer func() { r.inFlight.Add(-1); r.ended.Add(1) }()
		select {
		case <-r.release:
			w.WriteHeader(http.StatusOK)
		case <-req.Context().Done():
		}
	}))
	r.srv.StartTLS()
	t.Cleanup(func() { r.let(); r.srv.Close() })
	return r
}

// let answers every held request and every later one at once.
func (r *holdingReceiver) let() { r.once.Do(func() { close(r.release) }) }

// webhook points an APIKey at the receiver, signed with the test namespace's "hooks" Secret.
func (r *holdingReceiver) webhook() func(*keywardv1alpha1.APIKey) {
	return func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: r.srv.URL + "/hold", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hooks"},
			CABundle: caBundleOf(r.srv)}
	}
}

func TestReceiversThatHoldEveryRequestInOneNamespaceDoNotDelayAnotherNamespace(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	victimNS := env.Namespace(t)
	hostile := newHoldingReceiver(t)
	victim := newReceiver(t)
	// Hostile attempts must stay in flight for the whole test, however slow the machine: the proof is that
	// the victim is served while they are, not that it is served within some time.
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}, attemptTimeout: time.Hour, alsoNamespaces: []string{victimNS}})
	h.webhookSpec(victim) // the signing Secret in the test's namespace
	const tenantKeys = 12
	for i := range tenantKeys {
		h.create(fmt.Sprintf("greedy-%d", i), "", hostile.webhook())
	}
	eventually.Succeeds(t, "the tenant's receiver holds as many attempts as its namespace may have", func() error {
		if n := hostile.inFlight.Load(); n < DefaultWebhookNamespaceConcurrency {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})

	// Another namespace's key.created goes out while every one of the tenant's attempts is still held.
	if err := env.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: victimNS},
		Data: map[string][]byte{"secret": []byte(victim.secret)}}); err != nil {
		t.Fatal(err)
	}
	victimKey := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: victimNS}}
	victimKey.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: victim.srv.URL + "/keyward", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hooks"},
		CABundle: victim.caBundle()}
	if err := env.Client.Create(context.Background(), victimKey); err != nil {
		t.Fatal(err)
	}
	got := victim.waitFor("key.created")[0]
	if got.parsed.Data.Namespace != victimNS {
		t.Errorf("the victim's receiver got %+v", got.parsed.Data)
	}
	if ended := hostile.ended.Load(); ended != 0 {
		t.Errorf("%d of the tenant's held attempts had to end before another namespace's event went out", ended)
	}
	if peak := hostile.peak.Load(); peak > DefaultWebhookNamespaceConcurrency {
		t.Errorf("one namespace had %d attempts in flight at once; the cap is %d", peak, DefaultWebhookNamespaceConcurrency)
	}
	// Once the tenant's receiver answers, its APIKeys get their turns too.
	hostile.let()
	eventually.Succeeds(t, "every one of the tenant's APIKeys delivers key.created", func() error {
		if n := hostile.arrived.Load(); n < tenantKeys {
			return fmt.Errorf("%d of %d arrived", n, tenantKeys)
		}
		return nil
	})
}

func TestWebhookTestIsSentAtMostOncePerIntervalPerAPIKey(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv))
	rcv.waitFor("key.created")
	tests := func() (tokens []string) {
		for _, d := range rcv.deliveries() {
			if d.parsed.Type == string(keywardv1alpha1.WebhookEventTest) {
				tokens = append(tokens, d.parsed.Data.Token)
			}
		}
		return tokens
	}
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.WebhookTestAnnotation: "one"}
	})
	rcv.waitFor("webhook.test")
	// Within the interval a new token is not sent, whatever the annotation says ...
	for _, token := range []string{"two", "three"} {
		asked := h.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Annotations[keywardv1alpha1.WebhookTestAnnotation] = token })
		h.waitWebhookReconciledAt("orders", asked.ResourceVersion)
	}
	if got := tests(); len(got) != 1 || got[0] != "one" {
		t.Fatalf("webhook.test tokens sent within %s: %v; want only the first", delivery.TestInterval, got)
	}
	// ... and once it has passed, the latest token is answered.
	h.stepWebhookTo(delivery.TestInterval)
	eventually.Succeeds(t, "the latest token is answered after the interval", func() error {
		if got := tests(); len(got) != 2 || got[1] != "three" {
			return fmt.Errorf("tokens sent: %v", got)
		}
		return nil
	})
}

// hugeHeaders is an answer whose header block is about 9 MiB: 1.5 million tiny headers.
var hugeHeaders = func() []byte {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for range 1_500_000 {
		b.WriteString("A: b\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}()

// hugeHeaderReceiver answers every request with hugeHeaders, written straight to the connection.
func hugeHeaderReceiver(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var requests atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests.Add(1)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buf.Write(hugeHeaders)
		_ = buf.Flush()
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &requests
}

func TestAReceiverAnsweringWithHugeHeadersCostsTheManagerLittleAndIsBackedOff(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	srv, requests := hugeHeaderReceiver(t)
	good := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.webhookSpec(good)
	hostile := func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: srv.URL + "/huge", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hooks"},
			CABundle: caBundleOf(srv)}
	}
	// A low GC target keeps garbage out of the measurement; what stays is what an attempt holds.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	const attackers = 4
	grew := heapGrowth(t, func() {
		for i := range attackers {
			h.create(fmt.Sprintf("huge-%d", i), "", hostile)
		}
		for i := range attackers {
			h.waitFor(fmt.Sprintf("huge-%d", i), "the answer is refused", func(ak *keywardv1alpha1.APIKey) bool {
				w := ak.Status.Webhook
				return w != nil && w.ConsecutiveFailures == 1 && strings.Contains(w.LastError, "header")
			})
		}
	})
	t.Logf("the heap grew by %.1f MiB while %d receivers answered with %d MiB of headers each", float64(grew)/(1<<20), attackers, len(hugeHeaders)>>20)
	if grew > 16<<20 {
		t.Errorf("the heap grew by %d MiB; the bound is 16 MiB", grew>>20)
	}
	// Each was tried once and backs off; the manager goes on serving everyone else.
	if n := requests.Load(); n != attackers {
		t.Errorf("the hostile receiver got %d requests; want one per APIKey until the back-off passes", n)
	}
	h.create("orders", "", h.webhookSpec(good))
	h.waitReady("orders")
	good.waitFor("key.created")
}

func TestAManagerThatStopsDuringAnAttemptBacksOffAfterItsRestart(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newHoldingReceiver(t)
	good := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}, attemptTimeout: time.Hour})
	h.webhookSpec(good)
	h.create("orders", "", rcv.webhook())
	eventually.Succeeds(t, "an attempt is in flight", func() error {
		if rcv.inFlight.Load() == 0 {
			return eventually.ErrNotYet
		}
		return nil
	})
	// The manager dies mid-attempt (as when an answer gets it OOM-killed): nothing after the dial is written.
	h.stopManager()
	begun := h.get("orders").Status.Webhook
	if begun == nil || begun.ConsecutiveFailures != 1 || begun.NextAttemptTime == nil || !begun.NextAttemptTime.Time.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("before dialling, status.webhook was %+v; want the attempt counted and its back-off set", begun)
	}
	rcv.let()
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}, attemptTimeout: time.Hour})
	// The restarted controller lists the APIKey as it is now, with the back-off Begin wrote.
	h.waitWebhookReconciledAt("orders", h.get("orders").ResourceVersion)
	if n := rcv.arrived.Load(); n != 1 {
		t.Fatalf("after the restart the receiver got %d requests before the back-off passed; want only the interrupted one", n)
	}
	h.stepWebhookTo(5 * time.Second)
	h.waitFor("orders", "key.created delivered after the back-off", func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.Webhook != nil && ak.Status.Webhook.DeliveredSequence == 1 && ak.Status.Webhook.ConsecutiveFailures == 0
	})
}

// heapGrowth runs load while sampling the heap and returns how far it grew above where it started.
func heapGrowth(t *testing.T, load func()) uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	peak.Store(base)
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	load()
	close(done)
	<-sampled
	return peak.Load() - base
}

// caBundleOf is the PEM of a test server's certificate.
func caBundleOf(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func TestABase64EncodedCABundleIsTrustedLikePEM(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	rcv := newReceiver(t)
	h.startManager(managerOptions{webhookCIDRs: []string{"127.0.0.0/8"}})
	h.create("orders", "", h.webhookSpec(rcv, func(w *keywardv1alpha1.WebhookSpec) {
		w.CABundle = base64.StdEncoding.EncodeToString([]byte(rcv.caBundle())) // what other caBundle fields hold
	}))
	rcv.waitFor("key.created")
}
