// Package reporttest plays GitHub's part in tests of leak reports: a signing key, the published list of
// verifying keys, and signatures over report bodies.
package reporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
)

// Signer is a P-256 signing key, as GitHub signs reports with.
type Signer struct {
	Key *ecdsa.PrivateKey
}

// NewSigner makes a new signing key; it panics only when the system's randomness fails.
func NewSigner() *Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Signer{Key: k}
}

// Sign is the base64 ASN.1 signature over SHA-256 of body, as the Github-Public-Key-Signature header holds.
func (s *Signer) Sign(body []byte) string {
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.Key, digest[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// PublicKeyPEM is the verifying key in PEM, as the published list holds it.
func (s *Signer) PublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(&s.Key.PublicKey)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// KeysDocument is the published list of verifying keys, by identifier:
// {"public_keys": [{"key_identifier", "key", "is_current"}]}.
func KeysDocument(signers map[string]*Signer) []byte {
	type entry struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	}
	doc := struct {
		PublicKeys []entry `json:"public_keys"`
	}{PublicKeys: []entry{}}
	for id, s := range signers {
		doc.PublicKeys = append(doc.PublicKeys, entry{KeyIdentifier: id, Key: s.PublicKeyPEM(), IsCurrent: true})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}
