// Package eventually is the one way Keyward's tests wait: poll for proof until a single, generous deadline.
//
// A test waits for something the code guarantees will happen (a status write, an event, a delivery), never
// for a span of time. The deadline only bounds how long a broken test takes to fail, so it is far longer
// than anything needs on an idle machine: a 2-core CI machine next to other work can pause a process for
// seconds, and a deadline near the expected time is a flaky test.
package eventually

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// Timeout is how long a wait polls before it gives up. KEYWARD_TEST_WAIT (a Go duration) overrides it,
// for example to fail faster while debugging a test that waits for something that never comes.
var Timeout = timeoutFromEnv(90 * time.Second)

func timeoutFromEnv(def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KEYWARD_TEST_WAIT")); err == nil && d > 0 {
		return d
	}
	return def
}

// Polling starts at firstInterval and doubles up to maxInterval, so a quick answer is seen quickly and a
// slow one does not flood the API server with reads.
const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 200 * time.Millisecond
)

// ErrNotYet is a ready-made "not yet" for attempts that have nothing more specific to say.
var ErrNotYet = errors.New("not yet")

// Poll calls try until it returns nil, and returns nil then. When Timeout passes first it returns the last
// attempt's error, so the caller can say why it is still waiting.
func Poll(try func() error) error { return poll(firstInterval, maxInterval, try) }

// poll waits interval after the first failed attempt, doubling it after each up to most.
func poll(interval, most time.Duration, try func() error) error {
	deadline := time.Now().Add(Timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", Timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, most)
	}
}

// Succeeds polls try until it returns nil. When Timeout passes first, it fails the test, saying what it was
// waiting for and why the last attempt failed. Call it from the test's goroutine.
func Succeeds(t testing.TB, what string, try func() error) {
	t.Helper()
	if err := Poll(try); err != nil {
		t.Fatalf("waiting until %s: %v", what, err)
	}
}

// Tight is Succeeds polling every millisecond without backoff, for a wait whose duration is what a
// benchmark measures (revoke → reject); the deadline is the same.
func Tight(t testing.TB, what string, try func() error) {
	t.Helper()
	if err := poll(time.Millisecond, time.Millisecond, try); err != nil {
		t.Fatalf("waiting until %s: %v", what, err)
	}
}

// Get polls try until it returns a value without error, and returns that value; it fails the test as
// Succeeds does.
func Get[T any](t testing.TB, what string, try func() (T, error)) T {
	t.Helper()
	var v T
	Succeeds(t, what, func() error {
		got, err := try()
		if err == nil {
			v = got
		}
		return err
	})
	return v
}

// Receive waits for a value (or the close) of ch and returns it; after Timeout it fails the test as
// Succeeds does.
func Receive[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Timeout):
		t.Fatalf("waiting until %s: nothing after %s", what, Timeout)
		var zero T
		return zero
	}
}
