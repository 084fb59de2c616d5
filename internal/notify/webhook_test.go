package notify

import (
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func TestSignaturesVerifyWithTheStandardWebhooksReferenceLibrary(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a secret of thirty-two bytes!!!!"))
	s, err := NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	body := Body{Type: "key.rotated", Timestamp: "2026-11-24T10:00:00Z", Data: Data{Namespace: "billing", Name: "orders", KeyID: "kid_0123456789ab", Revision: 2}}.Marshal()
	h := http.Header{}
	s.Headers(h, "msg_1", time.Now(), body)
	receiver, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.Verify(body, h); err != nil {
		t.Fatalf("the reference library rejects our signature: %v", err)
	}
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-2] = 'X'
	if receiver.Verify(tampered, h) == nil {
		t.Error("a changed body still verifies")
	}
	other, _ := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret")))
	if other.Verify(body, h) == nil {
		t.Error("another secret verifies")
	}
}

func TestNewSignerRefusesWhatIsNotASecret(t *testing.T) {
	for _, bad := range []string{"", "whsec_", "whsec_!!!"} {
		if _, err := NewSigner(bad); err == nil {
			t.Errorf("NewSigner(%q) accepted", bad)
		}
	}
}

func TestNextAttemptFollowsTheScheduleAndRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name       string
		failures   int
		status     int
		retryAfter string
		random     float64
		want       time.Duration // -1: given up
	}{
		{"after the first failure: 5s", 1, 500, "", 0, 5 * time.Second},
		{"jitter adds up to 10%", 1, 500, "", 0.5, 5*time.Second + 250*time.Millisecond},
		{"after the second: 5 min", 2, 500, "", 0, 5 * time.Minute},
		{"the last step: 24 h", 9, 500, "", 0, 24 * time.Hour},
		{"schedule exhausted", 10, 500, "", 0, -1},
		{"Retry-After seconds on 429", 1, 429, "120", 0, 2 * time.Minute},
		{"Retry-After on 503 as a date", 1, 503, now.Add(time.Hour).Format(http.TimeFormat), 0, time.Hour},
		{"an earlier Retry-After does not shorten the schedule", 2, 503, "10", 0, 5 * time.Minute},
		{"Retry-After on a 500 is ignored", 1, 500, "3600", 0, 5 * time.Second},
		{"Retry-After is capped at a day", 1, 429, "999999", 0, 24 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := NextAttempt(now, tc.failures, tc.status, tc.retryAfter, tc.random)
			if tc.want < 0 {
				if !got.IsZero() {
					t.Errorf("NextAttempt = %v, want given up", got)
				}
				return
			}
			if d := got.Sub(now); d != tc.want {
				t.Errorf("delay %v, want %v", d, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for status, want := range map[int]Outcome{200: Delivered, 204: Delivered, 301: Failed, 307: Failed, 404: Failed, 410: Gone, 429: Failed, 500: Failed} {
		if got := Classify(status); got != want {
			t.Errorf("Classify(%d) = %v, want %v", status, got, want)
		}
	}
}
