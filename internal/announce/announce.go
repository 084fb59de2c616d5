// Package announce is the one table that says how each kind of transition (policy.TransitionKind) is told:
// its Kubernetes event (type, reason, action, note), what the manager logs, its webhook event and fields, and
// whether it counts as a mint. The key controller's events, the webhook messages it queues and its mint
// announcements are all generated from it; a transition kind without an entry fails the package's test.
package announce

import (
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/policy"
)

// Facts are what an announcement's words name beyond its transition; the key controller fills them in
// from the status write that makes the transition. None of them is key material.
type Facts struct {
	// Secret is the key's Secret; KeyID and Revision the current key as status shows it after the write.
	Secret   string
	KeyID    string
	Revision int64
	// Ready is the Ready condition's message after the write.
	Ready string
	// Tampered names what someone else changed in the Secret, and TamperError says it (SecretTampered).
	Tampered    string
	TamperError string
	// ReplacedFate says what became of the last genuine key a recreation or a tamper replaced.
	ReplacedFate string
	// DroppedByZeroGrace are the earlier keys a zero-grace rotation revoked with the current one.
	DroppedByZeroGrace []string
}

// Event is the Kubernetes event of a transition.
type Event struct {
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type   string
	Reason keywardv1alpha1.EventReason
	Action string
	// Note is the event's note; Log what the manager logs beside it ("" for nothing).
	Note func(t policy.Transition, f Facts) string
	Log  func(t policy.Transition, f Facts) string
}

// Announcement is how one kind of transition is told.
type Announcement struct {
	// Event is its Kubernetes event; nil for none.
	Event *Event
	// Webhook is its webhook event ("" for none), and WebhookFields sets the message's fields beyond the key
	// ID, revision and expiry every message carries.
	Webhook       keywardv1alpha1.WebhookEvent
	WebhookFields func(t policy.Transition, m *keywardv1alpha1.WebhookMessage)
	// Mint is set when the transition shows a new current key: its event is created once under a name of
	// its own, whoever writes the status that shows the key, and it counts in keyward_apikey_rotations_total.
	Mint bool
}

// Of is the announcement of kind k. A kind without an entry is announced by nothing; the package's test
// makes sure there is none.
func Of(k policy.TransitionKind) Announcement { return table[k] }

// Table is a copy of the whole table, for those that document it (hack/apidocs writes the events reference).
func Table() map[policy.TransitionKind]Announcement { return maps.Clone(table) }

func note(format string, args func(t policy.Transition, f Facts) []any) func(policy.Transition, Facts) string {
	return func(t policy.Transition, f Facts) string { return fmt.Sprintf(format, args(t, f)...) }
}

func fixed(s string) func(policy.Transition, Facts) string {
	return func(policy.Transition, Facts) string { return s }
}

func readyMessage(_ policy.Transition, f Facts) string { return f.Ready }

// withApproval names the scopes that need the approval and, for a decision, the approver and its reason.
func withApproval(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
	m.ApprovalScopes, m.DecidedBy, m.DecisionReason = t.Scopes, t.DecidedBy, t.DecisionReason
}

func reasonSuffix(t policy.Transition) string {
	if t.DecisionReason == "" {
		return ""
	}
	return " (" + t.DecisionReason + ")"
}

func withReason(t policy.Transition, m *keywardv1alpha1.WebhookMessage) { m.Reason = string(t.Reason) }

func withPrevious(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
	m.Reason, m.PreviousKeyID, m.PreviousValidUntil = string(t.Reason), t.PreviousKeyID, t.PreviousValidUntil
}

// until says until when the key a rotation replaced stays valid.
func until(t policy.Transition) string {
	if t.PreviousValidUntil != nil {
		return "stays valid until " + t.PreviousValidUntil.UTC().Format(time.RFC3339)
	}
	return "is no longer valid"
}

var table = map[policy.TransitionKind]Announcement{
	policy.TransitionStatusRestored: {Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventStatusRestored, Action: "Restore",
		Note: note("Status showed a key record Keyward did not sign (%s); it now shows only what Keyward signed",
			func(t policy.Transition, _ Facts) []any { return []any{strings.Join(t.Fields, ", ")} }),
		Log: fixed("Status showed a key record Keyward did not sign; restored it")}},
	policy.TransitionPreviousKeysDropped: {Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventPreviousKeysDropped, Action: "Rotate",
		Note: note("At most %d previous keys stay accepted; the oldest, %s, no longer are",
			func(t policy.Transition, f Facts) []any {
				return []any{policy.MaxPreviousKeys, strings.Join(t.Dropped, ", ")}
			}),
		Log: fixed("Dropped the oldest previous keys to keep the record bounded")}},

	policy.TransitionKeyCreated: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyCreated, WebhookFields: withReason,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyCreated, Action: "Mint",
			Note: note("Minted key %s (revision %d) into Secret %s",
				func(_ policy.Transition, f Facts) []any { return []any{f.KeyID, f.Revision, f.Secret} }),
			Log: fixed("Minted the first key")}},
	policy.TransitionKeyRotated: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyRotated, WebhookFields: withPrevious,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyRotated, Action: "Rotate",
			Note: func(t policy.Transition, f Facts) string {
				extra := ""
				if len(f.DroppedByZeroGrace) > 0 {
					extra = "; with a zero grace period the earlier keys " + strings.Join(f.DroppedByZeroGrace, ", ") + " were revoked too"
				}
				return fmt.Sprintf("Rotated to key %s (revision %d, reason %s); previous key %s %s%s", f.KeyID, f.Revision, t.Reason,
					t.PreviousKeyID, until(t), extra)
			},
			Log: fixed("Rotated the key")}},
	// The key this one replaces was announced (key.revoked, KeyWithdrawn) when it was withdrawn.
	policy.TransitionWithdrawalCompleted: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyRotated, WebhookFields: withReason,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyRotated, Action: "Mint",
			Note: note("Minted key %s (revision %d, reason %s) into Secret %s; the key before it was withdrawn earlier and stays refused",
				func(t policy.Transition, f Facts) []any { return []any{f.KeyID, f.Revision, t.Reason, f.Secret} }),
			Log: fixed("Minted the key that follows a withdrawn one")}},
	policy.TransitionKeyRevoked: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyRevoked,
		WebhookFields: func(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
			m.Reason, m.RevokedKeyIDs = string(t.Reason), t.Revoked
		},
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventKeyRevoked, Action: "Revoke",
			Note: note("Revoked key %s at once (%s); minted key %s (revision %d) into Secret %s",
				func(t policy.Transition, f Facts) []any {
					return []any{strings.Join(t.Revoked, ", "), keywardv1alpha1.RevokeAnnotation, f.KeyID, f.Revision, f.Secret}
				}),
			Log: func(t policy.Transition, _ Facts) string {
				return "Replaced a revoked key " + strings.Join(t.Revoked, ", ")
			}}},
	policy.TransitionSecretRecreated: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyRotated, WebhookFields: withPrevious,
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventSecretRecreated, Action: "Mint",
			Note: note("Secret %s was deleted; minted key %s (revision %d); %s",
				func(_ policy.Transition, f Facts) []any { return []any{f.Secret, f.KeyID, f.Revision, f.ReplacedFate} }),
			Log: fixed("Recreated the deleted Secret with a new key")}},
	policy.TransitionSecretTampered: {Mint: true, Webhook: keywardv1alpha1.WebhookEventKeyRotated, WebhookFields: withPrevious,
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventSecretTampered, Action: "Mint",
			Note: note("Secret %s was changed by someone other than Keyward (%s); minted key %s (revision %d); %s",
				func(_ policy.Transition, f Facts) []any {
					return []any{f.Secret, f.Tampered, f.KeyID, f.Revision, f.ReplacedFate}
				}),
			Log: func(_ policy.Transition, f Facts) string {
				return "Replaced a key whose Secret someone else changed (" + f.TamperError + ")"
			}}},

	policy.TransitionPreviousKeysRevoked: {Webhook: keywardv1alpha1.WebhookEventKeyRevoked,
		WebhookFields: func(t policy.Transition, m *keywardv1alpha1.WebhookMessage) { m.RevokedKeyIDs = t.Revoked },
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyRevoked, Action: "Revoke",
			Note: note("Revoked previous key %s at once (%s); the current key %s is unchanged",
				func(t policy.Transition, f Facts) []any {
					return []any{strings.Join(t.Revoked, ", "), keywardv1alpha1.RevokeAnnotation, f.KeyID}
				}),
			Log: fixed("Revoked previous keys")}},
	policy.TransitionKeyWithdrawn: {Webhook: keywardv1alpha1.WebhookEventKeyRevoked,
		WebhookFields: func(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
			m.Reason, m.RevokedKeyIDs = string(t.Reason), t.Revoked
		},
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventKeyWithdrawn, Action: "Withdraw",
			Note: note("Key %s is no longer accepted (%s), but Secret %s cannot take its successor: %s",
				func(t policy.Transition, f Facts) []any {
					return []any{t.PreviousKeyID, policy.WithdrawnBecause(t.Reason), f.Secret, f.Ready}
				}),
			Log: fixed("Withdrew the current key; its successor waits for the Secret")}},

	policy.TransitionKeyDisabled: {Webhook: keywardv1alpha1.WebhookEventKeyDisabled,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyDisabled, Action: "Disable", Note: readyMessage}},
	policy.TransitionKeyEnabled: {Webhook: keywardv1alpha1.WebhookEventKeyEnabled,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventKeyEnabled, Action: "Enable", Note: readyMessage}},
	policy.TransitionKeyExpired: {Webhook: keywardv1alpha1.WebhookEventKeyExpired,
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventKeyExpired, Action: "Expire", Note: readyMessage}},
	// The Ready conditions that need a person: told as events only (a receiver is told of what happened to
	// the key, which these leave as it was).
	policy.TransitionSecretConflict: {
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventSecretConflict, Action: "Conflict", Note: readyMessage}},
	policy.TransitionSecretUnwritable: {
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventSecretUnwritable, Action: "Write", Note: readyMessage}},
	policy.TransitionInvalidSpec: {
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventInvalidSpec, Action: "Validate", Note: readyMessage}},

	// key.expiring is for receivers; the Ready condition and the expiry metric tell the cluster.
	policy.TransitionKeyExpiring: {Webhook: keywardv1alpha1.WebhookEventKeyExpiring},
	policy.TransitionPolicyViolation: {Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventPolicyViolation, Action: "Judge",
		Note: func(t policy.Transition, _ Facts) string { return strings.Join(t.Fields, "; ") },
		Log:  fixed("The APIKey breaks an APIKeyPolicy that selects its namespace")}},
	// Approval: told to the cluster (events, the AwaitingApproval reason and its metric) and to receivers,
	// who may be the approvers.
	policy.TransitionApprovalRequested: {Webhook: keywardv1alpha1.WebhookEventKeyApprovalRequested, WebhookFields: withApproval,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventApprovalRequested, Action: "RequestApproval", Note: readyMessage,
			Log: fixed("The APIKey waits for an approval")}},
	policy.TransitionApproved: {Webhook: keywardv1alpha1.WebhookEventKeyApproved, WebhookFields: withApproval,
		Event: &Event{Type: corev1.EventTypeNormal, Reason: keywardv1alpha1.EventApproved, Action: "Approve",
			Note: func(t policy.Transition, _ Facts) string {
				return "Approved by " + t.DecidedBy + reasonSuffix(t) + ": what the approval covers is in effect"
			},
			Log: fixed("An approver approved the APIKey's spec")}},
	policy.TransitionApprovalDenied: {Webhook: keywardv1alpha1.WebhookEventKeyDenied, WebhookFields: withApproval,
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventApprovalDenied, Action: "Deny", Note: readyMessage,
			Log: fixed("An approver denied the APIKey's spec")}},
	// A leak is told everywhere, whatever the response did: the note says whether the key still works.
	policy.TransitionKeyLeaked: {Webhook: keywardv1alpha1.WebhookEventKeyLeaked,
		WebhookFields: func(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
			m.LeakedKeyID, m.LeakURL, m.LeakSource, m.RevokedKeyIDs = t.Leak.KeyID, t.Leak.URL, t.Leak.Source, t.Revoked
		},
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventKeyLeaked, Action: "ReportLeak",
			Note: func(t policy.Transition, _ Facts) string {
				response := keywardv1alpha1.LeakResponseRotate
				if t.LeakAccepted {
					response = keywardv1alpha1.LeakResponseNotify
				}
				return policy.LeakMessage(*t.Leak, t.LeakAccepted, response)
			},
			Log: fixed("A key was reported leaked")}},
	policy.TransitionPreviousKeyInUse: {Webhook: keywardv1alpha1.WebhookEventKeyPreviousInUse,
		WebhookFields: func(t policy.Transition, m *keywardv1alpha1.WebhookMessage) {
			m.PreviousKeyID, m.PreviousValidUntil, m.PreviousLastUsedAt = t.PreviousKeyID, t.PreviousValidUntil, t.PreviousLastUsedAt
		},
		Event: &Event{Type: corev1.EventTypeWarning, Reason: keywardv1alpha1.EventPreviousKeyInUse, Action: "Warn",
			Note: func(t policy.Transition, f Facts) string {
				return policy.PreviousKeyInUseMessage(f.KeyID, t.PreviousKeyID, t.PreviousValidUntil, t.PreviousLastUsedAt)
			},
			Log: fixed("A previous key about to stop is still used")}},
}
