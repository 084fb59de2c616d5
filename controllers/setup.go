package controllers

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// secretNameIndex indexes APIKeys by the Secret they write to, so that a Secret event reaches every APIKey
// that names it, including one waiting on a conflict.
const secretNameIndex = "keyward.dev/secret-name"

// CacheOptions restricts the manager's Secret cache to the Secrets Keyward owns, so unrelated Secrets cost
// no memory and no watch traffic.
func CacheOptions() cache.Options {
	owned, err := labels.NewRequirement(keywardv1alpha1.APIKeyNameLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant label key; cannot fail
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Label: labels.NewSelector().Add(*owned)},
	}}
}

// SetupWithManager registers the reconciler, its index and its watches. opts tunes the controller (tests
// pass a queue on a fake clock).
func (r *APIKeyReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keywardv1alpha1.APIKey{}, secretNameIndex, func(o client.Object) []string {
		return []string{SecretNameOf(o.(*keywardv1alpha1.APIKey))}
	}); err != nil {
		return fmt.Errorf("indexing APIKeys by Secret name: %w", err)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("apikey").
		// Status-only updates (our own patches, the verifier's usage reports) need no reconcile; spec edits
		// bump the generation and a manual rotation changes an annotation.
		For(&keywardv1alpha1.APIKey{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Secret{}, r.secretEvents()).
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
			if !r.ownWrites.isEcho(e.Object) {
				enqueue(ctx, e.Object, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			if !r.ownWrites.isEcho(e.ObjectNew) {
				enqueue(ctx, e.ObjectNew, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			r.ownWrites.forget(e.Object)
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
		client.MatchingFields{secretNameIndex: secret.GetName()}); err == nil {
		for i := range list.Items {
			add(list.Items[i].Name)
		}
	}
	return reqs
}

// writeLog remembers a fingerprint of the content of each Secret the reconciler last wrote. It is recorded
// before the write, so the echo is recognised even when the watch event overtakes the write's response; and
// it compares content, so an event is skipped only when the Secret is exactly what we wrote.
type writeLog struct {
	mu           sync.Mutex
	fingerprints map[types.NamespacedName][sha256.Size]byte
}

func (w *writeLog) record(s *corev1.Secret) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fingerprints == nil {
		w.fingerprints = map[types.NamespacedName][sha256.Size]byte{}
	}
	w.fingerprints[client.ObjectKeyFromObject(s)] = fingerprint(s)
}

func (w *writeLog) isEcho(o client.Object) bool {
	s, ok := o.(*corev1.Secret)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	fp, ok := w.fingerprints[client.ObjectKeyFromObject(s)]
	return ok && fp == fingerprint(s)
}

func (w *writeLog) forget(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.fingerprints, client.ObjectKeyFromObject(o))
}

// fingerprint hashes what the reconciler controls in a Secret: type, labels, annotations, data, owners.
func fingerprint(s *corev1.Secret) [sha256.Size]byte {
	h := sha256.New()
	write := func(parts ...string) {
		for _, p := range parts {
			fmt.Fprintf(h, "%d:%s", len(p), p)
		}
	}
	write(string(s.Type))
	for _, m := range []map[string]string{s.Labels, s.Annotations} {
		write("map")
		for _, k := range slices.Sorted(maps.Keys(m)) {
			write(k, m[k])
		}
	}
	write("data")
	for _, k := range slices.Sorted(maps.Keys(s.Data)) {
		write(k, string(s.Data[k]))
	}
	for _, ref := range s.OwnerReferences {
		write("owner", ref.Kind, ref.Name, string(ref.UID))
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
