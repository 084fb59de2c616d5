package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/fairqueue"
)

// DefaultMaxRetryDelay caps how long an APIKey whose reconcile failed waits before its next try. After an
// API-server outage every such APIKey is tried again within this of the API server's return, where
// controller-runtime's default back-off grows to 16 minutes and paces all retries at 10 per second.
const DefaultMaxRetryDelay = time.Minute

// secretNameIndex indexes the APIKeys whose spec.secretName is not their own name by the Secret they write
// to, so that a Secret event reaches every APIKey that names it, including one waiting on a conflict.
const secretNameIndex = "keyward.dev/secret-name"

// setWebhookFinalizer adds or removes the webhook finalizer. The cache keeps only Keyward's finalizer, and a
// merge patch replaces the whole list, so the list is read from the API server and patched under its
// resourceVersion: another controller's finalizer is never dropped.
func setWebhookFinalizer(ctx context.Context, c client.Client, apiReader client.Reader, key types.NamespacedName, want bool) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := apiReader.Get(ctx, key, ak); err != nil {
		return client.IgnoreNotFound(err)
	}
	if controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) == want {
		return nil
	}
	base := ak.DeepCopy()
	if want {
		controllerutil.AddFinalizer(ak, keywardv1alpha1.WebhookFinalizer)
	} else {
		controllerutil.RemoveFinalizer(ak, keywardv1alpha1.WebhookFinalizer)
	}
	return client.IgnoreNotFound(c.Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})))
}

// NewFairQueue is the key controller's workqueue: client-go's rate-limiting, delaying workqueue on clk, whose
// items wait in one FIFO per namespace served in turn (internal/fairqueue). One namespace's 20,000 APIKeys in
// conflict or churn delay another namespace's revocation by one reconcile per namespace with work, not by
// 20,000.
func NewFairQueue(name string, rl workqueue.TypedRateLimiter[reconcile.Request], clk clock.WithTicker) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	byNamespace := fairqueue.New(func(r reconcile.Request) string { return r.Namespace })
	return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{
		Name: name, Clock: clk,
		DelayingQueue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[reconcile.Request]{
			Name: name, Clock: clk,
			Queue: workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[reconcile.Request]{Name: name, Clock: clk, Queue: byNamespace}),
		}),
	})
}

// SetupWithManager registers the reconciler, its index and its watches. opts tunes the controller (tests
// pass a queue on a fake clock).
func (r *APIKeyReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keywardv1alpha1.APIKey{}, secretNameIndex, func(o client.Object) []string {
		// An APIKey writing to the Secret of its own name (nearly all) is found by that name: indexing it too
		// would cost two index entries per APIKey for nothing.
		if ak := o.(*keywardv1alpha1.APIKey); SecretNameOf(ak) != ak.Name {
			return []string{SecretNameOf(ak)}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing APIKeys by Secret name: %w", err)
	}
	if r.Signer == nil {
		return errors.New("the APIKey controller needs a record signer")
	}
	if opts.RateLimiter == nil && opts.NewQueue == nil {
		// Only the per-APIKey back-off, capped: the workers bound how hard retries press the API server.
		opts.RateLimiter = workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, DefaultMaxRetryDelay)
	}
	if opts.NewQueue == nil {
		opts.NewQueue = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			return NewFairQueue(name, rl, clock.RealClock{})
		}
	}
	r.secrets = &SecretWriter{Client: r.Client, APIReader: r.APIReader, Signer: r.Signer}
	r.status = &StatusWriter{Client: r.Client}
	r.mints = &MintAnnouncer{Client: r.Client, Clock: r.Clock, Signer: r.Signer}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("apikey").
		// Spec edits bump the generation, a rotation or revocation changes an annotation, and any status edit
		// but Keyward's own, the verifier's usage reports and the delivery controller's status.webhook is
		// looked at, so a forged status is put back at once.
		For(&keywardv1alpha1.APIKey{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, statusEdited(r.status), deletionStarted(),
			previousKeyUseReported()))).
		Watches(&corev1.Secret{}, r.secretEvents()).
		// A deleted APIKey may free a Secret that another APIKey waits for: whichever of the two deletions
		// (the APIKey's, its Secret's) the cache shows last, the waiting APIKey is looked at again then.
		Watches(&keywardv1alpha1.APIKey{}, handler.Funcs{DeleteFunc: func(ctx context.Context, e event.DeleteEvent,
			q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			ak, ok := e.Object.(*keywardv1alpha1.APIKey)
			if !ok {
				return
			}
			r.status.Forget(ak)
			freed := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: SecretNameOf(ak)}}
			for _, req := range r.apiKeysUsing(ctx, freed) {
				if req.Name != ak.Name {
					q.Add(req)
				}
			}
		}})
	if r.JudgePolicies {
		// A policy created, changed or deleted may change the verdict on every APIKey; a namespace's new
		// labels on those in it. Only labels matter of a namespace, so only its metadata is cached.
		b = b.Watches(&keywardv1alpha1.APIKeyPolicy{}, handler.EnqueueRequestsFromMapFunc(r.apiKeysIn(""))).
			WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
				return r.apiKeysIn(o.GetName())(ctx, o)
			}), builder.WithPredicates(predicate.LabelChangedPredicate{}))
	}
	if err := b.WithOptions(opts).Complete(r); err != nil {
		return fmt.Errorf("setting up the APIKey controller: %w", err)
	}
	return nil
}

// apiKeysIn maps an event to every APIKey of namespace (of every namespace when "") that the cache holds.
func (r *APIKeyReconciler) apiKeysIn(namespace string) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list keywardv1alpha1.APIKeyList
		var opts []client.ListOption
		if namespace != "" {
			opts = append(opts, client.InNamespace(namespace))
		}
		if err := r.Client.List(ctx, &list, opts...); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, ak := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ak.Namespace, Name: ak.Name}})
		}
		return reqs
	}
}

// secretEvents maps Secret events to the APIKeys that use the Secret, skipping the echo of our own writes:
// the reconcile that wrote the Secret already acted on it, and an echo reconcile racing the status patch
// through the cache would only write the same status twice.
func (r *APIKeyReconciler) secretEvents() handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	enqueue := func(ctx context.Context, o client.Object, q queue) {
		for _, req := range r.apiKeysUsing(ctx, o) {
			q.Add(req)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			if !r.secrets.IsEcho(e.Object) {
				enqueue(ctx, e.Object, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			if !r.secrets.IsEcho(e.ObjectNew) {
				enqueue(ctx, e.ObjectNew, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			r.secrets.Forget(e.Object)
			enqueue(ctx, e.Object, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { enqueue(ctx, e.Object, q) },
	}
}

func (r *APIKeyReconciler) apiKeysUsing(ctx context.Context, secret client.Object) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var reqs []reconcile.Request
	add := func(name string) {
		nn := types.NamespacedName{Namespace: secret.GetNamespace(), Name: name}
		if name != "" && !seen[nn] {
			seen[nn] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: nn})
		}
	}
	add(secret.GetLabels()[keywardv1alpha1.APIKeyNameLabel])
	// The APIKey of the Secret's name, if it writes there (when it does not, its reconcile finds nothing to do).
	add(secret.GetName())
	var list keywardv1alpha1.APIKeyList
	if err := r.Client.List(ctx, &list, client.InNamespace(secret.GetNamespace()),
		client.MatchingFields{secretNameIndex: secret.GetName()}); err != nil {
		// Only the labelled APIKey is reconciled; one waiting on a conflict for this Secret looks again
		// after its recheck interval.
		log.FromContext(ctx).Error(err, "Listing the APIKeys that name a Secret failed", "secret", klog.KObj(secret))
		return reqs
	}
	for i := range list.Items {
		add(list.Items[i].Name)
	}
	return reqs
}

// deletionStarted passes the update that sets an APIKey's deletion timestamp, so key.deleted is queued.
func deletionStarted() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
	}}
}

// previousKeyUseReported passes a verifier's usage report that shows a previous key used later than before,
// while it is not yet listed in status.previousKeysInUse: the key controller then judges at once whether the
// key is about to stop while still in use. Waiting for its next scheduled look (every PreviousKeyRecheck)
// would, for a grace period that short, come after the key is gone, and the warning never. A key already
// listed is looked at again on that schedule, so reports do not cost a reconcile each.
func previousKeyUseReported() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, okBefore := e.ObjectOld.(*keywardv1alpha1.APIKey)
		after, okAfter := e.ObjectNew.(*keywardv1alpha1.APIKey)
		if !okBefore || !okAfter || after.Status.Usage == nil {
			return false
		}
		lastUse := func(ak *keywardv1alpha1.APIKey, id string) *metav1.Time {
			if ak.Status.Usage == nil {
				return nil
			}
			for _, k := range ak.Status.Usage.Keys {
				if k.KeyID == id {
					return k.LastUsedAt
				}
			}
			return nil
		}
		for _, p := range after.Status.PreviousKeys {
			if slices.Contains(after.Status.PreviousKeysInUse, p.KeyID) {
				continue
			}
			now, was := lastUse(after, p.KeyID), lastUse(before, p.KeyID)
			if now != nil && (was == nil || was.Before(now)) {
				return true
			}
		}
		return false
	}}
}

// statusEdited passes updates that change the parts of an APIKey's status that the key controller writes,
// except the echo of its own patches (a reconcile of which would find nothing to do): anyone else's edit is
// put back by the reconcile.
func statusEdited(own *StatusWriter) predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, okBefore := e.ObjectOld.(*keywardv1alpha1.APIKey)
		after, okAfter := e.ObjectNew.(*keywardv1alpha1.APIKey)
		if !okBefore || !okAfter {
			return false
		}
		// Only the fields the key controller owns: the verifier's usage reports and the delivery controller's
		// writes to status.webhook are not the key's, and reconciling them would only write the same status
		// again (and once per delivery).
		// An approver's decision or a leak report is a change to act on, whatever else the same event shows.
		if !equality.Semantic.DeepEqual(before.Status.Approval, after.Status.Approval) ||
			!equality.Semantic.DeepEqual(before.Status.Leaks, after.Status.Leaks) {
			return true
		}
		owner := keywardv1alpha1.StatusOwnerKeyController
		return !equality.Semantic.DeepEqual(before.Status.OwnedBy(owner), after.Status.OwnedBy(owner)) && !own.IsEcho(after)
	}}
}
