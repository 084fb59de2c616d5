// Package delivery sends the webhook events that the key controller queues in status.webhook.outbox. It has
// two halves, as node drain has in Cluster API: a pure state machine (Next, Begin, Advance), a function of
// the observed status, an attempt's result and an injected clock that is table-tested like internal/policy,
// and a Sender that owns the only I/O (the SSRF-checked dial, bounded reads, the per-CA-bundle transports).
// The delivery controller is get → Next → Begin (written before dialling) → Send → Advance → write.
package delivery

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/notify"
)

const (
	// SlowAnswer is how long a receiver may take to answer before the answer counts as slow. A slow 2xx is
	// delivered (never sent again), but it paces the APIKey's next event like a failure does: a receiver
	// that holds each request for seconds cannot hold the shared delivery workers.
	SlowAnswer = 5 * time.Second
	// TestInterval is how often an APIKey may send webhook.test: a new keyward.dev/webhook-test value within
	// it is answered when it has passed, so the annotation cannot be used to send requests without back-off.
	TestInterval = time.Minute
)

// TestUnanswered is status.webhook.lastTest.result while a webhook.test is in flight, and after a manager
// that stopped during it.
const TestUnanswered = "sent; no answer recorded yet (or the manager stopped during the attempt)"

// StepKind is what the delivery controller does next for one APIKey.
type StepKind int

// The steps, in the order Next considers them.
const (
	// Idle: nothing is due, and nothing will be until something changes.
	Idle StepKind = iota
	// Wait: nothing is due before Step.At.
	Wait
	// Test: send webhook.test for Step.Token.
	Test
	// Send: attempt Step.Message.
	Send
	// Release: remove the webhook finalizer (key.deleted went out, or the deletion bound passed).
	Release
)

// Step is the next thing to do for one APIKey.
type Step struct {
	Kind StepKind
	// Message is the outbox message to attempt (Send).
	Message keywardv1alpha1.WebhookMessage
	// Token is the keyward.dev/webhook-test value to answer (Test).
	Token string
	// At is when to look again (Wait).
	At time.Time
	// Generation is the APIKey generation the step was decided for; a 410 stops delivery for it.
	Generation int64
}

// Observation is what Next decides from: the APIKey's delivery status and what else of the APIKey matters.
type Observation struct {
	Status keywardv1alpha1.WebhookStatus
	// Generation is the APIKey's metadata.generation; a 410 stops delivery for one generation.
	Generation int64
	// TestToken is the keyward.dev/webhook-test annotation, "" when unset.
	TestToken string
	// Deleting is set while the APIKey is being deleted and the webhook finalizer holds it.
	Deleting bool
	// DeletionTimeout bounds how long the finalizer holds the APIKey after key.deleted was queued.
	DeletionTimeout time.Duration
	Now             time.Time
}

// Next decides the next step. A webhook.test comes first (it is what a person is waiting for), then the
// oldest pending event once its retry time has come, then, for an APIKey being deleted, the release of its
// finalizer when nothing is pending or the bound has passed.
func Next(o Observation) Step {
	ws := &o.Status
	var wakeAt time.Time
	wake := func(t time.Time) {
		if wakeAt.IsZero() || t.Before(wakeAt) {
			wakeAt = t
		}
	}
	// A token beyond MaxTokenLength is ignored (the admission policy refuses it): status would keep it.
	if tok := o.TestToken; tok != "" && len(tok) <= keywardv1alpha1.MaxTokenLength && (ws.LastTest == nil || ws.LastTest.Token != tok) {
		if ws.LastTest == nil || !o.Now.Before(ws.LastTest.Time.Add(TestInterval)) {
			return Step{Kind: Test, Token: tok}
		}
		wake(ws.LastTest.Time.Add(TestInterval))
	}
	pending := notify.Pending(ws)
	gone := ws.GoneGeneration != 0 && ws.GoneGeneration == o.Generation
	if len(pending) > 0 && !gone {
		if ws.NextAttemptTime == nil || !o.Now.Before(ws.NextAttemptTime.Time) {
			return Step{Kind: Send, Message: pending[0], Generation: o.Generation}
		}
		wake(ws.NextAttemptTime.Time)
	}
	if o.Deleting && ws.DeletionQueuedAt != nil {
		deadline := ws.DeletionQueuedAt.Add(o.DeletionTimeout)
		if len(pending) == 0 || gone || !o.Now.Before(deadline) {
			return Step{Kind: Release}
		}
		wake(deadline)
	}
	if wakeAt.IsZero() {
		return Step{Kind: Idle}
	}
	return Step{Kind: Wait, At: wakeAt}
}

// Begin is the status to write before an attempt is dialled: the attempt counted as failed and its back-off
// set, so a manager that dies during the attempt (OOM-killed by a hostile answer, say) backs off after its
// restart instead of trying again at once. Advance then replaces that with what the attempt got.
func Begin(ws keywardv1alpha1.WebhookStatus, s Step, now time.Time, jitter float64) keywardv1alpha1.WebhookStatus {
	ws = *ws.DeepCopy()
	switch s.Kind {
	case Test:
		ws.LastTest = &keywardv1alpha1.WebhookTestStatus{Token: s.Token, Time: metaTime(now), Result: TestUnanswered}
	case Send:
		ws.ConsecutiveFailures++
		ws.NextAttemptTime = ptrTime(backoff(now, int(ws.ConsecutiveFailures), Result{}, jitter))
		ws.LastError = fmt.Sprintf("the attempt at %s (%s) that started at %s did not finish (the manager may have stopped during it)",
			s.Message.Type, s.Message.ID, now.UTC().Format(time.RFC3339))
	}
	return ws
}

// backoff is when to try again after failures failed attempts; past the schedule's end it keeps its last
// delay (Advance gives up on the message instead).
func backoff(now time.Time, failures int, r Result, jitter float64) time.Time {
	if next := notify.NextAttempt(now, failures, r.Status, r.RetryAfter, jitter); !next.IsZero() {
		return next
	}
	return now.Add(notify.Schedule[len(notify.Schedule)-1])
}

// Reason names a notice; the controller records it as the Kubernetes event reason.
type Reason string

// Notice reasons.
const (
	// ReasonFailed: delivery started failing (or gave up on an event, or the endpoint is gone).
	ReasonFailed Reason = "WebhookFailed"
	// ReasonRefused: the target's address is in a refused range.
	ReasonRefused Reason = "WebhookRefused"
	// ReasonSlow: the endpoint accepted an event but took longer than SlowAnswer.
	ReasonSlow Reason = "WebhookSlow"
	// ReasonTested: a webhook.test was answered.
	ReasonTested Reason = "WebhookTested"
)

// Notice is something Advance decided people should hear about.
type Notice struct {
	Reason  Reason
	Warning bool
	Message string
}

// Advance applies what an attempt got to the status that Begin wrote for it, and prunes the outbox of what
// is done with. The notices are emitted on transitions only (the first failure, not each retry).
func Advance(begun keywardv1alpha1.WebhookStatus, s Step, r Result, now time.Time, jitter float64) (keywardv1alpha1.WebhookStatus, []Notice) {
	ws := *begun.DeepCopy()
	var notices []Notice
	if s.Kind == Test {
		ws.LastTest = &keywardv1alpha1.WebhookTestStatus{Token: s.Token, Time: metaTime(now), Result: r.Summary()}
		return ws, []Notice{{Reason: ReasonTested, Message: fmt.Sprintf("webhook.test %q: %s", s.Token, r.Summary())}}
	}
	if s.Kind != Send {
		return ws, nil
	}
	m := s.Message
	failures := ws.ConsecutiveFailures // Begin counted this attempt already
	switch {
	case r.Outcome == notify.Delivered && r.Took > SlowAnswer:
		// Paced like the first two failures (5 s, then 5 min) but never further: the event was delivered.
		ws.ConsecutiveFailures = min(failures, 2)
		ws.DeliveredSequence, ws.LastDeliveredRevision, ws.LastDeliveryTime = m.Sequence, m.Revision, ptrTime(now)
		ws.NextAttemptTime = ptrTime(backoff(now, int(ws.ConsecutiveFailures), Result{}, jitter))
		ws.LastError = fmt.Sprintf("%s (%s) was accepted after %s, slower than %s: the next event waits until %s",
			m.Type, m.ID, r.Took.Round(time.Millisecond), SlowAnswer, ws.NextAttemptTime.UTC().Format(time.RFC3339))
		if failures == 1 {
			notices = append(notices, Notice{Reason: ReasonSlow, Warning: true, Message: ws.LastError})
		}
	case r.Outcome == notify.Delivered:
		ws.DeliveredSequence, ws.LastDeliveredRevision, ws.LastDeliveryTime = m.Sequence, m.Revision, ptrTime(now)
		ws.LastError, ws.ConsecutiveFailures, ws.NextAttemptTime = "", 0, nil
	case r.Outcome == notify.Gone:
		ws.GoneGeneration, ws.NextAttemptTime = s.Generation, nil
		ws.LastError = r.Summary() + ": the endpoint is gone; nothing more is sent until spec.webhook changes"
		notices = append(notices, Notice{Reason: ReasonFailed, Warning: true, Message: fmt.Sprintf("%s %s", m.Type, ws.LastError)})
	case int(failures) >= len(notify.Schedule):
		ws.DeliveredSequence, ws.NextAttemptTime, ws.ConsecutiveFailures = m.Sequence, nil, 0
		ws.LastError = fmt.Sprintf("gave up %s (%s) after %d attempts: %s", m.Type, m.ID, len(notify.Schedule), r.Summary())
		notices = append(notices, Notice{Reason: ReasonFailed, Warning: true, Message: ws.LastError})
	default:
		ws.NextAttemptTime = ptrTime(backoff(now, int(failures), r, jitter))
		ws.LastError = r.Summary()
		if failures == 1 {
			reason := ReasonFailed
			if r.Refused {
				reason = ReasonRefused
			}
			notices = append(notices, Notice{Reason: reason, Warning: true,
				Message: fmt.Sprintf("Delivering %s (%s) failed: %s; retrying on the schedule", m.Type, m.ID, r.Summary())})
		}
	}
	notify.Prune(&ws)
	return ws, notices
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.UTC().Truncate(time.Second)) }

func ptrTime(t time.Time) *metav1.Time {
	mt := metaTime(t)
	return &mt
}
