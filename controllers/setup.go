package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// secretNameIndex indexes APIKeys by the Secret they write to, so that a Secret event reaches every APIKey
// that names it, including one waiting on a conflict.
const secretNameIndex = "keyward.dev/secret-name"

// CacheOptions restricts the manager's Secret cache to the Secrets Keyward owns, so unrelated Secrets cost
// no memory and no watch traffic, and, when namespaces are given (namespaced mode), every cache and watch to
// those namespaces, so the manager needs RBAC in them only.
func CacheOptions(namespaces ...string) cache.Options {
	owned, err := labels.NewRequirement(keywardv1alpha1.APIKeyNameLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant label key; cannot fail
	}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Label: labels.NewSelector().Add(*owned)},
	},
		// managedFields is most of an object's size and nothing Keyward reads; writes never send it back
		// (an update without managedFields keeps the server's).
		DefaultTransform: cache.TransformStripManagedFields(),
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// SetupWithManager registers the reconciler, its index and its watches. opts tunes the controller (tests
// pass a queue on a fake clock).
func (r *APIKeyReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keywardv1alpha1.APIKey{}, secretNameIndex, func(o client.Object) []string {
		return []string{SecretNameOf(o.(*keywardv1alpha1.APIKey))}
	}); err != nil {
		return fmt.Errorf("indexing APIKeys by Secret name: %w", err)
	}
	if r.Signer == nil {
		return errors.New("the APIKey controller needs a record signer")
	}
	r.secrets = &SecretWriter{Client: r.Client, APIReader: r.APIReader, Signer: r.Signer}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("apikey").
		// Spec edits bump the generation, a rotation or revocation changes an annotation, and any status edit
		// but the verifier's usage reports and the delivery controller's status.webhook is looked at, so a
		// forged status is put back at once.
		For(&keywardv1alpha1.APIKey{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, statusEdited(), deletionStarted()))).
		Watches(&corev1.Secret{}, r.secretEvents()).
		// A deleted APIKey may free a Secret that another APIKey waits for: whichever of the two deletions
		// (the APIKey's, its Secret's) the cache shows last, the waiting APIKey is looked at again then.
		Watches(&keywardv1alpha1.APIKey{}, handler.Funcs{DeleteFunc: func(ctx context.Context, e event.DeleteEvent,
			q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			ak, ok := e.Object.(*keywardv1alpha1.APIKey)
			if !ok {
				return
			}
			freed := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: SecretNameOf(ak)}}
			for _, req := range r.apiKeysUsing(ctx, freed) {
				if req.Name != ak.Name {
					q.Add(req)
				}
			}
		}}).
		WithOptions(opts).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the APIKey controller: %w", err)
	}
	return nil
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

// statusEdited passes updates that change an APIKey's status other than status.usage: Keyward's own status
// patches (their reconcile finds nothing to do and writes nothing) and anyone else's, which the reconcile
// puts back. The verifier's usage reports are the one status write that needs no reconcile.
func statusEdited() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, okBefore := e.ObjectOld.(*keywardv1alpha1.APIKey)
		after, okAfter := e.ObjectNew.(*keywardv1alpha1.APIKey)
		if !okBefore || !okAfter {
			return false
		}
		// The verifier's usage reports and the delivery controller's writes to status.webhook are not the
		// key's: reconciling them would only write the same status again (and once per delivery).
		a, b := before.Status.DeepCopy(), after.Status.DeepCopy()
		a.Usage, b.Usage = nil, nil
		a.Webhook, b.Webhook = nil, nil
		return !equality.Semantic.DeepEqual(a, b)
	}}
}
