package delivery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"code.dny.dev/ssrf"

	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/textguard"
)

// Bounds of one attempt. Every byte an attempt reads from the receiver is bounded, so a hostile receiver
// costs the shared manager a few KiB, not its memory.
const (
	// DefaultAttemptTimeout bounds one attempt, dial, TLS, request and answer included. Receivers are
	// expected to answer quickly and work asynchronously (as for GitHub's 10 s).
	DefaultAttemptTimeout = 10 * time.Second
	// MaxResponseHeaderBytes is how much of the answer's status line and headers is read; a longer header
	// block fails the attempt.
	MaxResponseHeaderBytes = 8 << 10
	// ResponseBodyLimit is how much of the answer's body is read (and discarded).
	ResponseBodyLimit = 4 << 10
	// dialTimeout and tlsTimeout bound the connection's set-up within the attempt.
	dialTimeout = 5 * time.Second
	tlsTimeout  = 5 * time.Second
	// maxTransports bounds the transports kept per CA bundle; past it the cache starts again, so a tenant who
	// writes many bundles cannot grow it.
	maxTransports = 256
)

// Result is what one attempt got.
type Result struct {
	Outcome    notify.Outcome
	Status     int
	RetryAfter string
	// Err is why no answer was had (or why it could not be sent).
	Err error
	// Refused is set when the target's address is in a refused range.
	Refused bool
	// Took is how long the receiver took to answer.
	Took time.Duration
}

// Summary describes the result for status and events; it never holds the payload. An error can quote what
// the receiver sent (the names in its certificate, say), so it is escaped and bounded like all text others
// wrote: it cannot forge a line of the condition or event that shows it, nor drive a terminal.
func (r Result) Summary() string {
	if r.Err != nil {
		msg := r.Err.Error()
		if len(msg) > maxSummary {
			msg = msg[:maxSummary] + "…"
		}
		return textguard.Escape(msg)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, http.StatusText(r.Status))
}

// maxSummary bounds an error's text in status and events.
const maxSummary = 1024

// Failed is the result of an attempt that could not be made.
func Failed(err error) Result { return Result{Outcome: notify.Failed, Err: err} }

// Attempt is one signed POST.
type Attempt struct {
	URL string
	// CABundle is spec.webhook.caBundle: PEM, or base64 of PEM; empty for the system roots.
	CABundle string
	Signer   *notify.Signer
	// ID and At are the webhook-id and webhook-timestamp.
	ID      string
	At      time.Time
	Payload []byte
}

// Sender owns every byte that goes to or comes from a receiver: it follows no redirects, dials only
// addresses outside the refused ranges (checked on the resolved IP at dial time, so DNS rebinding cannot get
// around it), and reads at most MaxResponseHeaderBytes of headers and ResponseBodyLimit of body.
type Sender struct {
	// AllowedCIDRs are ranges that deliveries may reach although they are loopback, private, link-local or
	// otherwise special-purpose (--webhook-allowed-cidrs).
	AllowedCIDRs []netip.Prefix
	// Timeout bounds one attempt; DefaultAttemptTimeout when zero.
	Timeout time.Duration

	mu      sync.Mutex
	clients map[[sha256.Size]byte]*http.Client
}

// Send makes one attempt.
func (s *Sender) Send(ctx context.Context, a Attempt) Result {
	c, err := s.client(a.CABundle)
	if err != nil {
		return Failed(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(a.Payload))
	if err != nil {
		return Failed(fmt.Errorf("building the request: %w", err))
	}
	a.Signer.Headers(req.Header, a.ID, a.At, a.Payload)
	req.Header.Set("User-Agent", "keyward-webhook/1")
	start := time.Now()
	resp, err := c.Do(req)
	took := time.Since(start)
	if err != nil {
		cause := errors.Unwrap(err)
		if cause == nil {
			cause = err
		}
		if errors.Is(err, ssrf.ErrProhibitedIP) || errors.Is(err, ssrf.ErrProhibitedNetwork) || errors.Is(err, ssrf.ErrProhibitedPort) {
			return Result{Outcome: notify.Failed, Refused: true, Took: took,
				Err: fmt.Errorf("refused to connect to %s: %w; allow the range with --webhook-allowed-cidrs if it is yours", a.URL, cause)}
		}
		return Result{Outcome: notify.Failed, Took: took, Err: fmt.Errorf("POST %s: %w", a.URL, cause)}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, ResponseBodyLimit))
	return Result{Outcome: notify.Classify(resp.StatusCode), Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Took: took}
}

func (s *Sender) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultAttemptTimeout
}

// client returns the HTTP client for a CA bundle, built once per bundle.
func (s *Sender) client(caBundle string) (*http.Client, error) {
	sum := sha256.Sum256([]byte(caBundle))
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[sum]; ok {
		return c, nil
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caBundle != "" {
		pool, err := ParseCABundle(caBundle)
		if err != nil {
			return nil, err
		}
		tlsConfig.RootCAs = pool
	}
	var v4, v6 []netip.Prefix
	for _, p := range s.AllowedCIDRs {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	guard := ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
	dialer := &net.Dialer{Timeout: dialTimeout, Control: guard.Safe}
	c := &http.Client{
		Timeout:       s.timeout(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: tlsConfig, DisableKeepAlives: true,
			TLSHandshakeTimeout: tlsTimeout, ResponseHeaderTimeout: s.timeout(), MaxResponseHeaderBytes: MaxResponseHeaderBytes,
			Proxy: nil},
	}
	if s.clients == nil || len(s.clients) >= maxTransports {
		s.clients = map[[sha256.Size]byte]*http.Client{}
	}
	s.clients[sum] = c
	return c, nil
}

// ParseCABundle reads spec.webhook.caBundle: PEM certificates, or the base64 of PEM certificates (what
// Kubernetes users write for every other caBundle field).
func ParseCABundle(bundle string) (*x509.CertPool, error) {
	raw := []byte(bundle)
	if !strings.Contains(bundle, "-----BEGIN") {
		decoded, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(bundle), ""))
		if err != nil {
			return nil, errors.New("spec.webhook.caBundle is neither PEM nor base64-encoded PEM")
		}
		raw = decoded
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, errors.New("spec.webhook.caBundle holds no PEM certificate")
	}
	return pool, nil
}
