package v1alpha1

import "slices"

// AcceptsKeyID reports whether status lists keyID as its current key (with a hash: a withdrawn record
// accepts none) or as a previous key: whether a key of that ID is still in force, whatever its expiry.
func (st *APIKeyStatus) AcceptsKeyID(keyID string) bool {
	return (st.KeyHash != "" && st.KeyID == keyID) ||
		slices.ContainsFunc(st.PreviousKeys, func(p PreviousKey) bool { return p.KeyID == keyID })
}
