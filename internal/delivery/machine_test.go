package delivery

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/notify"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { t := metav1.NewTime(t0.Add(d)); return &t }

func msg(seq int64) keywardv1alpha1.WebhookMessage {
	return keywardv1alpha1.WebhookMessage{Sequence: seq, ID: "msg_" + string(rune('0'+seq)), Type: keywardv1alpha1.WebhookEventKeyRotated, Revision: seq}
}

func TestNextDecidesInOrderTestThenTheOldestDueEventThenRelease(t *testing.T) {
	two := []keywardv1alpha1.WebhookMessage{msg(3), msg(4)}
	cases := []struct {
		name string
		o    Observation
		want Step
	}{
		{"nothing pending", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: []keywardv1alpha1.WebhookMessage{msg(2)}, DeliveredSequence: 2}},
			Step{Kind: Idle}},
		{"the oldest pending event", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeliveredSequence: 2}, Generation: 1},
			Step{Kind: Send, Message: msg(3), Generation: 1}},
		{"delivered messages are skipped", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeliveredSequence: 3}},
			Step{Kind: Send, Message: msg(4)}},
		{"a retry not yet due", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, NextAttemptTime: at(5 * time.Second)}},
			Step{Kind: Wait, At: t0.Add(5 * time.Second)}},
		{"a retry due now", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, NextAttemptTime: at(0)}},
			Step{Kind: Send, Message: msg(3)}},
		{"gone for this generation", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, GoneGeneration: 2}, Generation: 2},
			Step{Kind: Idle}},
		{"gone for an older generation", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, GoneGeneration: 2}, Generation: 3},
			Step{Kind: Send, Message: msg(3), Generation: 3}},
		{"a new test token comes first", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two}, TestToken: "ping"},
			Step{Kind: Test, Token: "ping"}},
		{"a token longer than MaxTokenLength is never sent or kept", Observation{Status: keywardv1alpha1.WebhookStatus{},
			TestToken: strings.Repeat("p", keywardv1alpha1.MaxTokenLength+1)}, Step{Kind: Idle}},
		{"a token already answered", Observation{Status: keywardv1alpha1.WebhookStatus{LastTest: &keywardv1alpha1.WebhookTestStatus{Token: "ping", Time: *at(-time.Hour)}},
			TestToken: "ping"}, Step{Kind: Idle}},
		{"a second test within the interval waits for it",
			Observation{Status: keywardv1alpha1.WebhookStatus{LastTest: &keywardv1alpha1.WebhookTestStatus{Token: "ping", Time: *at(-10 * time.Second)}}, TestToken: "pong"},
			Step{Kind: Wait, At: t0.Add(TestInterval - 10*time.Second)}},
		{"a waiting test does not hold back a due event",
			Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, LastTest: &keywardv1alpha1.WebhookTestStatus{Token: "ping", Time: *at(-10 * time.Second)}}, TestToken: "pong"},
			Step{Kind: Send, Message: msg(3)}},
		{"a second test once the interval has passed",
			Observation{Status: keywardv1alpha1.WebhookStatus{LastTest: &keywardv1alpha1.WebhookTestStatus{Token: "ping", Time: *at(-TestInterval)}}, TestToken: "pong"},
			Step{Kind: Test, Token: "pong"}},
		{"deleting with nothing pending", Observation{Status: keywardv1alpha1.WebhookStatus{DeletionQueuedAt: at(-time.Second)}, Deleting: true, DeletionTimeout: time.Minute},
			Step{Kind: Release}},
		{"deleting with key.deleted due", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeletionQueuedAt: at(0)}, Deleting: true, DeletionTimeout: time.Minute},
			Step{Kind: Send, Message: msg(3)}},
		{"deleting waits for the bound when the retry is later", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeletionQueuedAt: at(0),
			NextAttemptTime: at(5 * time.Minute)}, Deleting: true, DeletionTimeout: time.Minute}, Step{Kind: Wait, At: t0.Add(time.Minute)}},
		{"deleting past the bound", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeletionQueuedAt: at(-time.Minute),
			NextAttemptTime: at(5 * time.Minute)}, Deleting: true, DeletionTimeout: time.Minute}, Step{Kind: Release}},
		{"deleting, and the endpoint is gone", Observation{Status: keywardv1alpha1.WebhookStatus{Outbox: two, DeletionQueuedAt: at(0), GoneGeneration: 1},
			Generation: 1, Deleting: true, DeletionTimeout: time.Minute}, Step{Kind: Release}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Now = t0
			got := Next(tc.o)
			if got.Kind != tc.want.Kind || got.Message.Sequence != tc.want.Message.Sequence || got.Token != tc.want.Token ||
				!got.At.Equal(tc.want.At) || got.Generation != tc.want.Generation {
				t.Errorf("Next = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBeginCountsTheAttemptAsFailedSoACrashDuringItBacksOff(t *testing.T) {
	ws := keywardv1alpha1.WebhookStatus{Outbox: []keywardv1alpha1.WebhookMessage{msg(1)}}
	begun := Begin(ws, Step{Kind: Send, Message: msg(1)}, t0, 0)
	if begun.ConsecutiveFailures != 1 || begun.NextAttemptTime == nil || !begun.NextAttemptTime.Time.Equal(t0.Add(5*time.Second)) || begun.LastError == "" {
		t.Fatalf("begun status %+v; want the attempt counted and the first back-off set", begun)
	}
	// The manager dies here. After its restart the same event waits for the back-off.
	if s := Next(Observation{Status: begun, Now: t0}); s.Kind != Wait || !s.At.Equal(t0.Add(5*time.Second)) {
		t.Errorf("after a crash during the attempt, Next = %+v; want to wait 5s", s)
	}
	if ws.ConsecutiveFailures != 0 || ws.NextAttemptTime != nil {
		t.Error("Begin changed the status it was given")
	}
	tested := Begin(ws, Step{Kind: Test, Token: "ping"}, t0, 0)
	if tested.LastTest == nil || tested.LastTest.Token != "ping" {
		t.Fatalf("a test is not recorded before it is sent: %+v", tested.LastTest)
	}
	if s := Next(Observation{Status: tested, TestToken: "ping", Now: t0}); s.Kind == Test {
		t.Error("a test interrupted by a crash is sent again at once")
	}
}

func TestAdvanceAppliesWhatTheAttemptGot(t *testing.T) {
	outbox := []keywardv1alpha1.WebhookMessage{msg(1), msg(2)}
	send := Step{Kind: Send, Message: msg(1), Generation: 7}
	cases := []struct {
		name          string
		failuresSoFar int32
		result        Result
		check         func(t *testing.T, ws keywardv1alpha1.WebhookStatus)
		notice        Reason
	}{
		{"delivered", 0, Result{Outcome: notify.Delivered, Status: 200, Took: time.Millisecond}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.DeliveredSequence != 1 || ws.ConsecutiveFailures != 0 || ws.NextAttemptTime != nil || ws.LastError != "" ||
				len(ws.Outbox) != 1 || ws.Outbox[0].Sequence != 2 || ws.LastDeliveredRevision != 1 {
				t.Errorf("%+v; want delivered, pruned, no failure", ws)
			}
		}, ""},
		{"delivered after two failures", 2, Result{Outcome: notify.Delivered, Status: 204}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.ConsecutiveFailures != 0 || ws.NextAttemptTime != nil {
				t.Errorf("%+v", ws)
			}
		}, ""},
		{"the first failure", 0, Result{Outcome: notify.Failed, Status: 500}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.ConsecutiveFailures != 1 || !ws.NextAttemptTime.Time.Equal(t0.Add(5*time.Second)) || ws.LastError != "HTTP 500 Internal Server Error" ||
				ws.DeliveredSequence != 0 || len(ws.Outbox) != 2 {
				t.Errorf("%+v", ws)
			}
		}, ReasonFailed},
		{"the second failure waits 5 minutes, quietly", 1, Result{Outcome: notify.Failed, Status: 500}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.ConsecutiveFailures != 2 || !ws.NextAttemptTime.Time.Equal(t0.Add(5*time.Minute)) {
				t.Errorf("%+v", ws)
			}
		}, ""},
		{"Retry-After wins when later", 0, Result{Outcome: notify.Failed, Status: http.StatusServiceUnavailable, RetryAfter: "120"},
			func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
				if !ws.NextAttemptTime.Time.Equal(t0.Add(2 * time.Minute)) {
					t.Errorf("next attempt %v", ws.NextAttemptTime)
				}
			}, ReasonFailed},
		{"a refused target", 0, Result{Outcome: notify.Failed, Refused: true, Err: errors.New("refused to connect")}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.LastError != "refused to connect" {
				t.Errorf("%+v", ws)
			}
		}, ReasonRefused},
		{"410 stops this generation", 0, Result{Outcome: notify.Gone, Status: 410}, func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
			if ws.GoneGeneration != 7 || ws.NextAttemptTime != nil || ws.DeliveredSequence != 0 {
				t.Errorf("%+v", ws)
			}
		}, ReasonFailed},
		{"a slow answer is delivered but paces the next event", 0, Result{Outcome: notify.Delivered, Status: 200, Took: SlowAnswer + time.Second},
			func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
				if ws.DeliveredSequence != 1 || ws.ConsecutiveFailures != 1 || !ws.NextAttemptTime.Time.Equal(t0.Add(5*time.Second)) {
					t.Errorf("%+v", ws)
				}
			}, ReasonSlow},
		{"slow answers pace no further than 5 minutes", 5, Result{Outcome: notify.Delivered, Status: 200, Took: time.Minute},
			func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
				if ws.ConsecutiveFailures != 2 || !ws.NextAttemptTime.Time.Equal(t0.Add(5*time.Minute)) {
					t.Errorf("%+v", ws)
				}
			}, ""},
		{"the last attempt of the schedule gives the event up", int32(len(notify.Schedule) - 1), Result{Outcome: notify.Failed, Status: 500},
			func(t *testing.T, ws keywardv1alpha1.WebhookStatus) {
				if ws.DeliveredSequence != 1 || ws.ConsecutiveFailures != 0 || ws.NextAttemptTime != nil || len(ws.Outbox) != 1 {
					t.Errorf("%+v", ws)
				}
			}, ReasonFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws := keywardv1alpha1.WebhookStatus{Outbox: outbox, ConsecutiveFailures: tc.failuresSoFar}
			got, notices := Advance(Begin(ws, send, t0, 0), send, tc.result, t0, 0)
			tc.check(t, got)
			var reasons []Reason
			for _, n := range notices {
				reasons = append(reasons, n.Reason)
			}
			if (tc.notice == "" && len(reasons) != 0) || (tc.notice != "" && (len(reasons) != 1 || reasons[0] != tc.notice)) {
				t.Errorf("notices %v, want %q", reasons, tc.notice)
			}
		})
	}
}

func TestAdvanceRecordsATestsAnswer(t *testing.T) {
	s := Step{Kind: Test, Token: "ping"}
	got, notices := Advance(Begin(keywardv1alpha1.WebhookStatus{}, s, t0, 0), s, Result{Outcome: notify.Delivered, Status: 200}, t0, 0)
	if got.LastTest == nil || got.LastTest.Token != "ping" || got.LastTest.Result != "HTTP 200 OK" || got.ConsecutiveFailures != 0 {
		t.Errorf("%+v", got)
	}
	if len(notices) != 1 || notices[0].Reason != ReasonTested || notices[0].Warning {
		t.Errorf("notices %+v", notices)
	}
}
