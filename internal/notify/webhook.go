// Package notify builds and signs Keyward's webhook deliveries (Standard Webhooks 1.0) and decides, without
// any I/O, when a failed delivery is tried again. The delivery controller does the I/O.
package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a Standard Webhooks signing secret: whsec_ and the base64 of the key.
const SecretPrefix = "whsec_"

// Data is what an event says about the key. It never holds the key or its hash.
type Data struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	KeyID     string `json:"keyID,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// PreviousKeyID and PreviousValidUntil describe the key a rotation replaced and until when it works.
	PreviousKeyID      string `json:"previousKeyID,omitempty"`
	PreviousValidUntil string `json:"previousValidUntil,omitempty"`
	// PreviousLastUsedAt is when a previous key still in use was last accepted (key.previous_in_use).
	PreviousLastUsedAt string `json:"previousLastUsedAt,omitempty"`
	// RevokedKeyIDs are the keys a revocation stopped.
	RevokedKeyIDs []string `json:"revokedKeyIDs,omitempty"`
	// ApprovalScopes are the scopes that need an approval; DecidedBy and DecisionReason the approver who
	// approved or denied, and why (key.approval_requested, key.approved, key.denied).
	ApprovalScopes []string `json:"approvalScopes,omitempty"`
	DecidedBy      string   `json:"decidedBy,omitempty"`
	DecisionReason string   `json:"decisionReason,omitempty"`
	// LeakedKeyID, LeakURL and LeakSource say which key was reported leaked and where (key.leaked).
	LeakedKeyID string `json:"leakedKeyID,omitempty"`
	LeakURL     string `json:"leakURL,omitempty"`
	LeakSource  string `json:"leakSource,omitempty"`
	// Token is the keyward.dev/webhook-test value a webhook.test answers.
	Token string `json:"token,omitempty"`
}

// Body is the JSON payload of one event.
type Body struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      Data   `json:"data"`
}

// Marshal returns the payload bytes; the same event always gives the same bytes, so a retry is identical.
func (b Body) Marshal() []byte {
	out, _ := json.Marshal(b) // strings only: cannot fail
	return out
}

// Signer signs payloads with a Standard Webhooks secret.
type Signer struct{ key []byte }

// NewSigner decodes a whsec_ secret (the prefix is optional, as the reference libraries accept).
func NewSigner(secret string) (*Signer, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(secret), SecretPrefix))
	if err != nil || len(key) == 0 {
		return nil, errors.New("the signing secret is not whsec_ followed by base64")
	}
	return &Signer{key: key}, nil
}

// Sign returns the webhook-signature value: "v1," and the base64 HMAC-SHA256 of id.timestamp.payload.
func (s *Signer) Sign(id string, at time.Time, payload []byte) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "%s.%d.", id, at.Unix())
	m.Write(payload)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Headers sets the three Standard Webhooks headers (and the content type) for one attempt at at.
func (s *Signer) Headers(h http.Header, id string, at time.Time, payload []byte) {
	h.Set("Content-Type", "application/json")
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(id, at, payload))
}

// Schedule is the delay before each attempt after a failure: the first attempt is immediate, then 5 s,
// 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h. After the last the message is given up.
var Schedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour,
	10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}

// Outcome is what an attempt's response (or error) means.
type Outcome int

// The outcomes of an attempt.
const (
	Delivered Outcome = iota
	// Failed: try again on the schedule.
	Failed
	// Gone: 410, stop sending to this endpoint until the spec changes.
	Gone
)

// Classify judges a response status: 2xx delivered, 410 gone, anything else (redirects included) failed.
func Classify(status int) Outcome {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == http.StatusGone:
		return Gone
	}
	return Failed
}

// NextAttempt is when to try again after the failed attempt number failures (1 for the first failure) at
// now, or zero when the schedule is exhausted. A Retry-After on 429 or 503 wins over the schedule when it is
// later; the schedule's delay gets up to 10 % of jitter (from random, in [0,1)) so receivers coming back are
// not hit by every sender at once.
func NextAttempt(now time.Time, failures int, status int, retryAfter string, random float64) time.Time {
	if failures >= len(Schedule) {
		return time.Time{}
	}
	delay := Schedule[failures]
	delay += time.Duration(float64(delay) * 0.1 * random)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(retryAfter, now); ok && d > delay {
			delay = d
		}
	}
	return now.Add(delay)
}

// Jitter is a source of randomness for NextAttempt.
func Jitter() float64 { return rand.Float64() }

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date. At most a day is honoured.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), 24*time.Hour), true
}
