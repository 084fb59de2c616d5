package policy

import (
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
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
	// ApprovalScopes are the scopes that need an approval; Approved is set when an approval covers the spec
	// as it is (Observation.Approval).
	ApprovalScopes []keywardv1alpha1.Scope
	Approved       bool
	Now            time.Time
}

// TransitionKind is something that happened to a key. Each kind has one entry in the announcement table
// (internal/announce), which says what Kubernetes event, webhook event and metric tell it; its value is the
// name of its event where it has one.
type TransitionKind string

// The transitions, in the order Transitions lists them. Each is named as the state or event it reports:
// TransitionSecretConflict is the Ready reason SecretConflict and the event SecretConflict.
const (
	// TransitionStatusRestored: status showed a key record Keyward did not sign; this write puts back what it
	// signed (Transition.Fields names what was changed).
	TransitionStatusRestored TransitionKind = "StatusRestored"
	// TransitionPreviousKeysDropped: a mint dropped the oldest previous keys beyond MaxPreviousKeys
	// (Transition.Dropped).
	TransitionPreviousKeysDropped TransitionKind = "PreviousKeysDropped"

	// The new current keys (Transition.Reason says why it was minted).

	// TransitionKeyCreated: the first key.
	TransitionKeyCreated TransitionKind = "KeyCreated"
	// TransitionKeyRotated: a renewal or a manual rotation replaced the current key (PreviousKeyID, until
	// PreviousValidUntil).
	TransitionKeyRotated TransitionKind = "KeyRotated"
	// TransitionWithdrawalCompleted: the key that follows a withdrawn one; the key it replaces was stopped
	// and announced when it was withdrawn.
	TransitionWithdrawalCompleted TransitionKind = "WithdrawalCompleted"
	// TransitionKeyRevoked: keyward.dev/revoke named the current key, which a new key replaced (Revoked).
	TransitionKeyRevoked TransitionKind = "KeyRevoked"
	// TransitionSecretRecreated: the Secret was deleted; a new key went into a new one.
	TransitionSecretRecreated TransitionKind = "SecretRecreated"
	// TransitionSecretTampered: someone else changed the key or its record; a new key replaced it.
	TransitionSecretTampered TransitionKind = "SecretTampered"

	// TransitionPreviousKeysRevoked: keyward.dev/revoke stopped previous keys, the current key unchanged.
	TransitionPreviousKeysRevoked TransitionKind = "PreviousKeysRevoked"
	// TransitionKeyWithdrawn: status stopped accepting the current key (revoked, or rotated with a zero grace
	// period) before its successor could be written to the Secret; no key is current until it is.
	TransitionKeyWithdrawn TransitionKind = "KeyWithdrawn"

	// The Ready reason changed: to Disabled, from Disabled back to KeyReady, to Expired, SecretConflict,
	// SecretUnwritable or InvalidSpec.

	// TransitionKeyDisabled: Ready's reason became Disabled.
	TransitionKeyDisabled TransitionKind = "KeyDisabled"
	// TransitionKeyEnabled: Ready's reason went from Disabled back to KeyReady.
	TransitionKeyEnabled TransitionKind = "KeyEnabled"
	// TransitionKeyExpired: Ready's reason became Expired.
	TransitionKeyExpired TransitionKind = "KeyExpired"
	// TransitionSecretConflict: Ready's reason became SecretConflict.
	TransitionSecretConflict TransitionKind = "SecretConflict"
	// TransitionSecretUnwritable: Ready's reason became SecretUnwritable.
	TransitionSecretUnwritable TransitionKind = "SecretUnwritable"
	// TransitionInvalidSpec: Ready's reason became InvalidSpec.
	TransitionInvalidSpec TransitionKind = "InvalidSpec"

	// TransitionKeyExpiring: the current key is within expiringBefore of an expiry no renewal will prevent.
	TransitionKeyExpiring TransitionKind = "KeyExpiring"
	// TransitionPreviousKeyInUse: status.previousKeysInUse gained a key: a previous key about to stop is still
	// used.
	TransitionPreviousKeyInUse TransitionKind = "PreviousKeyInUse"
	// TransitionPolicyViolation: the PolicyViolation condition appeared or now names other violations
	// (Transition.Fields holds them).
	TransitionPolicyViolation TransitionKind = "PolicyViolation"

	// The approval an APIKeyPolicy asks for (approvalRequiredScopes).

	// TransitionApprovalRequested: Ready's reason became AwaitingApproval (Transition.Scopes need it).
	TransitionApprovalRequested TransitionKind = "ApprovalRequested"
	// TransitionApproved: Ready's reason left AwaitingApproval or ApprovalDenied because an approval now
	// covers the spec (DecidedBy, DecisionReason).
	TransitionApproved TransitionKind = "Approved"
	// TransitionApprovalDenied: Ready's reason became ApprovalDenied (DecidedBy, DecisionReason).
	TransitionApprovalDenied TransitionKind = "ApprovalDenied"

	// TransitionKeyLeaked: status.leaks reports a key the KeyLeaked condition did not name yet
	// (Transition.Leak; Revoked when the response stopped it in this write).
	TransitionKeyLeaked TransitionKind = "KeyLeaked"
)

// Transition is one thing that happened to a key in a status write.
type Transition struct {
	Kind TransitionKind
	// Reason is why a new current key was minted, or why one was withdrawn.
	Reason keywardv1alpha1.RotationReason
	// PreviousKeyID is the key a new one replaced, and PreviousValidUntil until when it still works (nil:
	// no longer) (KeyRotated, SecretRecreated, SecretTampered; KeyWithdrawn names the withdrawn key).
	PreviousKeyID      string
	PreviousValidUntil *metav1.Time
	// Revoked are the keys keyward.dev/revoke stopped (KeyRevoked, PreviousKeysRevoked, KeyWithdrawn).
	Revoked []string
	// PreviousLastUsedAt is when the key of a PreviousKeyInUse (PreviousKeyID, valid until
	// PreviousValidUntil) was last accepted.
	PreviousLastUsedAt *metav1.Time
	// Dropped are the previous keys a mint dropped (PreviousKeysDropped).
	Dropped []string
	// Fields are the status fields of the record Keyward did not sign (StatusRestored).
	Fields []string
	// Scopes are the scopes that need an approval (ApprovalRequested, Approved, ApprovalDenied).
	Scopes []keywardv1alpha1.Scope
	// DecidedBy and DecisionReason are the approver and its reason (Approved, ApprovalDenied).
	DecidedBy, DecisionReason string
	// Leak is the report of a leaked key (KeyLeaked), and LeakAccepted whether the key is still accepted
	// after this write.
	Leak         *keywardv1alpha1.LeakReport
	LeakAccepted bool
}

// Transitions lists what a status write reports as having happened to the key, derived from what status
// said before and says after, not from what the reconcile did: a key found after a crash (written to the
// Secret by a manager that died before its status write) is announced like one minted now. Kubernetes
// events, the rotations metric and webhook events are all made from this one list.
func Transitions(c Change) []Transition {
	var out []Transition
	after, before := c.After, c.Before
	waited := c.BeforeReady == keywardv1alpha1.ReasonAwaitingApproval || c.BeforeReady == keywardv1alpha1.ReasonApprovalDenied
	if waited && c.Approved && after.Approval != nil && after.Approval.Approved != nil {
		d := after.Approval.Approved
		out = append(out, Transition{Kind: TransitionApproved, Scopes: c.ApprovalScopes, DecidedBy: d.By, DecisionReason: d.Reason})
	}
	wasWithdrawn := before.KeyHash == "" && before.Revision > 0
	switch {
	case c.Restored:
		if len(c.Revoked) > 0 {
			out = append(out, Transition{Kind: TransitionPreviousKeysRevoked, Revoked: c.Revoked})
		}
	case after.KeyHash != "" && (after.Revision > before.Revision || wasWithdrawn && after.Revision == before.Revision):
		t := Transition{Kind: TransitionKeyRotated, Reason: after.LastRotationReason}
		switch {
		case wasWithdrawn:
			t.Kind = TransitionWithdrawalCompleted
		case after.LastRotationReason == keywardv1alpha1.RotationInitial:
			t.Kind = TransitionKeyCreated
		case after.LastRotationReason == keywardv1alpha1.RotationRevoked:
			t.Kind, t.Revoked = TransitionKeyRevoked, c.Revoked
		default:
			switch after.LastRotationReason {
			case keywardv1alpha1.RotationSecretMissing:
				t.Kind = TransitionSecretRecreated
			case keywardv1alpha1.RotationSecretTampered:
				t.Kind = TransitionSecretTampered
			}
			t.PreviousKeyID = c.Before.KeyID
			if i := slices.IndexFunc(after.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == c.Before.KeyHash }); i >= 0 {
				t.PreviousValidUntil = after.PreviousKeys[i].ValidUntil.DeepCopy()
			}
		}
		out = append(out, t)
	case after.KeyHash == "" && after.Revision > 0 && before.KeyHash != "":
		revoked := slices.Sorted(slices.Values(append([]string{before.KeyID}, c.Revoked...)))
		out = append(out, Transition{Kind: TransitionKeyWithdrawn, Reason: after.LastRotationReason, PreviousKeyID: before.KeyID, Revoked: slices.Compact(revoked)})
	case len(c.Revoked) > 0:
		out = append(out, Transition{Kind: TransitionPreviousKeysRevoked, Revoked: c.Revoked})
	}
	if c.BeforeReady != c.AfterReady {
		switch {
		case c.AfterReady == keywardv1alpha1.ReasonDisabled:
			out = append(out, Transition{Kind: TransitionKeyDisabled})
		case c.AfterReady == keywardv1alpha1.ReasonExpired:
			out = append(out, Transition{Kind: TransitionKeyExpired})
		case c.AfterReady == keywardv1alpha1.ReasonSecretConflict:
			out = append(out, Transition{Kind: TransitionSecretConflict})
		case c.AfterReady == keywardv1alpha1.ReasonSecretUnwritable:
			out = append(out, Transition{Kind: TransitionSecretUnwritable})
		case c.AfterReady == keywardv1alpha1.ReasonInvalidSpec:
			out = append(out, Transition{Kind: TransitionInvalidSpec})
		case c.AfterReady == keywardv1alpha1.ReasonAwaitingApproval:
			out = append(out, Transition{Kind: TransitionApprovalRequested, Scopes: c.ApprovalScopes})
		case c.AfterReady == keywardv1alpha1.ReasonApprovalDenied:
			t := Transition{Kind: TransitionApprovalDenied, Scopes: c.ApprovalScopes}
			if after.Approval != nil && after.Approval.Denied != nil {
				t.DecidedBy, t.DecisionReason = after.Approval.Denied.By, after.Approval.Denied.Reason
			}
			out = append(out, t)
		case c.BeforeReady == keywardv1alpha1.ReasonDisabled && c.AfterReady == keywardv1alpha1.ReasonKeyReady:
			out = append(out, Transition{Kind: TransitionKeyEnabled})
		}
	}
	if c.Expiring {
		out = append(out, Transition{Kind: TransitionKeyExpiring})
	}
	if v := violationsOf(after); v != "" && v != violationsOf(before) {
		out = append(out, Transition{Kind: TransitionPolicyViolation, Fields: []string{v}})
	}
	beforeLeaks := ""
	if c := meta.FindStatusCondition(before.Conditions, keywardv1alpha1.ConditionKeyLeaked); c != nil {
		beforeLeaks = c.Message
	}
	for i := range after.Leaks {
		l := after.Leaks[i]
		if strings.Contains(beforeLeaks, "Key "+l.KeyID+" ") {
			continue
		}
		t := Transition{Kind: TransitionKeyLeaked, Leak: &l, LeakAccepted: after.AcceptsKeyID(l.KeyID)}
		if slices.Contains(c.Revoked, l.KeyID) {
			t.Revoked = c.Revoked
		}
		out = append(out, t)
	}
	for _, id := range after.PreviousKeysInUse {
		if slices.Contains(before.PreviousKeysInUse, id) {
			continue
		}
		t := Transition{Kind: TransitionPreviousKeyInUse, PreviousKeyID: id}
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

// violationsOf is the message of a status's PolicyViolation condition, "" when it has none.
func violationsOf(st keywardv1alpha1.APIKeyStatus) string {
	if c := meta.FindStatusCondition(st.Conditions, keywardv1alpha1.ConditionPolicyViolation); c != nil && c.Status == metav1.ConditionTrue {
		return c.Message
	}
	return ""
}
