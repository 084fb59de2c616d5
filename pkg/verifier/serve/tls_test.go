package serve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/keyward-dev/keyward/internal/eventually"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 into dir and returns a pool that trusts it.
func selfSigned(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write beside the target and rename, as a kubelet updates a mounted Secret.
	for file, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		tmp := filepath.Join(dir, "."+file)
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, file)); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func TestTLSListenersServeAndReloadTheCertificate(t *testing.T) {
	dir := t.TempDir()
	first := selfSigned(t, dir, "first")
	cfg, watcher, err := ReloadingTLS(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = watcher.Start(ctx) }()

	srv, ext, key, _ := serverFixture(t)
	httpLn, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	httpSrv := srv.Server("")
	go func() { _ = httpSrv.Serve(httpLn) }()
	defer httpSrv.Close()
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPCServer(ext, grpc.Creds(credentials.NewTLS(cfg)))
	go func() { _ = g.Serve(grpcLn) }()
	defer g.Stop()

	httpsGet := func(pool *x509.CertPool) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "https://"+httpLn.Addr().String()+"/v1/auth", nil)
		req.Header.Set("X-API-Key", key)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("over TLS: %d", resp.StatusCode)
		}
		return nil
	}
	grpcCheck := func(pool *x509.CertPool) error {
		conn, err := grpc.NewClient(grpcLn.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{}, grpc.WaitForReady(false))
		return err
	}
	if err := httpsGet(first); err != nil {
		t.Fatalf("HTTPS with the first certificate: %v", err)
	}
	if err := grpcCheck(first); err != nil {
		t.Fatalf("gRPC over TLS with the first certificate: %v", err)
	}

	second := selfSigned(t, dir, "second")
	// Each listener's certificate watcher notices the new files on its own; both get there.
	eventually.Succeeds(t, "the HTTP listener serves the new certificate", func() error { return httpsGet(second) })
	eventually.Succeeds(t, "the gRPC listener serves the new certificate", func() error { return grpcCheck(second) })
	var unknown x509.UnknownAuthorityError
	if err := httpsGet(first); !errors.As(err, &unknown) {
		t.Errorf("a client trusting only the replaced certificate gets %v; want an unknown-authority error", err)
	}
}
