package webhook

import (
	"fmt"
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
	Now      time.Time
}

// Events are the webhook events a change announces, in order. They are derived from what status says before
// and after, not from what the reconcile did, so an event is queued in the same write that reports the
// change: a crash loses both or neither.
func Events(c Change) []keywardv1alpha1.WebhookMessage {
	var out []keywardv1alpha1.WebhookMessage
	after := c.After
	add := func(t keywardv1alpha1.WebhookEvent, f func(*keywardv1alpha1.WebhookMessage)) {
		m := keywardv1alpha1.WebhookMessage{Type: t, Timestamp: metav1.NewTime(c.Now.UTC().Truncate(time.Second)),
			KeyID: after.KeyID, Revision: after.Revision, ExpiresAt: after.ExpiresAt}
		if f != nil {
			f(&m)
		}
		out = append(out, m)
	}
	if after.Revision > c.Before.Revision && after.KeyHash != "" {
		switch after.LastRotationReason {
		case keywardv1alpha1.RotationInitial:
			add(keywardv1alpha1.WebhookEventKeyCreated, func(m *keywardv1alpha1.WebhookMessage) { m.Reason = string(after.LastRotationReason) })
		case keywardv1alpha1.RotationRevoked:
			add(keywardv1alpha1.WebhookEventKeyRevoked, func(m *keywardv1alpha1.WebhookMessage) {
				m.Reason, m.RevokedKeyIDs = string(after.LastRotationReason), c.Revoked
			})
		default:
			add(keywardv1alpha1.WebhookEventKeyRotated, func(m *keywardv1alpha1.WebhookMessage) {
				m.Reason, m.PreviousKeyID = string(after.LastRotationReason), c.Before.KeyID
				if i := slices.IndexFunc(after.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == c.Before.KeyHash }); i >= 0 {
					m.PreviousValidUntil = after.PreviousKeys[i].ValidUntil.DeepCopy()
				}
			})
		}
	} else if len(c.Revoked) > 0 {
		add(keywardv1alpha1.WebhookEventKeyRevoked, func(m *keywardv1alpha1.WebhookMessage) { m.RevokedKeyIDs = c.Revoked })
	}
	if c.BeforeReady != c.AfterReady {
		switch {
		case c.AfterReady == keywardv1alpha1.ReasonDisabled:
			add(keywardv1alpha1.WebhookEventKeyDisabled, nil)
		case c.AfterReady == keywardv1alpha1.ReasonExpired:
			add(keywardv1alpha1.WebhookEventKeyExpired, nil)
		case c.BeforeReady == keywardv1alpha1.ReasonDisabled && c.AfterReady == keywardv1alpha1.ReasonKeyReady:
			add(keywardv1alpha1.WebhookEventKeyEnabled, nil)
		}
	}
	if c.Expiring {
		add(keywardv1alpha1.WebhookEventKeyExpiring, nil)
	}
	return out
}

// MaxOutbox is how many undelivered events an APIKey keeps; beyond it the oldest are dropped.
const MaxOutbox = 64

// Enqueue appends events to the outbox of st, allowed by the spec's filter (nil: all), with stable IDs and
// sequence numbers, after dropping what the delivery controller is done with. It returns how many old
// events it had to drop to stay within MaxOutbox.
func Enqueue(st *keywardv1alpha1.WebhookStatus, uid string, allowed []keywardv1alpha1.WebhookEvent, events []keywardv1alpha1.WebhookMessage) (dropped int) {
	Prune(st)
	next := st.DeliveredSequence
	for _, m := range st.Outbox {
		next = max(next, m.Sequence)
	}
	for _, m := range events {
		if len(allowed) > 0 && !slices.Contains(allowed, m.Type) {
			continue
		}
		next++
		m.Sequence = next
		m.ID = fmt.Sprintf("msg_%s_%d", uid, next)
		st.Outbox = append(st.Outbox, m)
	}
	if over := len(st.Outbox) - MaxOutbox; over > 0 {
		st.Outbox = slices.Clone(st.Outbox[over:])
		return over
	}
	return 0
}

// Pending returns the outbox messages the delivery controller is not yet done with, oldest first: the one
// definition of "pending" that delivery, the metrics, the plugin and Prune share.
func Pending(st *keywardv1alpha1.WebhookStatus) []keywardv1alpha1.WebhookMessage {
	if st == nil {
		return nil
	}
	var out []keywardv1alpha1.WebhookMessage
	for _, m := range st.Outbox {
		if !doneWith(st, m) {
			out = append(out, m)
		}
	}
	return out
}

// doneWith reports whether the delivery controller is done with m: delivered, or given up.
func doneWith(st *keywardv1alpha1.WebhookStatus, m keywardv1alpha1.WebhookMessage) bool {
	return m.Sequence <= st.DeliveredSequence
}

// Prune drops the outbox messages the delivery controller is done with.
func Prune(st *keywardv1alpha1.WebhookStatus) {
	st.Outbox = slices.DeleteFunc(st.Outbox, func(m keywardv1alpha1.WebhookMessage) bool { return doneWith(st, m) })
	if len(st.Outbox) == 0 {
		st.Outbox = nil
	}
}

// BodyOf is the payload of an outbox message for the APIKey namespace/name.
func BodyOf(namespace, name string, m keywardv1alpha1.WebhookMessage) Body {
	d := Data{Namespace: namespace, Name: name, KeyID: m.KeyID, Revision: m.Revision, Reason: m.Reason,
		PreviousKeyID: m.PreviousKeyID, RevokedKeyIDs: m.RevokedKeyIDs}
	if m.ExpiresAt != nil {
		d.ExpiresAt = m.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if m.PreviousValidUntil != nil {
		d.PreviousValidUntil = m.PreviousValidUntil.UTC().Format(time.RFC3339)
	}
	return Body{Type: string(m.Type), Timestamp: m.Timestamp.UTC().Format(time.RFC3339), Data: d}
}
