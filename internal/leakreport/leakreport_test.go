package leakreport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/keyward-dev/keyward/internal/leakreport/reporttest"
)

// publisher is a fake of GitHub's list of signing keys, with the keys it lists and a count of fetches.
type publisher struct {
	mu      sync.Mutex
	signers map[string]*reporttest.Signer
	extra   string // appended to the document, to make it oversized
	srv     *httptest.Server
}

func newPublisher(t *testing.T) *publisher {
	p := &publisher{signers: map[string]*reporttest.Signer{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, _ = w.Write(append(reporttest.KeysDocument(p.signers), p.extra...))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *publisher) add(id string) *reporttest.Signer {
	s := reporttest.NewSigner()
	p.mu.Lock()
	p.signers[id] = s
	p.mu.Unlock()
	return s
}

// responder knows the tokens in known and records every match it was asked about.
type responder struct {
	known map[string]bool
	asked []Match
}

func (r *responder) Respond(_ context.Context, ms []Match) []bool {
	out := make([]bool, len(ms))
	for i, m := range ms {
		r.asked = append(r.asked, m)
		out[i] = r.known[m.Token]
	}
	return out
}

const leaked = "kw_live_leakedleakedleakedleaked"

func TestAReportIsActedOnOnlyWhenItsSignatureVerifiesOverTheRawBody(t *testing.T) {
	pub := newPublisher(t)
	current := pub.add("current")
	stranger := reporttest.NewSigner()
	body := []byte(`[{"token":"` + leaked + `","type":"keyward_api_key","url":"https://github.com/o/r/blob/x/a.env","source":"content"},` +
		`{"token":"kw_someone_elses","type":"keyward_api_key","url":"https://github.com/o/r/blob/x/b.env","source":"commit"}]`)
	var logs bytes.Buffer
	log := funcr.New(func(prefix, args string) { logs.WriteString(prefix + args + "\n") }, funcr.Options{Verbosity: 10})
	reports, tokens := NewCounters()
	for _, tc := range []struct {
		name    string
		method  string
		body    []byte
		keyID   string
		sig     string
		want    int
		outcome string
	}{
		{"a genuine report", http.MethodPost, body, "current", current.Sign(body), http.StatusOK, "accepted"},
		{"a GET", http.MethodGet, nil, "", "", http.StatusMethodNotAllowed, "method"},
		{"no signature", http.MethodPost, body, "current", "", http.StatusUnauthorized, "forged"},
		{"signed by a key the publisher does not list", http.MethodPost, body, "current", stranger.Sign(body), http.StatusUnauthorized, "forged"},
		{"a body changed after signing", http.MethodPost, append([]byte(" "), body...), "current", current.Sign(body), http.StatusUnauthorized, "forged"},
		{"a signature that is not base64", http.MethodPost, body, "current", "%%%", http.StatusUnauthorized, "forged"},
		{"an identifier nobody published", http.MethodPost, body, "made-up", current.Sign(body), http.StatusUnauthorized, "unknown_key"},
		{"an oversized body", http.MethodPost, bytes.Repeat([]byte("x"), MaxBody+1), "current", "c2ln", http.StatusRequestEntityTooLarge, "oversized"},
		{"a signed body that is not a report", http.MethodPost, []byte(`{"token":"x"}`), "current", current.Sign([]byte(`{"token":"x"}`)), http.StatusBadRequest, "malformed"},
		{"a signed report with a token over its bound", http.MethodPost, []byte(`[{"token":"` + strings.Repeat("k", MaxTokenLength+1) + `"}]`), "current",
			current.Sign([]byte(`[{"token":"` + strings.Repeat("k", MaxTokenLength+1) + `"}]`)), http.StatusBadRequest, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &responder{known: map[string]bool{leaked: true}}
			h := &Handler{Keys: &PublicKeys{URL: pub.srv.URL}, Responder: r, Log: log, Reports: reports, Tokens: tokens}
			before := testutil.ToFloat64(reports.WithLabelValues(tc.outcome))
			req := httptest.NewRequest(tc.method, "/", bytes.NewReader(tc.body))
			if tc.keyID != "" {
				req.Header.Set(HeaderKeyIdentifier, tc.keyID)
			}
			if tc.sig != "" {
				req.Header.Set(HeaderKeySignature, tc.sig)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("answered %d %s; want %d", rec.Code, rec.Body, tc.want)
			}
			if got := testutil.ToFloat64(reports.WithLabelValues(tc.outcome)); got != before+1 {
				t.Errorf("keyward_leak_reports_total{outcome=%q} went from %v to %v", tc.outcome, before, got)
			}
			if tc.want != http.StatusOK {
				if len(r.asked) > 0 {
					t.Errorf("a refused report reached the responder: %d matches", len(r.asked))
				}
				return
			}
			var fb []Feedback
			if err := json.Unmarshal(rec.Body.Bytes(), &fb); err != nil {
				t.Fatal(err)
			}
			want := []Feedback{{TokenHash: Match{Token: leaked}.TokenHash(), TokenType: "keyward_api_key", Label: LabelTruePositive},
				{TokenHash: Match{Token: "kw_someone_elses"}.TokenHash(), TokenType: "keyward_api_key", Label: LabelFalsePositive}}
			if len(fb) != 2 || fb[0] != want[0] || fb[1] != want[1] {
				t.Errorf("feedback %+v; want %+v", fb, want)
			}
			if len(r.asked) != 2 || r.asked[0].URL != "https://github.com/o/r/blob/x/a.env" || r.asked[1].Source != "commit" {
				t.Errorf("the responder was asked %+v", r.asked)
			}
			if strings.Contains(rec.Body.String(), leaked) {
				t.Error("the feedback holds a reported token")
			}
		})
	}
	if strings.Contains(logs.String(), leaked) || strings.Contains(logs.String(), "kw_someone_elses") {
		t.Errorf("the log holds a reported token:\n%s", logs.String())
	}
	if got := testutil.ToFloat64(tokens.WithLabelValues(LabelFalsePositive)); got != 1 {
		t.Errorf("false positives counted %v; want 1 (unknown tokens are counted, not detailed)", got)
	}
}

func TestAnUnknownSigningKeyFetchesTheListAgainAtMostOncePerInterval(t *testing.T) {
	pub := newPublisher(t)
	pub.add("old")
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	keys := &PublicKeys{URL: pub.srv.URL, Clock: clk, MinRefetch: time.Minute}
	ctx := context.Background()
	body := []byte(`[]`)
	rotated := reporttest.NewSigner() // GitHub's next key, not published yet
	if err := keys.Verify(ctx, body, "new", rotated.Sign(body)); !errors.Is(err, ErrUnknownKey) || keys.Fetches() != 1 {
		t.Fatalf("before GitHub publishes the key: %v after %d fetches; want ErrUnknownKey after 1", err, keys.Fetches())
	}
	pub.mu.Lock()
	pub.signers["new"] = rotated
	pub.mu.Unlock()
	for range 100 { // a flood naming the new (or a made-up) identifier within the minute: no fetch
		if err := keys.Verify(ctx, body, "made-up", rotated.Sign(body)); !errors.Is(err, ErrUnknownKey) {
			t.Fatal(err)
		}
	}
	if keys.Fetches() != 1 {
		t.Fatalf("%d fetches within the interval; want 1", keys.Fetches())
	}
	clk.SetTime(clk.Now().Add(time.Minute))
	if err := keys.Verify(ctx, body, "new", rotated.Sign(body)); err != nil || keys.Fetches() != 2 {
		t.Fatalf("after the interval: %v after %d fetches; want the new key found by a second fetch", err, keys.Fetches())
	}
	if err := keys.Verify(ctx, body, "new", rotated.Sign(body)); err != nil || keys.Fetches() != 2 {
		t.Errorf("a known key fetched again: %v, %d fetches", err, keys.Fetches())
	}
}

func TestAnOversizedOrForeignListOfKeysIsNotBelieved(t *testing.T) {
	pub := newPublisher(t)
	k := pub.add("current")
	pub.extra = strings.Repeat(" ", MaxKeysDocument)
	keys := &PublicKeys{URL: pub.srv.URL}
	body := []byte(`[]`)
	if err := keys.Verify(context.Background(), body, "current", k.Sign(body)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an oversized list: %v", err)
	}
	// Served by something else entirely.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "nope", http.StatusNotFound) }))
	t.Cleanup(other.Close)
	if err := (&PublicKeys{URL: other.URL}).Verify(context.Background(), body, "current", k.Sign(body)); err == nil ||
		errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrBadSignature) {
		t.Errorf("an unavailable list: %v; want the fetch's error", err)
	}
}

func TestVerifiedReportsBeyondTheLimitAreRefusedBeforeTheResponder(t *testing.T) {
	pub := newPublisher(t)
	k := pub.add("current")
	body := []byte(`[{"token":"` + leaked + `","type":"t"}]`)
	r := &responder{known: map[string]bool{leaked: true}}
	h := &Handler{Keys: &PublicKeys{URL: pub.srv.URL}, Responder: r, Log: funcr.New(func(string, string) {}, funcr.Options{}),
		Limiter: rate.NewLimiter(rate.Every(time.Hour), 2)}
	codes := []int{}
	for range 3 {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set(HeaderKeyIdentifier, "current")
		req.Header.Set(HeaderKeySignature, k.Sign(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		codes = append(codes, rec.Code)
	}
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK || codes[2] != http.StatusTooManyRequests || len(r.asked) != 2 {
		t.Errorf("answers %v, responder asked %d times; want 200, 200, 429 and 2", codes, len(r.asked))
	}
}
