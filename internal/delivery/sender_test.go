package delivery

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keyward-dev/keyward/internal/notify"
)

func signer(t *testing.T) *notify.Signer {
	s, err := notify.NewSigner("whsec_" + base64.StdEncoding.EncodeToString([]byte("sender test secret")))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

func TestSendReadsNoMoreThanTheHeaderBound(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for i := range 2000 {
			w.Header().Add("X-Padding", strings.Repeat("p", 8)+string(rune('a'+i%26)))
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	s := &Sender{AllowedCIDRs: loopback()}
	r := s.Send(context.Background(), Attempt{URL: srv.URL, Signer: signer(t), ID: "msg_1", At: time.Unix(0, 0), Payload: []byte("{}")})
	if r.Outcome != notify.Failed || r.Err == nil || !strings.Contains(r.Err.Error(), "exceeded") {
		t.Fatalf("an answer with %d KiB of headers: %+v; want a failure", 2000*22>>10, r)
	}
}

func TestSendFollowsNoRedirectAndRefusesLoopbackUnlessAllowed(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("https://elsewhere.example.com/", http.StatusFound))
	defer srv.Close()
	a := Attempt{URL: srv.URL, Signer: signer(t), ID: "msg_1", At: time.Unix(0, 0), Payload: []byte("{}")}
	if r := (&Sender{AllowedCIDRs: loopback()}).Send(context.Background(), a); r.Status != http.StatusFound || r.Outcome != notify.Failed {
		t.Errorf("a redirect: %+v; want the 302 itself, as a failure", r)
	}
	if r := (&Sender{}).Send(context.Background(), a); !r.Refused || !strings.Contains(r.Summary(), "--webhook-allowed-cidrs") {
		t.Errorf("loopback without the allow list: %+v; want refused", r)
	}
}

func TestSendGivesUpAfterTheAttemptTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and never answers; the connections close with the listener
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	s := &Sender{AllowedCIDRs: loopback(), Timeout: 50 * time.Millisecond}
	r := s.Send(context.Background(), Attempt{URL: "http://" + ln.Addr().String(), Signer: signer(t), ID: "msg_1", At: time.Unix(0, 0)})
	if r.Outcome != notify.Failed || r.Err == nil {
		t.Fatalf("a receiver that never answers: %+v; want a failure", r)
	}
}

func TestParseCABundleTakesPEMOrBase64EncodedPEM(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	for name, bundle := range map[string]string{
		"PEM":                 p,
		"base64 PEM":          base64.StdEncoding.EncodeToString([]byte(p)),
		"base64 PEM, wrapped": strings.Join(strings.SplitAfter(base64.StdEncoding.EncodeToString([]byte(p)), "AAAA"), "\n"),
	} {
		if _, err := ParseCABundle(bundle); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, bundle := range map[string]string{"garbage": "not a certificate", "base64 of garbage": "aGVsbG8="} {
		if _, err := ParseCABundle(bundle); err == nil {
			t.Errorf("%s is accepted", name)
		}
	}
}

// A receiver controls parts of the errors a delivery gets (its certificate's names, say); what status and
// events say of them cannot forge a line or drive a terminal, and is bounded.
func TestAnErrorsTextIsEscapedAndBoundedInTheSummary(t *testing.T) {
	r := Failed(errors.New("x509: certificate is valid for evil\r\nReady=True KeyReady\x1b]52;c;ZXZpbA==\x07, not hooks.example.com" +
		strings.Repeat("x", 4096)))
	got := r.Summary()
	if strings.ContainsAny(got, "\r\n\x1b\x07") {
		t.Errorf("the summary carries control characters: %q", got)
	}
	if !strings.Contains(got, `evil\r\nReady=True KeyReady\x1b]52`) || len(got) > maxSummary+64 {
		t.Errorf("summary %q (%d bytes); want the escaped text, bounded", got[:min(len(got), 120)], len(got))
	}
}
