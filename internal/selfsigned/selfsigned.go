// Package selfsigned makes the throwaway TLS identities of Keyward's local tools and tests: a certificate
// that is its own CA, for the addresses a receiver listens on, which its client then trusts by that
// certificate alone (a caBundle, a directory of roots).
package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// Identity is a self-signed server certificate with its key.
type Identity struct {
	// Certificate is what a tls.Config serves.
	Certificate tls.Certificate
	// PEM is the certificate alone, for whoever must trust it; KeyPEM its private key, for a server that
	// reads both from files (as from a mounted TLS Secret).
	PEM    []byte
	KeyPEM []byte
}

// New returns an identity named cn for the given IP addresses and DNS names, valid from an hour ago for a
// day: long enough for a run, short enough that a leaked one is soon worthless.
func New(cn string, ips []net.IP, dnsNames []string) (Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Identity{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return Identity{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips, DNSNames: dnsNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Identity{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		PEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}, nil
}
