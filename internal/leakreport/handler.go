package leakreport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// The bounds of a report.
const (
	// MaxBody is the largest body read; a larger one is refused (413) before anything else is done with it.
	MaxBody = 256 << 10
	// MaxMatches is the most matches one report may carry.
	MaxMatches = 1000
	// MaxTokenLength, MaxURLLength and MaxFieldLength bound a match's token, url, and type and source.
	MaxTokenLength = 512
	MaxURLLength   = 2048
	MaxFieldLength = 128
)

// The headers of a GitHub report.
const (
	HeaderKeyIdentifier = "Github-Public-Key-Identifier"
	HeaderKeySignature  = "Github-Public-Key-Signature"
)

// Match is one reported token, where it was found: the token itself, GitHub's name of its type, the URL of
// the file, issue or comment, and the kind of place (source: content, commit, issue_comment, ...).
type Match struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// TokenHash is the SHA-256 of the token in hex, the form GitHub's feedback names it by.
func (m Match) TokenHash() string {
	sum := sha256.Sum256([]byte(m.Token))
	return hex.EncodeToString(sum[:])
}

// Feedback is the answer for one match: a true positive when the token is a key Keyward knows.
type Feedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// The labels of Feedback.
const (
	LabelTruePositive  = "true_positive"
	LabelFalsePositive = "false_positive"
)

// Parse reads a report's body, which must already have been verified: a JSON array of at most MaxMatches
// matches, each within the field bounds, with a token.
func Parse(body []byte) ([]Match, error) {
	var matches []Match
	if err := json.Unmarshal(body, &matches); err != nil {
		return nil, errors.New("the report is not a JSON array of matches")
	}
	if len(matches) > MaxMatches {
		return nil, fmt.Errorf("the report has %d matches; at most %d are read", len(matches), MaxMatches)
	}
	for i, m := range matches {
		if m.Token == "" || len(m.Token) > MaxTokenLength || len(m.URL) > MaxURLLength ||
			len(m.Type) > MaxFieldLength || len(m.Source) > MaxFieldLength {
			return nil, fmt.Errorf("match %d has no token or a field over its bound", i)
		}
	}
	return matches, nil
}

// Responder acts on the verified matches of one report: it reports for each whether the token is a key it
// knows (a true positive), in the order given. It is the only part of the handler that changes anything.
type Responder interface {
	Respond(ctx context.Context, matches []Match) []bool
}

// Handler receives reports: refuses anything but a POST within MaxBody carrying both headers, verifies the
// signature over the raw body before it parses a byte of it, limits how many verified reports it acts on
// (Limiter), and answers with the feedback of every match. It never logs a token.
type Handler struct {
	Keys      *PublicKeys
	Responder Responder
	// Limiter bounds the verified reports acted on; nil: no bound. A report over it is answered 429, and
	// GitHub sends it again later.
	Limiter *rate.Limiter
	Log     logr.Logger
	// Reports counts requests by outcome (accepted, forged, unknown_key, oversized, malformed,
	// rate_limited, method, keys_unavailable); Tokens counts the matches of accepted reports by label.
	Reports *prometheus.CounterVec
	Tokens  *prometheus.CounterVec
}

// NewCounters are the counters Handler fills, to register with a Prometheus registry.
func NewCounters() (reports, tokens *prometheus.CounterVec) {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_leak_reports_total",
			Help: "Leak reports received, by outcome (accepted, forged, unknown_key, oversized, malformed, rate_limited, method, keys_unavailable)."},
			[]string{"outcome"}),
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_leak_report_tokens_total",
			Help: "Tokens in accepted leak reports, by label: true_positive (a key Keyward knows) or false_positive."},
			[]string{"label"})
}

func (h *Handler) count(outcome string) {
	if h.Reports != nil {
		h.Reports.WithLabelValues(outcome).Inc()
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.count("method")
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a report", http.StatusMethodNotAllowed)
		return
	}
	keyID, sig := r.Header.Get(HeaderKeyIdentifier), r.Header.Get(HeaderKeySignature)
	if keyID == "" || sig == "" || len(keyID) > MaxFieldLength {
		h.count("forged")
		http.Error(w, "the report is not signed", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		h.count("oversized")
		http.Error(w, fmt.Sprintf("the report is larger than %d bytes", MaxBody), http.StatusRequestEntityTooLarge)
		return
	}
	switch err := h.Keys.Verify(r.Context(), body, keyID, sig); {
	case errors.Is(err, ErrBadSignature):
		h.count("forged")
		http.Error(w, "the signature does not verify", http.StatusUnauthorized)
		return
	case errors.Is(err, ErrUnknownKey):
		h.count("unknown_key")
		http.Error(w, "unknown signing key", http.StatusUnauthorized)
		return
	case err != nil:
		h.count("keys_unavailable")
		h.Log.Error(err, "Cannot verify a leak report: the signing keys are unavailable")
		http.Error(w, "cannot verify the report now", http.StatusServiceUnavailable)
		return
	}
	matches, err := Parse(body)
	if err != nil {
		h.count("malformed")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if h.Limiter != nil && !h.Limiter.Allow() {
		h.count("rate_limited")
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many reports; send it again later", http.StatusTooManyRequests)
		return
	}
	h.count("accepted")
	known := h.Responder.Respond(r.Context(), matches)
	feedback := make([]Feedback, len(matches))
	positives := 0
	for i, m := range matches {
		label := LabelFalsePositive
		if i < len(known) && known[i] {
			label, positives = LabelTruePositive, positives+1
		}
		feedback[i] = Feedback{TokenHash: m.TokenHash(), TokenType: m.Type, Label: label}
		if h.Tokens != nil {
			h.Tokens.WithLabelValues(label).Inc()
		}
	}
	h.Log.Info("Received a leak report", "matches", len(matches), "truePositives", positives)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(feedback)
}
