package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/delivery"
	"github.com/keyward-dev/keyward/internal/notify"
)

// Webhook event reasons: the delivery state machine's notices, recorded as Kubernetes events.
const (
	EventWebhookFailed  = keywardv1alpha1.EventReason(delivery.ReasonFailed)
	EventWebhookRefused = keywardv1alpha1.EventReason(delivery.ReasonRefused)
	EventWebhookSlow    = keywardv1alpha1.EventReason(delivery.ReasonSlow)
	EventWebhookTested  = keywardv1alpha1.EventReason(delivery.ReasonTested)
)

const (
	// DefaultWebhookDeletionTimeout is how long a deleted APIKey waits at most for key.deleted to be delivered.
	DefaultWebhookDeletionTimeout = 5 * time.Minute
	// DefaultWebhookWorkers is how many attempts the manager makes at once (--webhook-workers).
	DefaultWebhookWorkers = 8
	// DefaultWebhookNamespaceConcurrency is how many of them one namespace may have in flight at once
	// (--webhook-namespace-concurrency): a tenant's slow receivers hold at most that many workers, and the
	// rest keep delivering for every other namespace.
	DefaultWebhookNamespaceConcurrency = 2
)

var (
	webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_webhook_deliveries_total",
		Help: "Webhook delivery attempts, by result: success, slow (accepted after more than 5s), failure, refused (target in a forbidden range), gone (410), dropped (retries exhausted).",
	}, []string{"result"})
	webhookLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyward_webhook_delivery_duration_seconds",
		Help:    "How long webhook delivery attempts took, from dial to the response's status.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15},
	})
)

func init() { crmetrics.Registry.MustRegister(webhookDeliveries, webhookLatency) }

// WebhookReconciler delivers the events that the APIKey controller queues in status.webhook.outbox, in order
// per APIKey, at least once, retrying on notify.Schedule. It runs apart from the key lifecycle, so a slow or
// dead receiver never delays a key. Each reconcile is one step of the delivery state machine
// (internal/delivery): get → Next → Begin (written before dialling) → Send → Advance → write. Its status
// writes touch only the delivery fields.
type WebhookReconciler struct {
	Client client.Client
	// APIReader reads signing secrets, which the manager's cache (Keyward's Secrets only) does not hold, and
	// the APIKey itself before an attempt: the cache may not yet show this controller's own last write.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Events    events.EventRecorder
	// AllowedCIDRs are ranges that deliveries may reach although they are loopback, private, link-local or
	// otherwise special-purpose (--webhook-allowed-cidrs).
	AllowedCIDRs []netip.Prefix
	// AttemptTimeout bounds one attempt; delivery.DefaultAttemptTimeout when zero.
	AttemptTimeout time.Duration
	// NamespaceConcurrency caps the attempts in flight per namespace; DefaultWebhookNamespaceConcurrency
	// when zero.
	NamespaceConcurrency int
	// Jitter spreads retries; notify.Jitter when nil.
	Jitter func() float64
	// DeletionTimeout bounds how long the webhook finalizer holds a deleted APIKey for key.deleted and the
	// events before it; DefaultWebhookDeletionTimeout when zero.
	DeletionTimeout time.Duration

	sender *delivery.Sender
	gate   *namespaceGate
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// SetupWithManager registers the delivery controller. It looks at an APIKey when its outbox, its webhook
// spec, its deletion or its test annotation changes, at the instants it schedules, and when a namespace's
// attempt slot frees up.
func (r *WebhookReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	r.sender = &delivery.Sender{AllowedCIDRs: r.AllowedCIDRs, Timeout: r.AttemptTimeout}
	limit := r.NamespaceConcurrency
	if limit <= 0 {
		limit = DefaultWebhookNamespaceConcurrency
	}
	r.gate = newNamespaceGate(limit)
	relevant := predicate.Funcs{
		// An APIKey that has never had a webhook has nothing to deliver: the initial list and new APIKeys
		// without one cost the delivery controller nothing. Adding a webhook later changes the generation.
		CreateFunc: func(e event.CreateEvent) bool {
			ak, ok := e.Object.(*keywardv1alpha1.APIKey)
			return ok && (ak.Spec.Webhook != nil || ak.Status.Webhook != nil ||
				controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer))
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			before, ok1 := e.ObjectOld.(*keywardv1alpha1.APIKey)
			after, ok2 := e.ObjectNew.(*keywardv1alpha1.APIKey)
			if !ok1 || !ok2 {
				return false
			}
			return before.Generation != after.Generation || !before.DeletionTimestamp.Equal(after.DeletionTimestamp) ||
				before.Annotations[keywardv1alpha1.WebhookTestAnnotation] != after.Annotations[keywardv1alpha1.WebhookTestAnnotation] ||
				!equality.Semantic.DeepEqual(outboxOf(before), outboxOf(after)) ||
				// The key controller marks a deletion queued even when key.deleted is not subscribed to (so
				// the outbox stays as it was): that mark alone is what lets the finalizer go.
				!deletionQueuedAt(before).Equal(deletionQueuedAt(after))
		},
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("webhook").
		For(&keywardv1alpha1.APIKey{}, builder.WithPredicates(relevant)).
		WatchesRawSource(source.Channel(r.gate.wake, &handler.EnqueueRequestForObject{})).
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

func deletionQueuedAt(ak *keywardv1alpha1.APIKey) *metav1.Time {
	if ak.Status.Webhook == nil {
		return nil
	}
	return ak.Status.Webhook.DeletionQueuedAt
}

// Reconcile takes one step of the APIKey's delivery.
func (r *WebhookReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// The cached copy says whether anything could be due; only then is the APIKey read from the API server.
	cached := &keywardv1alpha1.APIKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, cached); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if cached.Spec.Webhook == nil {
		return ctrl.Result{}, r.release(ctx, cached)
	}
	if step := delivery.Next(r.observe(cached)); step.Kind == delivery.Idle {
		return ctrl.Result{}, nil
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, ak); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if ak.Spec.Webhook == nil {
		return ctrl.Result{}, r.release(ctx, ak)
	}
	step := delivery.Next(r.observe(ak))
	switch step.Kind {
	case delivery.Idle:
		return ctrl.Result{}, nil
	case delivery.Wait:
		return ctrl.Result{RequeueAfter: step.At.Sub(r.Clock.Now())}, nil
	case delivery.Release:
		return ctrl.Result{}, r.release(ctx, ak)
	}
	if !r.gate.enter(req.NamespacedName) {
		return ctrl.Result{}, nil // the namespace's slots are taken; the gate wakes this APIKey when one frees
	}
	defer r.gate.leave(req.NamespacedName)
	return r.attempt(ctx, ak, step)
}

// observe is what the state machine decides from.
func (r *WebhookReconciler) observe(ak *keywardv1alpha1.APIKey) delivery.Observation {
	o := delivery.Observation{Generation: ak.Generation, TestToken: ak.Annotations[keywardv1alpha1.WebhookTestAnnotation],
		Deleting: !ak.DeletionTimestamp.IsZero(), DeletionTimeout: r.DeletionTimeout, Now: r.Clock.Now().UTC()}
	if o.DeletionTimeout <= 0 {
		o.DeletionTimeout = DefaultWebhookDeletionTimeout
	}
	if ak.Status.Webhook != nil {
		o.Status = *ak.Status.Webhook
	}
	return o
}

// attempt records the attempt, makes it, and records what it got.
func (r *WebhookReconciler) attempt(ctx context.Context, ak *keywardv1alpha1.APIKey, step delivery.Step) (ctrl.Result, error) {
	now := r.Clock.Now().UTC()
	jitter := r.jitter()
	if ak.Status.Webhook == nil {
		ak.Status.Webhook = &keywardv1alpha1.WebhookStatus{}
	}
	begun := delivery.Begin(*ak.Status.Webhook, step, now, jitter)
	if err := r.writeStatus(ctx, ak, begun); err != nil {
		return ctrl.Result{}, err
	}
	res := r.send(ctx, ak, step, now)
	// The attempt happened: its result must be recorded even when the key controller has written in the
	// meantime (a new event queued), or the back-off that Begin wrote would stand for a delivered event.
	var after keywardv1alpha1.WebhookStatus
	var notices []delivery.Notice
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if ak.Status.Webhook != nil {
			begun = *ak.Status.Webhook
		}
		after, notices = delivery.Advance(begun, step, res, now, jitter)
		err := r.writeStatus(ctx, ak, after)
		if apierrors.IsConflict(err) {
			if getErr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(ak), ak); getErr != nil {
				return getErr
			}
		}
		return err
	})
	webhookLatency.Observe(res.Took.Seconds())
	webhookDeliveries.WithLabelValues(resultLabel(step, res, after)).Inc()
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	for _, n := range notices {
		eventType := corev1.EventTypeNormal
		if n.Warning {
			eventType = corev1.EventTypeWarning
		}
		r.event(ak, eventType, keywardv1alpha1.EventReason(n.Reason), "Deliver", "%s (endpoint %s)", n.Message, ak.Spec.Webhook.URL)
	}
	// What comes next is decided from what was just written; more events go after other APIKeys had a turn.
	switch next := delivery.Next(r.observe(ak)); next.Kind {
	case delivery.Wait:
		return ctrl.Result{RequeueAfter: next.At.Sub(now)}, nil
	case delivery.Idle:
		return ctrl.Result{}, nil
	default:
		return ctrl.Result{RequeueAfter: time.Nanosecond}, nil
	}
}

// send makes the attempt a step asks for; the signing Secret is read once, here.
func (r *WebhookReconciler) send(ctx context.Context, ak *keywardv1alpha1.APIKey, step delivery.Step, now time.Time) delivery.Result {
	signer, err := r.signer(ctx, ak)
	if err != nil {
		return delivery.Failed(err)
	}
	msg := step.Message
	if step.Kind == delivery.Test {
		msg = keywardv1alpha1.WebhookMessage{ID: fmt.Sprintf("msg_%s_test_%s", ak.UID, step.Token), Type: keywardv1alpha1.WebhookEventTest,
			Timestamp: metav1.NewTime(now.Truncate(time.Second)), KeyID: ak.Status.KeyID, Revision: ak.Status.Revision}
	}
	body := notify.BodyOf(ak.Namespace, ak.Name, msg)
	body.Data.Token = step.Token
	return r.sender.Send(ctx, delivery.Attempt{URL: ak.Spec.Webhook.URL, CABundle: ak.Spec.Webhook.CABundle, Signer: signer,
		ID: msg.ID, At: now, Payload: body.Marshal()})
}

// resultLabel is the keyward_webhook_deliveries_total result of an attempt.
func resultLabel(step delivery.Step, r delivery.Result, after keywardv1alpha1.WebhookStatus) string {
	switch {
	case r.Refused:
		return "refused"
	case r.Outcome == notify.Gone:
		return "gone"
	case r.Outcome == notify.Delivered && r.Took > delivery.SlowAnswer:
		return "slow"
	case r.Outcome == notify.Delivered:
		return "success"
	case step.Kind == delivery.Send && after.DeliveredSequence >= step.Message.Sequence:
		return "dropped"
	}
	return "failure"
}

// writeStatus patches status.webhook to ws, with optimistic locking: the key controller appends to the same
// outbox, and a write from a stale copy must not drop its events.
func (r *WebhookReconciler) writeStatus(ctx context.Context, ak *keywardv1alpha1.APIKey, ws keywardv1alpha1.WebhookStatus) error {
	if ak.Status.Webhook != nil && equality.Semantic.DeepEqual(*ak.Status.Webhook, ws) {
		return nil
	}
	base := ak.DeepCopy()
	ak.Status.Webhook = &ws
	if err := r.Client.Status().Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		*ak = *base // the write did not happen; ak stays what the API server has
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patching webhook status: %w", err)
	}
	return nil
}

// release removes the webhook finalizer: the deletion was announced (or gave up waiting), or the APIKey no
// longer has a webhook.
func (r *WebhookReconciler) release(ctx context.Context, ak *keywardv1alpha1.APIKey) error {
	if !controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) {
		return nil
	}
	if err := setWebhookFinalizer(ctx, r.Client, r.APIReader, client.ObjectKeyFromObject(ak), false); err != nil {
		return fmt.Errorf("removing the webhook finalizer: %w", err)
	}
	return nil
}

func (r *WebhookReconciler) jitter() float64 {
	if r.Jitter != nil {
		return r.Jitter()
	}
	return notify.Jitter()
}

func (r *WebhookReconciler) signer(ctx context.Context, ak *keywardv1alpha1.APIKey) (*notify.Signer, error) {
	ref := ak.Spec.Webhook.SigningSecretRef
	key := ref.Key
	if key == "" {
		key = "secret"
	}
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: ref.Name}, s); err != nil {
		return nil, fmt.Errorf("reading the signing secret %s: %w", ref.Name, err)
	}
	signer, err := notify.NewSigner(string(s.Data[key]))
	if err != nil {
		return nil, fmt.Errorf("signing secret %s, key %s: %w", ref.Name, key, err)
	}
	return signer, nil
}

func (r *WebhookReconciler) event(ak *keywardv1alpha1.APIKey, eventType string, reason keywardv1alpha1.EventReason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(ak, nil, eventType, string(reason), action, note, args...)
	}
}

// namespaceGate caps the attempts in flight per namespace. An APIKey turned away is remembered and enqueued
// again (through wake) when a slot of its namespace frees, so it holds no worker while it waits.
type namespaceGate struct {
	limit    int
	wake     chan event.GenericEvent
	mu       sync.Mutex
	inFlight map[string]int
	waiting  map[string]map[types.NamespacedName]bool
}

func newNamespaceGate(limit int) *namespaceGate {
	return &namespaceGate{limit: limit, wake: make(chan event.GenericEvent, 1024), inFlight: map[string]int{},
		waiting: map[string]map[types.NamespacedName]bool{}}
}

func (g *namespaceGate) enter(key types.NamespacedName) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight[key.Namespace] >= g.limit {
		if g.waiting[key.Namespace] == nil {
			g.waiting[key.Namespace] = map[types.NamespacedName]bool{}
		}
		g.waiting[key.Namespace][key] = true
		return false
	}
	g.inFlight[key.Namespace]++
	return true
}

func (g *namespaceGate) leave(key types.NamespacedName) {
	g.mu.Lock()
	g.inFlight[key.Namespace]--
	if g.inFlight[key.Namespace] <= 0 {
		delete(g.inFlight, key.Namespace)
	}
	waiting := g.waiting[key.Namespace]
	delete(g.waiting, key.Namespace)
	g.mu.Unlock()
	if len(waiting) == 0 {
		return
	}
	// Sent from a goroutine: the reconcile that frees the slot must not wait for the queue.
	go func() {
		for k := range waiting {
			g.wake <- event.GenericEvent{Object: &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}}}
		}
	}()
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
