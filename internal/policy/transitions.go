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
	// KeyDisabled, KeyEnabled, KeyExpired: the Ready reason changed to Disabled, from Disabled back to
	// KeyReady, or to Expired.
	KeyDisabled TransitionKind = "KeyDisabled"
	KeyEnabled  TransitionKind = "KeyEnabled"
	KeyExpired  TransitionKind = "KeyExpired"
	// SecretConflicted and SpecInvalid: the Ready reason changed to SecretConflict or InvalidSpec.
	SecretConflicted TransitionKind = "SecretConflicted"
	SpecInvalid      TransitionKind = "SpecInvalid"
	// KeyExpiring: the current key is within expiringBefore of an expiry no renewal will prevent.
	KeyExpiring TransitionKind = "KeyExpiring"
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
	// Revoked are the keys keyward.dev/revoke stopped (KeyMinted with reason Revoked, KeysRevoked).
	Revoked []string
}

// Transitions lists what a status write reports as having happened to the key, derived from what status
// said before and says after, not from what the reconcile did: a key found after a crash (written to the
// Secret by a manager that died before its status write) is announced like one minted now. Kubernetes
// events, the rotations metric and webhook events are all made from this one list.
func Transitions(c Change) []Transition {
	var out []Transition
	after := c.After
	if after.Revision > c.Before.Revision && after.KeyHash != "" && !c.Restored {
		t := Transition{Kind: KeyMinted, Reason: after.LastRotationReason}
		switch after.LastRotationReason {
		case keywardv1alpha1.RotationInitial:
		case keywardv1alpha1.RotationRevoked:
			t.Revoked = c.Revoked
		default:
			t.PreviousKeyID = c.Before.KeyID
			if i := slices.IndexFunc(after.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == c.Before.KeyHash }); i >= 0 {
				t.PreviousValidUntil = after.PreviousKeys[i].ValidUntil.DeepCopy()
			}
		}
		out = append(out, t)
	} else if len(c.Revoked) > 0 {
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
		case c.AfterReady == keywardv1alpha1.ReasonInvalidSpec:
			out = append(out, Transition{Kind: SpecInvalid})
		case c.BeforeReady == keywardv1alpha1.ReasonDisabled && c.AfterReady == keywardv1alpha1.ReasonKeyReady:
			out = append(out, Transition{Kind: KeyEnabled})
		}
	}
	if c.Expiring {
		out = append(out, Transition{Kind: KeyExpiring})
	}
	return out
}
