package selfsigned

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAClientThatTrustsTheIdentityAloneReachesItsAddress(t *testing.T) {
	id, err := New("test receiver", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{id.Certificate}}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(id.PEM) {
		t.Fatal("the PEM holds no certificate")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("a client trusting the identity: %v", err)
	}
	resp.Body.Close()
	// Another identity's certificate is not trusted by the first one's PEM.
	other, err := New("other", []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv2.TLS = &tls.Config{Certificates: []tls.Certificate{other.Certificate}}
	srv2.StartTLS()
	defer srv2.Close()
	if resp, err := c.Get(srv2.URL); err == nil {
		resp.Body.Close()
		t.Error("a client trusting one identity accepted another")
	}
}
