package notify

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/announce"
	"github.com/keyward-dev/keyward/internal/policy"
)

// Events are the webhook events a change announces, in order: the messages of its transitions. They are
// derived from what status says before and after, not from what the reconcile did, so an event is queued in
// the same write that reports the change: a crash loses both or neither.
func Events(c policy.Change) []keywardv1alpha1.WebhookMessage {
	return Messages(policy.Transitions(c), c.After, c.Now)
}

// Messages are the webhook events of transitions (announce.Of), describing the key as after says it now is. A Secret
// conflict and an invalid spec are not announced to receivers (they are Kubernetes events only).
func Messages(ts []policy.Transition, after keywardv1alpha1.APIKeyStatus, now time.Time) []keywardv1alpha1.WebhookMessage {
	var out []keywardv1alpha1.WebhookMessage
	for _, t := range ts {
		a := announce.Of(t.Kind)
		if a.Webhook == "" {
			continue
		}
		m := keywardv1alpha1.WebhookMessage{Type: a.Webhook, Timestamp: metav1.NewTime(now.UTC().Truncate(time.Second)),
			KeyID: after.KeyID, Revision: after.Revision, ExpiresAt: after.ExpiresAt}
		if a.WebhookFields != nil {
			a.WebhookFields(t, &m)
		}
		out = append(out, m)
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
		PreviousKeyID: m.PreviousKeyID, RevokedKeyIDs: m.RevokedKeyIDs, DecidedBy: m.DecidedBy, DecisionReason: m.DecisionReason,
		LeakedKeyID: m.LeakedKeyID, LeakURL: m.LeakURL, LeakSource: m.LeakSource}
	for _, s := range m.ApprovalScopes {
		d.ApprovalScopes = append(d.ApprovalScopes, string(s))
	}
	if m.ExpiresAt != nil {
		d.ExpiresAt = m.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if m.PreviousLastUsedAt != nil {
		d.PreviousLastUsedAt = m.PreviousLastUsedAt.UTC().Format(time.RFC3339)
	}
	if m.PreviousValidUntil != nil {
		d.PreviousValidUntil = m.PreviousValidUntil.UTC().Format(time.RFC3339)
	}
	return Body{Type: string(m.Type), Timestamp: m.Timestamp.UTC().Format(time.RFC3339), Data: d}
}
