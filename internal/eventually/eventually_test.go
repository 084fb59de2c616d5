package eventually

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceAnAttemptSucceeds(t *testing.T) {
	calls := 0
	err := Poll(func() error {
		calls++
		if calls < 3 {
			return ErrNotYet
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
	}
}

func TestPollGivesUpWithTheLastAttemptsReason(t *testing.T) {
	defer func(d time.Duration) { Timeout = d }(Timeout)
	Timeout = 20 * time.Millisecond
	calls := 0
	last := errors.New("status has revision 1")
	err := Poll(func() error {
		calls++
		if calls == 1 {
			return errors.New("first attempt")
		}
		return last
	})
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "revision 1") {
		t.Fatalf("Poll = %v; want the last attempt's error", err)
	}
	if calls < 2 {
		t.Fatalf("Poll made %d attempts before giving up", calls)
	}
}

// recorder is a testing.TB that records Fatalf instead of stopping the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestSucceedsFailsTheTestNamingWhatItWaitedFor(t *testing.T) {
	defer func(d time.Duration) { Timeout = d }(Timeout)
	Timeout = 10 * time.Millisecond
	r := &recorder{TB: t}
	Succeeds(r, "the key is rotated", func() error { return errors.New("revision is 1") })
	if !strings.Contains(r.failed, "the key is rotated") || !strings.Contains(r.failed, "revision is 1") {
		t.Fatalf("the failure says %q; want what was awaited and the last reason", r.failed)
	}
}

func TestGetReturnsTheValueOfTheSuccessfulAttempt(t *testing.T) {
	n := 0
	got := Get(t, "the third value", func() (int, error) {
		n++
		if n < 3 {
			return n, ErrNotYet
		}
		return n, nil
	})
	if got != 3 {
		t.Fatalf("Get = %d, want 3", got)
	}
}

func TestReceiveReturnsWhatTheChannelSends(t *testing.T) {
	ch := make(chan string, 1)
	ch <- "sent"
	if got := Receive(t, "a value", ch); got != "sent" {
		t.Fatalf("Receive = %q", got)
	}
}

func TestReceiveFailsTheTestWhenNothingArrives(t *testing.T) {
	defer func(d time.Duration) { Timeout = d }(Timeout)
	Timeout = 10 * time.Millisecond
	r := &recorder{TB: t}
	Receive(r, "the manager crashes", make(chan struct{}))
	if !strings.Contains(r.failed, "the manager crashes") {
		t.Fatalf("the failure says %q", r.failed)
	}
}
