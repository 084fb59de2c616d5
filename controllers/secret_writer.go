package controllers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/policy"
)

// errCacheLag is the error of SecretWriter.Write when the Secret exists but the cache does not show it yet.
var errCacheLag = errors.New("the Secret exists but the cache does not show it yet")

// foreignSecretError is the error of SecretWriter.Write when the Secret of that name is not the APIKey's;
// its message is the ownership rule's explanation.
type foreignSecretError struct{ why string }

func (e *foreignSecretError) Error() string { return e.why }

// SecretWriter owns every write of a key's Secret. It signs the record it writes and records a fingerprint
// of the content before the write, so the watch can tell the echo of its own writes from someone else's edit
// by construction: no caller can write a Secret without both.
type SecretWriter struct {
	Client    client.Client
	APIReader client.Reader
	Signer    *keyrecord.Signer

	mu      sync.Mutex
	written map[types.NamespacedName]writtenSecret
}

// writtenSecret is what the writer knows of its last write of a Secret: a fingerprint of the content, and
// the resourceVersion the API server gave it once the write has returned.
type writtenSecret struct {
	fingerprint     [sha256.Size]byte
	resourceVersion string
}

// Write creates the Secret of ak, or updates existing when it differs from c, signing the record for sub.
// It reports whether it wrote. An update is a merge patch from existing (the cache's copy, which keeps only
// what Keyward reads and writes: keyrecord.TrimSecret), so it sends only what Keyward changes and leaves
// everything else in the Secret alone; it carries existing's resourceVersion, so a stale cache fails
// instead of overwriting a newer key.
func (w *SecretWriter) Write(ctx context.Context, ak *keywardv1alpha1.APIKey, existing *corev1.Secret, sub keyrecord.Subject, c keyrecord.Contents) (bool, error) {
	if existing == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: sub.Secret}}
		keyrecord.WriteSecret(s, c, w.Signer, sub)
		if err := controllerutil.SetControllerReference(ak, s, w.Client.Scheme()); err != nil {
			return false, fmt.Errorf("setting the owner of Secret %s: %w", s.Name, err)
		}
		w.record(s)
		err := w.Client.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			return false, w.explainExisting(ctx, ak, s.Name)
		}
		if err != nil {
			return false, fmt.Errorf("creating Secret %s: %w", s.Name, err)
		}
		w.wrote(s)
		return true, nil
	}
	s := existing.DeepCopy()
	keyrecord.WriteSecret(s, c, w.Signer, sub)
	if err := controllerutil.SetControllerReference(ak, s, w.Client.Scheme()); err != nil {
		return false, fmt.Errorf("setting the owner of Secret %s: %w", s.Name, err)
	}
	if equality.Semantic.DeepEqual(existing, s) {
		return false, nil
	}
	w.record(s)
	if err := w.Client.Patch(ctx, s, client.MergeFromWithOptions(existing, client.MergeFromWithOptimisticLock{})); err != nil {
		return false, fmt.Errorf("updating Secret %s: %w", s.Name, err)
	}
	w.wrote(s)
	return true, nil
}

// explainExisting asks the API server about a Secret that the cache did not show. A Secret this APIKey
// controls but whose Keyward label someone removed is labelled again, so that the cache sees it.
func (w *SecretWriter) explainExisting(ctx context.Context, ak *keywardv1alpha1.APIKey, name string) error {
	s := &corev1.Secret{}
	if err := w.APIReader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: name}, s); err != nil {
		return fmt.Errorf("reading Secret %s after it already existed: %w", name, err)
	}
	verdict, why := ownershipOf(ak, s)
	switch verdict {
	case policy.OursUnlabelled:
		base := s.DeepCopy()
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[keywardv1alpha1.APIKeyNameLabel] = ak.Name
		w.record(s)
		if err := w.Client.Patch(ctx, s, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("restoring the %s label of Secret %s: %w", keywardv1alpha1.APIKeyNameLabel, name, err)
		}
		w.wrote(s)
		log.FromContext(ctx).Info("Restored the label that lets Keyward see its Secret", "secret", klog.KObj(s))
		return errCacheLag
	case policy.Foreign:
		return &foreignSecretError{why: why}
	}
	// Labelled: the cache will show it, and the next reconcile judges it from there.
	return errCacheLag
}

// record notes the content of a write about to be sent. Its echo may reach the watch before the write
// returns, so until then the content alone identifies it.
func (w *SecretWriter) record(s *corev1.Secret) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.written == nil {
		w.written = map[types.NamespacedName]writtenSecret{}
	}
	w.written[client.ObjectKeyFromObject(s)] = writtenSecret{fingerprint: fingerprint(s)}
}

// wrote notes the resourceVersion of a write that returned. From then on only that version is the echo:
// someone who puts back exactly what Keyward wrote (a label they had changed, say) makes a new version,
// and that is looked at.
func (w *SecretWriter) wrote(s *corev1.Secret) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := client.ObjectKeyFromObject(s)
	if last, ok := w.written[key]; ok && last.fingerprint == fingerprint(s) {
		last.resourceVersion = s.ResourceVersion
		w.written[key] = last
	}
}

// IsEcho reports whether o is what the writer last wrote to that Secret: the same content and, once the
// write has returned, the same resourceVersion. An echo is recognised once and then forgotten, so an idle
// manager remembers nothing per Secret, and a later version with the same content is someone else's.
func (w *SecretWriter) IsEcho(o client.Object) bool {
	s, ok := o.(*corev1.Secret)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key := client.ObjectKeyFromObject(s)
	last, ok := w.written[key]
	if !ok || last.fingerprint != fingerprint(s) || (last.resourceVersion != "" && last.resourceVersion != s.ResourceVersion) {
		return false
	}
	delete(w.written, key)
	return true
}

// Forget drops what the writer remembers of a deleted Secret.
func (w *SecretWriter) Forget(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.written, client.ObjectKeyFromObject(o))
}

// fingerprint hashes what the writer controls in a Secret, and whether it may write it at all: type,
// immutability, labels, annotations, data, owners, as the cache keeps them (keyrecord.TrimSecret), so that a
// write, the API server's answer to it and its echo in the cache have the same fingerprint.
func fingerprint(s *corev1.Secret) [sha256.Size]byte {
	s = keyrecord.TrimSecret(s)
	h := sha256.New()
	write := func(parts ...string) {
		for _, p := range parts {
			fmt.Fprintf(h, "%d:%s", len(p), p)
		}
	}
	write(string(s.Type), fmt.Sprint(ptr.Deref(s.Immutable, false)))
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
