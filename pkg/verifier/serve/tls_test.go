package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
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
	"github.com/keyward-dev/keyward/internal/selfsigned"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 into dir and returns a pool that trusts it.
func selfSigned(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	id, err := selfsigned.New(name, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Write beside the target and rename, as a kubelet updates a mounted Secret.
	for file, data := range map[string][]byte{"tls.crt": id.PEM, "tls.key": id.KeyPEM} {
		tmp := filepath.Join(dir, "."+file)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, file)); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(id.PEM) {
		t.Fatal("no certificate in the identity's PEM")
	}
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
