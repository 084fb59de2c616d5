// Package leakreport reads the reports of leaked keys that a secret scanner sends: GitHub's secret scanning
// partner program today. A report is a POST whose JSON body is an array of matches ({token, type, url,
// source}), signed with ECDSA P-256 / SHA-256 over the raw body; the signature (base64, ASN.1) and the
// identifier of the key that made it come in the headers Github-Public-Key-Signature and
// Github-Public-Key-Identifier, and the verifying keys from a published list (PublicKeys).
//
// Nothing of a report is believed before its signature verifies over the raw bytes, and every byte read
// from outside is bounded: the body (MaxBody), the list of keys (MaxKeysDocument), the number and size of
// matches. A reported token is hashed at once and never logged or kept.
package leakreport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// DefaultKeysURL is GitHub's list of the keys that sign secret scanning reports.
const DefaultKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"

// MaxKeysDocument bounds the list of keys read from the publisher: 64 KiB holds well over a hundred P-256
// keys in PEM; GitHub publishes a handful.
const MaxKeysDocument = 64 << 10

// MaxKeys bounds how many keys of the list are kept.
const MaxKeys = 64

// DefaultMinRefetch is how long PublicKeys waits after fetching the list before an unknown identifier
// fetches it again: a flood of reports naming made-up identifiers costs the publisher one request a minute.
const DefaultMinRefetch = time.Minute

// ErrUnknownKey is Verify's answer for a report signed by a key the publisher does not list.
var ErrUnknownKey = errors.New("the report names a signing key the publisher does not list")

// ErrBadSignature is Verify's answer for a signature that does not verify over the body.
var ErrBadSignature = errors.New("the report's signature does not verify over its body")

// PublicKeys fetches the publisher's list of signing keys and keeps it: fetched on first use, and again
// when a report names an identifier the list lacks (a key GitHub added), at most once per MinRefetch.
type PublicKeys struct {
	// URL is the list's address (DefaultKeysURL for GitHub).
	URL string
	// Client fetches it; http.DefaultClient when nil. Give it a timeout.
	Client *http.Client
	// Clock decides when a refetch is allowed; the real clock when nil.
	Clock clock.PassiveClock
	// MinRefetch is DefaultMinRefetch when zero.
	MinRefetch time.Duration

	mu        sync.Mutex
	keys      map[string]*ecdsa.PublicKey
	fetchedAt time.Time
	fetches   int
}

// keysDocument is the publisher's list: {"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}.
type keysDocument struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// Fetches is how many times the list was fetched (for tests and metrics).
func (k *PublicKeys) Fetches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}

// Verify checks that sig, the base64 of an ASN.1 ECDSA signature, verifies over SHA-256 of body with the
// key the publisher lists as keyID.
func (k *PublicKeys) Verify(ctx context.Context, body []byte, keyID, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) > 128 { // an ASN.1 P-256 signature is at most 72 bytes
		return ErrBadSignature
	}
	pub, err := k.lookup(ctx, keyID)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, digest[:], raw) {
		return ErrBadSignature
	}
	return nil
}

// lookup returns the key listed as id, fetching the list when it is not known yet or lacks id (at most
// once per MinRefetch). Callers wait for one fetch at a time.
func (k *PublicKeys) lookup(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if pub, ok := k.keys[id]; ok {
		return pub, nil
	}
	c := k.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	every := k.MinRefetch
	if every <= 0 {
		every = DefaultMinRefetch
	}
	if k.keys != nil && c.Since(k.fetchedAt) < every {
		return nil, ErrUnknownKey
	}
	k.fetches++
	k.fetchedAt = c.Now()
	keys, err := k.fetch(ctx)
	if err != nil {
		if k.keys == nil {
			k.keys = map[string]*ecdsa.PublicKey{} // the next try waits for MinRefetch too
		}
		return nil, fmt.Errorf("fetching the signing keys: %w", err)
	}
	k.keys = keys
	if pub, ok := k.keys[id]; ok {
		return pub, nil
	}
	return nil, ErrUnknownKey
}

// fetch reads the list, keeping the P-256 keys (current or not: a report signed just before a rotation
// is still genuine).
func (k *PublicKeys) fetch(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	client := k.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", k.URL, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxKeysDocument+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxKeysDocument {
		return nil, fmt.Errorf("the list of keys is larger than %d bytes", MaxKeysDocument)
	}
	var doc keysDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("reading the list of keys: %w", err)
	}
	out := map[string]*ecdsa.PublicKey{}
	for _, e := range doc.PublicKeys {
		if len(out) == MaxKeys {
			break
		}
		block, _ := pem.Decode([]byte(e.Key))
		if block == nil || e.KeyIdentifier == "" {
			continue
		}
		parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			continue
		}
		if pub, ok := parsed.(*ecdsa.PublicKey); ok && pub.Curve == elliptic.P256() {
			out[e.KeyIdentifier] = pub
		}
	}
	return out, nil
}
