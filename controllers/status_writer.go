package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// StatusWriter owns the key controller's status writes. Before each patch it notes a fingerprint of the
// status it sends, so that the watch tells the echo of Keyward's own write (nothing to do) from anyone else's
// edit (put back at once) by construction: no caller can patch status without it. An echo is recognised
// once and then forgotten, so an idle manager remembers nothing per APIKey.
type StatusWriter struct {
	Client client.Client

	mu      sync.Mutex
	pending map[types.UID][sha256.Size]byte
}

// Patch writes ak's status as a merge patch from before.
func (w *StatusWriter) Patch(ctx context.Context, ak, before *keywardv1alpha1.APIKey) error {
	w.mu.Lock()
	if w.pending == nil {
		w.pending = map[types.UID][sha256.Size]byte{}
	}
	w.pending[ak.UID] = keyStatusFingerprint(ak.Status)
	w.mu.Unlock()
	patch := client.MergeFrom(before)
	if before.Status.Approval != nil && ak.Status.Approval == nil {
		// Dropping an approval record widens what the verifier grants to the spec: only for the spec the
		// reconcile judged, so the patch fails if the APIKey changed since.
		patch = client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	}
	err := w.Client.Status().Patch(ctx, ak, patch)
	if err != nil {
		w.mu.Lock()
		delete(w.pending, ak.UID)
		w.mu.Unlock()
	}
	return err
}

// IsEcho reports whether ak shows, in the parts of status the key controller writes, exactly what its last
// patch sent, and forgets that patch: a later edit that puts back the same status is someone else's.
func (w *StatusWriter) IsEcho(ak *keywardv1alpha1.APIKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	sent, ok := w.pending[ak.UID]
	if !ok || sent != keyStatusFingerprint(ak.Status) {
		return false
	}
	delete(w.pending, ak.UID)
	return true
}

// Forget drops what the writer remembers of a deleted APIKey.
func (w *StatusWriter) Forget(ak client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, ak.GetUID())
}

// keyStatusFingerprint hashes status as the API server stores it (JSON, times in whole seconds), only the
// fields the key controller owns (keywardv1alpha1.StatusFieldOwners): the verifier's and the delivery
// controller's writes are not its echo.
func keyStatusFingerprint(st keywardv1alpha1.APIKeyStatus) [sha256.Size]byte {
	b, err := json.Marshal(st.OwnedBy(keywardv1alpha1.StatusOwnerKeyController))
	if err != nil {
		return [sha256.Size]byte{} // a status always marshals; an empty fingerprint matches nothing written
	}
	return sha256.Sum256(b)
}
