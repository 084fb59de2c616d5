// Package managerconfig is how the manager command wires controller-runtime for Keyward: the cache (only
// Keyward's Secrets, and of APIKeys only what the manager reads) and the leader election defaults. The
// reconcilers in controllers/ do not depend on it; cmd/main.go and the tests that run the manager as shipped
// do.
package managerconfig

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
)

// Leader election defaults (--leader-election-*). A standby takes over from a leader that died within
// DefaultLeaseDuration + DefaultRenewDeadline of its last renewal, and takes a released Lease within
// 2.2 x DefaultRetryPeriod (client-go jitters each try by up to 1.2 x the period).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 500 * time.Millisecond
)

// CacheOptions restricts the manager's Secret cache to the Secrets Keyward owns, so unrelated Secrets cost
// no memory and no watch traffic, and, when namespaces are given (namespaced mode), every cache and watch to
// those namespaces, so the manager needs RBAC in them only.
func CacheOptions(namespaces ...string) cache.Options {
	owned, err := labels.NewRequirement(keywardv1alpha1.APIKeyNameLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant label key; cannot fail
	}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:          {Label: labels.NewSelector().Add(*owned), Transform: trimCachedSecret},
		&keywardv1alpha1.APIKey{}: {Transform: trimCachedAPIKey},
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

// requestAnnotations are the APIKey annotations the manager acts on; the admission policy
// keyward-apikey-annotations bounds each of them.
var requestAnnotations = []string{keywardv1alpha1.RotateAnnotation, keywardv1alpha1.RevokeAnnotation,
	keywardv1alpha1.AdoptOrphanAnnotation, keywardv1alpha1.WebhookTestAnnotation, keywardv1alpha1.RequestedAtAnnotation}

// maxKeptAnnotation caps what the cache keeps of one of them, for a cluster without the admission policy
// (which bounds the longest, keyward.dev/revoke, at 1024): a longer value is cut, and stays too long for
// the rules that judge it.
const maxKeptAnnotation = 4096

// trimCachedAPIKey keeps of a cached APIKey only what the manager reads, so that what a tenant may write
// (up to the API server's object size) does not become the shared manager's memory. It keeps the identity
// and lifecycle metadata, the annotations that ask Keyward for something, Keyward's own finalizer, the spec
// but its display name, description, scopes, rate limit and webhook CA bundle (the verifier's and the
// delivery's business: the delivery controller reads the APIKey from the API server before each attempt),
// and of status the fields the manager owns (keywardv1alpha1.StatusFieldOwners), who decided an approval and when, the leak reports (which the key controller acts on) and, of the verifier's usage
// counts, each key's last use (whether a previous key is still in use). Every one of the kept fields is bounded by the CRD or the admission policies.
//
// The manager writes APIKeys only with merge patches computed between two cached copies (status, and the
// spec-free metadata of its finalizer after a read from the API server), so what the cache lacks is never
// sent, and never removed.
func trimCachedAPIKey(obj any) (any, error) {
	ak, ok := obj.(*keywardv1alpha1.APIKey)
	if !ok {
		return cache.TransformStripManagedFields()(obj)
	}
	kept := &keywardv1alpha1.APIKey{TypeMeta: ak.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: ak.Name, Namespace: ak.Namespace, UID: ak.UID, ResourceVersion: ak.ResourceVersion,
		Generation: ak.Generation, CreationTimestamp: ak.CreationTimestamp, DeletionTimestamp: ak.DeletionTimestamp,
		DeletionGracePeriodSeconds: ak.DeletionGracePeriodSeconds,
	}, Spec: ak.Spec, Status: ak.Status.OwnedBy(keywardv1alpha1.StatusOwnerKeyController, keywardv1alpha1.StatusOwnerDelivery,
		keywardv1alpha1.StatusOwnerApprover, keywardv1alpha1.StatusOwnerLeakReporter)}
	for _, name := range requestAnnotations {
		if v, ok := ak.Annotations[name]; ok {
			v = v[:min(len(v), maxKeptAnnotation)]
			if kept.Annotations == nil {
				kept.Annotations = map[string]string{}
			}
			kept.Annotations[name] = v
		}
	}
	if controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) {
		kept.Finalizers = []string{keywardv1alpha1.WebhookFinalizer}
	}
	kept.Spec.DisplayName, kept.Spec.Description, kept.Spec.Scopes, kept.Spec.RateLimit = "", "", nil, nil
	if a := kept.Status.Approval; a != nil {
		// Of a decision, who, when and why: enough to notice a new one and to tell it. What it covers (up to 256 scopes) is read
		// from the API server when a policy asks for an approval, as the spec's scopes are.
		kept.Status.Approval = &keywardv1alpha1.ApprovalStatus{Approved: decidedBy(a.Approved), Denied: decidedBy(a.Denied)}
	}
	if kept.Spec.Webhook != nil {
		w := *kept.Spec.Webhook
		w.CABundle = ""
		kept.Spec.Webhook = &w
	}
	if u := ak.Status.Usage; u != nil {
		lastUses := &keywardv1alpha1.UsageStatus{}
		for _, k := range u.Keys {
			if k.LastUsedAt != nil {
				lastUses.Keys = append(lastUses.Keys, keywardv1alpha1.KeyUsage{KeyID: k.KeyID, LastUsedAt: k.LastUsedAt})
			}
		}
		if len(lastUses.Keys) > 0 {
			kept.Status.Usage = lastUses
		}
	}
	return kept, nil
}

// trimCachedSecret keeps of a Secret with Keyward's label what Keyward reads and writes there
// (keyrecord.TrimSecret): whoever labels a Secret of theirs as Keyward's cannot make the manager hold the rest.
func trimCachedSecret(obj any) (any, error) {
	if s, ok := obj.(*corev1.Secret); ok {
		return keyrecord.TrimSecret(s), nil
	}
	return cache.TransformStripManagedFields()(obj)
}

// decidedBy is d without what it covers: who, when and why (at most 1,024 characters, for the events).
func decidedBy(d *keywardv1alpha1.ApprovalDecision) *keywardv1alpha1.ApprovalDecision {
	if d == nil {
		return nil
	}
	return &keywardv1alpha1.ApprovalDecision{By: d.By, At: d.At, Reason: d.Reason}
}
