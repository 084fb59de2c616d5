package keyrecord

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
)

// FromStatus is the record that status shows, whether or not Keyward wrote it.
func FromStatus(st keywardv1alpha1.APIKeyStatus) Record {
	r := Record{Hash: st.KeyHash, Revision: st.Revision, Reason: st.LastRotationReason, HandledToken: st.LastHandledRotateToken}
	if st.IssuedAt != nil {
		r.IssuedAt = st.IssuedAt.UTC()
	}
	if st.ExpiresAt != nil {
		r.ExpiresAt = st.ExpiresAt.UTC()
	}
	for _, p := range st.PreviousKeys {
		r.Previous = append(r.Previous, PreviousKey{Hash: p.KeyHash, ValidUntil: p.ValidUntil.UTC()})
	}
	return r
}

// GenuineStatus returns the record status shows when its signature verifies for sub, and false (with a zero
// record) when status shows a record Keyward did not sign or shows none.
func GenuineStatus(st keywardv1alpha1.APIKeyStatus, signer *Signer, sub Subject) (Record, bool) {
	r := FromStatus(st)
	if r.IsZero() || !signer.Verify(sub, r, st.RecordSignature) {
		return Record{}, false
	}
	return r, true
}

// WriteStatus sets every status field that describes the key from r (ShowRecord) and signs exactly what it
// wrote (SignStatus).
func WriteStatus(st *keywardv1alpha1.APIKeyStatus, r Record, hint string, renewal, now time.Time, signer *Signer, sub Subject) {
	ShowRecord(st, r, hint, renewal, now)
	SignStatus(st, signer, sub)
}

// ShowRecord sets every status field that describes the key from r: hash, ID, revision, times, reason,
// handled token and the previous keys still live at now, leaving the signature to SignStatus. hint is
// keys.Hint of the key. renewal is when the next key will be minted (zero when never).
func ShowRecord(st *keywardv1alpha1.APIKeyStatus, r Record, hint string, renewal, now time.Time) {
	r.Previous = LivePrevious(r.Previous, now)
	st.KeyHash = r.Hash
	st.KeyID = keys.IDFromHash(r.Hash)
	st.KeyHint = hint
	st.Revision = r.Revision
	st.IssuedAt = timePtr(r.IssuedAt)
	st.ExpiresAt = timePtr(r.ExpiresAt)
	st.RenewalTime = timePtr(renewal)
	st.LastRotationReason = r.Reason
	st.LastHandledRotateToken = r.HandledToken
	st.PreviousKeys = nil
	for _, p := range r.Previous {
		st.PreviousKeys = append(st.PreviousKeys, keywardv1alpha1.PreviousKey{
			KeyID: keys.IDFromHash(p.Hash), KeyHash: p.Hash, ValidUntil: metav1.NewTime(p.ValidUntil.UTC())})
	}
}

// ShowNoRecord clears every status field ShowRecord sets, and the signature: status shows no key.
func ShowNoRecord(st *keywardv1alpha1.APIKeyStatus) {
	st.KeyHash, st.KeyID, st.KeyHint, st.Revision = "", "", "", 0
	st.IssuedAt, st.ExpiresAt, st.RenewalTime = nil, nil, nil
	st.LastRotationReason, st.LastHandledRotateToken, st.PreviousKeys, st.RecordSignature = "", "", nil, ""
}

// SignStatus signs, for sub, the record st shows.
func SignStatus(st *keywardv1alpha1.APIKeyStatus, signer *Signer, sub Subject) {
	st.RecordSignature = signer.Sign(sub, FromStatus(*st))
}

func timePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.UTC())
	return &mt
}
