package controllers

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"code.dny.dev/ssrf"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/webhook"
)

// Webhook event reasons.
const (
	EventWebhookFailed  EventReason = "WebhookFailed"
	EventWebhookRefused EventReason = "WebhookRefused"
	EventWebhookTested  EventReason = "WebhookTested"
)

// Limits of one delivery attempt.
const (
	// WebhookAttemptTimeout bounds one attempt, connection and response included.
	WebhookAttemptTimeout = 15 * time.Second
	// WebhookResponseBodyLimit is how much of a response body is read (and then discarded).
	WebhookResponseBodyLimit = 4 << 10
	// webhookBatch is how many pending events one reconcile delivers before it yields to other APIKeys.
	webhookBatch = 16
	// DefaultWebhookDeletionTimeout is how long a deleted APIKey waits at most for key.deleted to be delivered.
	DefaultWebhookDeletionTimeout = 5 * time.Minute
)

var (
	webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_webhook_deliveries_total",
		Help: "Webhook delivery attempts, by result: success, failure, refused (target in a forbidden range), gone (410), dropped (retries exhausted).",
	}, []string{"result"})
	webhookLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyward_webhook_delivery_duration_seconds",
		Help:    "How long webhook delivery attempts took, from dial to the response's status.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15},
	})
)

func init() { crmetrics.Registry.MustRegister(webhookDeliveries, webhookLatency) }

// WebhookReconciler delivers the events that the APIKey controller queues in status.webhook.outbox, in order
// per APIKey, at least once, retrying on webhook.Schedule. It runs apart from the key lifecycle, so a slow or
// dead receiver never delays a key. Its status writes touch only the delivery fields.
type WebhookReconciler struct {
	Client client.Client
	// APIReader reads signing secrets, which the manager's cache (Keyward's Secrets only) does not hold.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Events    events.EventRecorder
	// AllowedCIDRs are ranges that deliveries may reach although they are loopback, private, link-local or
	// otherwise special-purpose (--webhook-allowed-cidrs). Everything else in those ranges is refused when
	// dialling, after DNS resolution, so rebinding a name cannot get around it.
	AllowedCIDRs []netip.Prefix
	// Jitter spreads retries; webhook.Jitter when nil.
	Jitter func() float64
	// DeletionTimeout bounds how long the webhook finalizer holds a deleted APIKey for key.deleted and the
	// events before it; DefaultWebhookDeletionTimeout when zero.
	DeletionTimeout time.Duration

	// done remembers, per APIKey UID, the highest sequence and the test token this process is done with,
	// because the cache can show a reconcile the status from before this process's own last patch: without
	// it, that reconcile would send the same event again.
	done sync.Map // types.UID → doneWith
}

// doneWith is what the delivery controller has finished for one APIKey.
type doneWith struct {
	sequence  int64
	testToken string
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// SetupWithManager registers the delivery controller. It looks at an APIKey when its outbox, its webhook
// spec or its test annotation changes, and at the retry instants it schedules.
func (r *WebhookReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	relevant := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			before, ok1 := e.ObjectOld.(*keywardv1alpha1.APIKey)
			after, ok2 := e.ObjectNew.(*keywardv1alpha1.APIKey)
			if !ok1 || !ok2 {
				return false
			}
			return before.Generation != after.Generation || !before.DeletionTimestamp.Equal(after.DeletionTimestamp) ||
				before.Annotations[keywardv1alpha1.WebhookTestAnnotation] != after.Annotations[keywardv1alpha1.WebhookTestAnnotation] ||
				!equality.Semantic.DeepEqual(outboxOf(before), outboxOf(after))
		},
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("webhook").
		For(&keywardv1alpha1.APIKey{}, builder.WithPredicates(relevant)).
		WithOptions(opts).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the webhook controller: %w", err)
	}
	return nil
}

func outboxOf(ak *keywardv1alpha1.APIKey) []keywardv1alpha1.WebhookMessage {
	if ak.Status.Webhook == nil {
		return nil
	}
	return ak.Status.Webhook.Outbox
}

// Reconcile answers the test annotation, then delivers pending events in order until one fails.
func (r *WebhookReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ak := &keywardv1alpha1.APIKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, ak); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if ak.Spec.Webhook == nil {
		return ctrl.Result{}, r.release(ctx, ak)
	}
	before := ak.DeepCopy()
	if ak.Status.Webhook == nil {
		ak.Status.Webhook = &keywardv1alpha1.WebhookStatus{}
	}
	ws := ak.Status.Webhook
	var finished doneWith
	if v, ok := r.done.Load(ak.UID); ok {
		finished = v.(doneWith)
		ws.DeliveredSequence = max(ws.DeliveredSequence, finished.sequence)
	}
	now := r.Clock.Now().UTC()

	if token := ak.Annotations[keywardv1alpha1.WebhookTestAnnotation]; token != "" && token != finished.testToken &&
		(ws.LastTest == nil || ws.LastTest.Token != token) {
		msg := keywardv1alpha1.WebhookMessage{ID: fmt.Sprintf("msg_%s_test_%s", ak.UID, token), Type: keywardv1alpha1.WebhookEventTest,
			Timestamp: metaTime(now), KeyID: ak.Status.KeyID, Revision: ak.Status.Revision}
		res := r.attempt(ctx, ak, msg, token, now)
		ws.LastTest = &keywardv1alpha1.WebhookTestStatus{Token: token, Time: metaTime(now), Result: res.summary()}
		r.event(ak, corev1.EventTypeNormal, EventWebhookTested, "Test", "webhook.test %q to %s: %s", token, ak.Spec.Webhook.URL, res.summary())
	}

	var requeue time.Duration
	for range webhookBatch {
		msg, ok := nextPending(ws)
		if !ok || ws.GoneGeneration == ak.Generation {
			break
		}
		if ws.NextAttemptTime != nil && now.Before(ws.NextAttemptTime.Time) {
			requeue = ws.NextAttemptTime.Sub(now)
			break
		}
		res := r.attempt(ctx, ak, msg, "", now)
		if !r.record(ak, msg, res, now) {
			if ws.NextAttemptTime != nil { // nil after a 410: nothing is due until the spec changes
				requeue = ws.NextAttemptTime.Sub(now)
			}
			break
		}
		if _, more := nextPending(ws); more && ws.GoneGeneration != ak.Generation {
			requeue = time.Nanosecond // more events, after other APIKeys had their turn
		}
	}
	if !equality.Semantic.DeepEqual(before.Status, ak.Status) {
		if err := r.Client.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching webhook status: %w", err)
		}
	}
	finished.sequence = ws.DeliveredSequence
	if ws.LastTest != nil {
		finished.testToken = ws.LastTest.Token
	}
	r.done.Store(ak.UID, finished)
	if !ak.DeletionTimestamp.IsZero() && ws.DeletionQueuedAt != nil {
		_, pending := nextPending(ws)
		timeout := r.DeletionTimeout
		if timeout <= 0 {
			timeout = DefaultWebhookDeletionTimeout
		}
		deadline := ws.DeletionQueuedAt.Add(timeout)
		if !pending || !now.Before(deadline) {
			return ctrl.Result{}, r.release(ctx, ak)
		}
		if requeue == 0 || deadline.Sub(now) < requeue {
			requeue = deadline.Sub(now)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// release removes the webhook finalizer: the deletion was announced (or gave up waiting), or the APIKey no
// longer has a webhook.
func (r *WebhookReconciler) release(ctx context.Context, ak *keywardv1alpha1.APIKey) error {
	if !controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) {
		return nil
	}
	base := ak.DeepCopy()
	controllerutil.RemoveFinalizer(ak, keywardv1alpha1.WebhookFinalizer)
	if err := r.Client.Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("removing the webhook finalizer: %w", client.IgnoreNotFound(err))
	}
	r.done.Delete(ak.UID)
	return nil
}

// nextPending is the oldest outbox message not yet done with.
func nextPending(ws *keywardv1alpha1.WebhookStatus) (keywardv1alpha1.WebhookMessage, bool) {
	for _, m := range ws.Outbox {
		if m.Sequence > ws.DeliveredSequence {
			return m, true
		}
	}
	return keywardv1alpha1.WebhookMessage{}, false
}

// record notes an attempt's result in status and reports whether delivery may go on with the next event.
func (r *WebhookReconciler) record(ak *keywardv1alpha1.APIKey, msg keywardv1alpha1.WebhookMessage, res attemptResult, now time.Time) bool {
	ws := ak.Status.Webhook
	switch {
	case res.outcome == webhook.Delivered:
		webhookDeliveries.WithLabelValues("success").Inc()
		ws.DeliveredSequence, ws.LastDeliveredRevision = msg.Sequence, msg.Revision
		ws.LastDeliveryTime, ws.LastError, ws.ConsecutiveFailures, ws.NextAttemptTime = ptrTime(now), "", 0, nil
		return true
	case res.outcome == webhook.Gone:
		webhookDeliveries.WithLabelValues("gone").Inc()
		ws.GoneGeneration, ws.NextAttemptTime = ak.Generation, nil
		ws.LastError = res.summary() + ": the endpoint is gone; nothing more is sent until spec.webhook changes"
		r.event(ak, corev1.EventTypeWarning, EventWebhookFailed, "Deliver", "%s %s", msg.Type, ws.LastError)
		return false
	}
	result := "failure"
	if res.refused {
		result = "refused"
	}
	webhookDeliveries.WithLabelValues(result).Inc()
	ws.ConsecutiveFailures++
	ws.LastError = res.summary()
	if ws.ConsecutiveFailures == 1 {
		reason := EventWebhookFailed
		if res.refused {
			reason = EventWebhookRefused
		}
		r.event(ak, corev1.EventTypeWarning, reason, "Deliver", "Delivering %s (%s) to %s failed: %s; retrying on the schedule",
			msg.Type, msg.ID, ak.Spec.Webhook.URL, res.summary())
	}
	jitter := r.Jitter
	if jitter == nil {
		jitter = webhook.Jitter
	}
	next := webhook.NextAttempt(now, int(ws.ConsecutiveFailures), res.status, res.retryAfter, jitter())
	if next.IsZero() {
		webhookDeliveries.WithLabelValues("dropped").Inc()
		ws.DeliveredSequence, ws.NextAttemptTime, ws.ConsecutiveFailures = msg.Sequence, nil, 0
		ws.LastError = fmt.Sprintf("gave up %s (%s) after %d attempts: %s", msg.Type, msg.ID, len(webhook.Schedule), res.summary())
		r.event(ak, corev1.EventTypeWarning, EventWebhookFailed, "Deliver", "%s", ws.LastError)
		return true
	}
	ws.NextAttemptTime = ptrTime(next)
	return false
}

// attemptResult is what one attempt got.
type attemptResult struct {
	outcome    webhook.Outcome
	status     int
	retryAfter string
	err        error
	refused    bool
}

func (a attemptResult) summary() string {
	if a.err != nil {
		return a.err.Error()
	}
	return fmt.Sprintf("HTTP %d %s", a.status, http.StatusText(a.status))
}

// attempt sends one event once. token is set for webhook.test.
func (r *WebhookReconciler) attempt(ctx context.Context, ak *keywardv1alpha1.APIKey, msg keywardv1alpha1.WebhookMessage, token string, now time.Time) attemptResult {
	failed := func(err error) attemptResult { return attemptResult{outcome: webhook.Failed, err: err} }
	spec := ak.Spec.Webhook
	signer, err := r.signer(ctx, ak)
	if err != nil {
		return failed(err)
	}
	body := webhook.BodyOf(ak.Namespace, ak.Name, msg)
	body.Data.Token = token
	payload := body.Marshal()
	client, err := r.httpClient(spec.CABundle)
	if err != nil {
		return failed(err)
	}
	ctx, cancel := context.WithTimeout(ctx, WebhookAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.URL, bytes.NewReader(payload))
	if err != nil {
		return failed(fmt.Errorf("building the request: %w", err))
	}
	signer.Headers(req.Header, msg.ID, now, payload)
	req.Header.Set("User-Agent", "keyward-webhook/1")
	start := time.Now()
	resp, err := client.Do(req)
	webhookLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		res := failed(fmt.Errorf("POST %s: %w", spec.URL, errors.Unwrap(err)))
		if errors.Is(err, ssrf.ErrProhibitedIP) || errors.Is(err, ssrf.ErrProhibitedNetwork) || errors.Is(err, ssrf.ErrProhibitedPort) {
			res.refused = true
			res.err = fmt.Errorf("refused to connect to %s: %w; allow the range with --webhook-allowed-cidrs if it is yours", spec.URL, errors.Unwrap(err))
		}
		return res
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, WebhookResponseBodyLimit))
	return attemptResult{outcome: webhook.Classify(resp.StatusCode), status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
}

func (r *WebhookReconciler) signer(ctx context.Context, ak *keywardv1alpha1.APIKey) (*webhook.Signer, error) {
	ref := ak.Spec.Webhook.SigningSecretRef
	key := ref.Key
	if key == "" {
		key = "secret"
	}
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: ref.Name}, s); err != nil {
		return nil, fmt.Errorf("reading the signing secret %s: %w", ref.Name, err)
	}
	signer, err := webhook.NewSigner(string(s.Data[key]))
	if err != nil {
		return nil, fmt.Errorf("signing secret %s, key %s: %w", ref.Name, key, err)
	}
	return signer, nil
}

// httpClient follows no redirects, gives up after WebhookAttemptTimeout, and dials only addresses outside
// the refused ranges (unless allowed), checked on the resolved IP at dial time.
func (r *WebhookReconciler) httpClient(caBundle string) (*http.Client, error) {
	var v4, v6 []netip.Prefix
	for _, p := range r.AllowedCIDRs {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	guard := ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: guard.Safe}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caBundle != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caBundle)) {
			return nil, errors.New("spec.webhook.caBundle holds no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	return &http.Client{
		Timeout:       WebhookAttemptTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: tlsConfig, DisableKeepAlives: true,
			TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: WebhookAttemptTimeout, Proxy: nil},
	}, nil
}

func (r *WebhookReconciler) event(ak *keywardv1alpha1.APIKey, eventType string, reason EventReason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(ak, nil, eventType, string(reason), action, note, args...)
	}
}

// ParseCIDRs parses --webhook-allowed-cidrs.
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--webhook-allowed-cidrs: %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.UTC().Truncate(time.Second)) }

func ptrTime(t time.Time) *metav1.Time {
	mt := metaTime(t)
	return &mt
}
