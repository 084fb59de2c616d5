package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/selfsigned"
)

// maxDelivery bounds what the receiver reads of one delivery; Keyward's payloads are well under 2 KiB.
const maxDelivery = 64 << 10

// receiver is run-local's webhook receiver: what a team would run behind spec.webhook.url, so that webhooks
// can be tried on a laptop. It checks each delivery's Standard Webhooks signature with the reference library,
// against the signing secret of the APIKey the payload names, prints one line per delivery and appends the
// delivery (verified or not) to a JSON Lines file. It answers 204 to a verified delivery and 401 to any
// other, so the manager's status shows a receiver that refuses what it cannot verify.
type receiver struct {
	client client.Client
	// lines gets one human-readable line per delivery; record one JSON object per delivery.
	lines  io.Writer
	mu     sync.Mutex
	record io.Writer
}

// delivery is one line of the receiver's record.
type delivery struct {
	ReceivedAt string          `json:"receivedAt"`
	Verified   bool            `json:"verified"`
	Error      string          `json:"error,omitempty"`
	ID         string          `json:"webhookID"`
	Body       json.RawMessage `json:"body,omitempty"`
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxDelivery+1))
	if err != nil || len(raw) > maxDelivery {
		http.Error(w, "unreadable or larger than 64 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	var body notify.Body
	verr := json.Unmarshal(raw, &body)
	if verr == nil {
		verr = r.verify(req.Context(), body, raw, req.Header)
	}
	d := delivery{ReceivedAt: time.Now().UTC().Format(time.RFC3339), Verified: verr == nil, ID: req.Header.Get(notify.HeaderID)}
	if json.Valid(raw) {
		d.Body = raw
	}
	what := fmt.Sprintf("%s %s/%s", body.Type, body.Data.Namespace, body.Data.Name)
	if body.Data.KeyID != "" {
		what += " " + body.Data.KeyID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if verr != nil {
		d.Error = verr.Error()
		fmt.Fprintf(r.lines, "run-local: webhook %s: NOT verified (%v); answered 401\n", what, verr)
	} else {
		fmt.Fprintf(r.lines, "run-local: webhook %s: signature verified\n", what)
	}
	line, _ := json.Marshal(d)
	_, _ = r.record.Write(append(line, '\n'))
	if verr != nil {
		http.Error(w, "signature not verified", http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// verify checks the delivery's signature with the signing secret of the APIKey the payload names. Trusting
// the payload's names before the check is safe: a payload that names another APIKey is checked with that
// APIKey's secret, which its sender does not have.
func (r *receiver) verify(ctx context.Context, body notify.Body, raw []byte, h http.Header) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: body.Data.Namespace, Name: body.Data.Name}, ak); err != nil {
		return fmt.Errorf("the APIKey the payload names: %w", err)
	}
	if ak.Spec.Webhook == nil {
		return fmt.Errorf("APIKey %s/%s has no webhook", ak.Namespace, ak.Name)
	}
	ref := ak.Spec.Webhook.SigningSecretRef
	s := &corev1.Secret{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: ref.Name}, s); err != nil {
		return fmt.Errorf("the signing secret: %w", err)
	}
	key := ref.Key
	if key == "" {
		key = "secret"
	}
	wh, err := standardwebhooks.NewWebhook(string(s.Data[key]))
	if err != nil {
		return fmt.Errorf("Secret %s key %s is not a whsec_ secret: %w", ref.Name, key, err)
	}
	return wh.Verify(raw, h)
}

// selfSignedTLS returns a certificate for 127.0.0.1 and localhost and writes it (the certificate only) into
// dir/ca.crt so that the manager trusts it as one more root.
func selfSignedTLS(dir string) (*tls.Config, error) {
	id, err := selfsigned.New("run-local webhook receiver", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), id.PEM, 0o644); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{id.Certificate}}, nil
}

// trustingAlso is the SSL_CERT_DIR that makes a Go program trust the system's roots and those in dir:
// Go reads every directory listed there, where SSL_CERT_FILE would replace the system's file.
func trustingAlso(dir string) string {
	dirs := os.Getenv("SSL_CERT_DIR")
	if dirs == "" {
		dirs = "/etc/ssl/certs:/etc/pki/tls/certs:/system/etc/security/cacerts"
	}
	return dirs + ":" + dir
}
