package policy

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// Change is one status write of the key controller: the status it read and the one it writes.
type Change struct {
	Before, After keywardv1alpha1.APIKeyStatus
	// BeforeReady and AfterReady are the Ready condition's reasons.
	BeforeReady, AfterReady keywardv1alpha1.ConditionReason
	// Revoked are the key IDs keyward.dev/revoke stopped in this write.
	Revoked []string
	// Expiring is set when this write is the first to see the current key within spec.webhook.expiringBefore of
	// an expiry that no renewal will prevent.
	Expiring bool
	// Restored is set when Before was a status Keyward did not sign: After puts back what it signed, which is
	// no new key, whatever the revisions say.
	Restored bool
	Now      time.Time
}

// TransitionKind is something that happened to a key.
type TransitionKind string

// The transitions, in the order Transitions lists them.
const (
	// KeyMinted: status shows a new current key (Transition.Reason says why).
	KeyMinted TransitionKind = "KeyMinted"
	// KeysRevoked: keyward.dev/revoke stopped previous keys, the current key unchanged.
	KeysRevoked TransitionKind = "KeysRevoked"
	// KeyWithdrawn: status stopped accepting the current key (revoked, or rotated with a zero grace period)
	// before its successor could be written to the Secret; no key is current until it is.
	KeyWithdrawn TransitionKind = "KeyWithdrawn"
	// KeyDisabled, KeyEnabled, KeyExpired: the Ready reason changed to Disabled, from Disabled back to
	// KeyReady, or to Expired.
	KeyDisabled TransitionKind = "KeyDisabled"
	KeyEnabled  TransitionKind = "KeyEnabled"
	KeyExpired  TransitionKind = "KeyExpired"
	// SecretConflicted and SpecInvalid: the Ready reason changed to SecretConflict or InvalidSpec.
	SecretConflicted TransitionKind = "SecretConflicted"
	// SecretBlocked: the Ready reason changed to SecretUnwritable.
	SecretBlocked TransitionKind = "SecretBlocked"
	SpecInvalid   TransitionKind = "SpecInvalid"
	// KeyExpiring: the current key is within expiringBefore of an expiry no renewal will prevent.
	KeyExpiring TransitionKind = "KeyExpiring"
	// PreviousKeyInUse: status.previousKeysInUse gained a key: a previous key about to stop is still used.
	PreviousKeyInUse TransitionKind = "PreviousKeyInUse"
)

// Transition is one thing that happened to a key in a status write.
type Transition struct {
	Kind TransitionKind
	// Reason is why a key was minted (KeyMinted).
	Reason keywardv1alpha1.RotationReason
	// PreviousKeyID is the key a new one replaced, and PreviousValidUntil until when it still works (nil:
	// no longer) (KeyMinted).
	PreviousKeyID      string
	PreviousValidUntil *metav1.Time
	// Revoked are the keys keyward.dev/revoke stopped (KeyMinted with reason Revoked, KeysRevoked,
	// KeyWithdrawn).
	Revoked []string
	// AfterWithdrawal is set on a KeyMinted that completes a KeyWithdrawn: the key it replaces was stopped
	// and announced earlier.
	AfterWithdrawal bool
	// PreviousLastUsedAt is when the key of a PreviousKeyInUse (PreviousKeyID, valid until
	// PreviousValidUntil) was last accepted.
	PreviousLastUsedAt *metav1.Time
}

// Transitions lists what a status write reports as having happened to the key, derived from what status
// said before and says after, not from what the reconcile did: a key found after a crash (written to the
// Secret by a manager that died before its status write) is announced like one minted now. Kubernetes
// events, the rotations metric and webhook events are all made from this one list.
func Transitions(c Change) []Transition {
	var out []Transition
	after, before := c.After, c.Before
	wasWithdrawn := before.KeyHash == "" && before.Revision > 0
	switch {
	case c.Restored:
		if len(c.Revoked) > 0 {
			out = append(out, Transition{Kind: KeysRevoked, Revoked: c.Revoked})
		}
	case after.KeyHash != "" && (after.Revision > before.Revision || wasWithdrawn && after.Revision == before.Revision):
		t := Transition{Kind: KeyMinted, Reason: after.LastRotationReason}
		switch {
		case wasWithdrawn:
			t.AfterWithdrawal = true
		case after.LastRotationReason == keywardv1alpha1.RotationInitial:
		case after.LastRotationReason == keywardv1alpha1.RotationRevoked:
			t.Revoked = c.Revoked
		default:
			t.PreviousKeyID = c.Before.KeyID
			if i := slices.IndexFunc(after.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == c.Before.KeyHash }); i >= 0 {
				t.PreviousValidUntil = after.PreviousKeys[i].ValidUntil.DeepCopy()
			}
		}
		out = append(out, t)
	case after.KeyHash == "" && after.Revision > 0 && before.KeyHash != "":
		revoked := slices.Sorted(slices.Values(append([]string{before.KeyID}, c.Revoked...)))
		out = append(out, Transition{Kind: KeyWithdrawn, Reason: after.LastRotationReason, PreviousKeyID: before.KeyID, Revoked: slices.Compact(revoked)})
	case len(c.Revoked) > 0:
		out = append(out, Transition{Kind: KeysRevoked, Revoked: c.Revoked})
	}
	if c.BeforeReady != c.AfterReady {
		switch {
		case c.AfterReady == keywardv1alpha1.ReasonDisabled:
			out = append(out, Transition{Kind: KeyDisabled})
		case c.AfterReady == keywardv1alpha1.ReasonExpired:
			out = append(out, Transition{Kind: KeyExpired})
		case c.AfterReady == keywardv1alpha1.ReasonSecretConflict:
			out = append(out, Transition{Kind: SecretConflicted})
		case c.AfterReady == keywardv1alpha1.ReasonSecretUnwritable:
			out = append(out, Transition{Kind: SecretBlocked})
		case c.AfterReady == keywardv1alpha1.ReasonInvalidSpec:
			out = append(out, Transition{Kind: SpecInvalid})
		case c.BeforeReady == keywardv1alpha1.ReasonDisabled && c.AfterReady == keywardv1alpha1.ReasonKeyReady:
			out = append(out, Transition{Kind: KeyEnabled})
		}
	}
	if c.Expiring {
		out = append(out, Transition{Kind: KeyExpiring})
	}
	for _, id := range after.PreviousKeysInUse {
		if slices.Contains(before.PreviousKeysInUse, id) {
			continue
		}
		t := Transition{Kind: PreviousKeyInUse, PreviousKeyID: id}
		if i := slices.IndexFunc(after.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyID == id }); i >= 0 {
			t.PreviousValidUntil = after.PreviousKeys[i].ValidUntil.DeepCopy()
		}
		if u := after.Usage; u != nil {
			if i := slices.IndexFunc(u.Keys, func(k keywardv1alpha1.KeyUsage) bool { return k.KeyID == id }); i >= 0 {
				t.PreviousLastUsedAt = u.Keys[i].LastUsedAt.DeepCopy()
			}
		}
		out = append(out, t)
	}
	return out
}
