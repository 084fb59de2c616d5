package testenv

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
)

// Outage stands between clients and the API server: a TCP proxy on loopback that a test can cut, so the API
// server goes away for those clients only (every connection closed, new ones refused) and comes back on the
// same address. The shared control plane keeps serving the rest of the test binary meanwhile.
type Outage struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// NewOutage starts a proxy to cfg's API server; it stops when the test ends.
func NewOutage(t testing.TB, cfg *rest.Config) *Outage {
	t.Helper()
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatalf("the API server's address %q: %v", cfg.Host, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &Outage{target: u.Host, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	o.serve(ln)
	t.Cleanup(func() {
		o.Cut()
		o.wg.Wait()
	})
	return o
}

// Config is cfg with its requests sent through the proxy. The API server's certificate names 127.0.0.1, so
// TLS verification is unchanged.
func (o *Outage) Config(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Host = "https://" + o.addr
	return cfg
}

// Cut closes every proxied connection and refuses new ones, as an API server that went away does.
func (o *Outage) Cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln != nil {
		_ = o.ln.Close()
		o.ln = nil
	}
	for c := range o.conns {
		_ = c.Close()
	}
}

// Restore accepts connections on the same address again.
func (o *Outage) Restore(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		t.Fatalf("listening on %s again: %v", o.addr, err)
	}
	o.serve(ln)
}

func (o *Outage) serve(ln net.Listener) {
	o.mu.Lock()
	o.ln = ln
	o.mu.Unlock()
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // cut
			}
			o.wg.Go(func() { o.pipe(c) })
		}
	})
}

// pipe copies between a client connection and a new one to the API server until either side closes.
func (o *Outage) pipe(c net.Conn) {
	up, err := net.Dial("tcp", o.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !o.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	copyThenClose := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // either end closing, or a cut, ends both
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go copyThenClose(up, c)
	go copyThenClose(c, up)
	<-done
	<-done
	o.mu.Lock()
	delete(o.conns, c)
	delete(o.conns, up)
	o.mu.Unlock()
}

// track registers a connection pair, or closes it when the proxy was cut meanwhile.
func (o *Outage) track(c, up net.Conn) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln == nil {
		_ = c.Close()
		_ = up.Close()
		return false
	}
	o.conns[c], o.conns[up] = true, true
	return true
}
