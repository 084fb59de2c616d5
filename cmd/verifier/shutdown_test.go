package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/keyward-dev/keyward/internal/eventually"
)

// A deleted verifier Pod gets SIGTERM while kube-proxy and gateways may still send it requests: it reports not
// ready at once, keeps answering on every listener for the shutdown delay, and only then stops them all.
func TestAStoppingVerifierReportsNotReadyAndKeepsAnsweringUntilItsShutdownDelayEnds(t *testing.T) {
	const delay = 5 * time.Second
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	stopping := newShutdown(delay, clk)
	if err := stopping.readyz(nil); err != nil {
		t.Fatalf("readyz before the stop: %v", err)
	}

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }),
		ReadHeaderTimeout: time.Minute}
	ctx, stop := context.WithCancel(context.Background())
	httpDone, grpcDone := make(chan error, 1), make(chan error, 1)
	go func() { httpDone <- serveHTTP(ctx, srv, httpLn, stopping) }()
	go func() { grpcDone <- serveGRPC(ctx, grpc.NewServer(), grpcLn, stopping) }()
	url := "http://" + httpLn.Addr().String() + "/"
	// A fresh connection per request: a pooled one would prove nothing about the listener.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return errors.New(resp.Status)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("a request before the stop: %v", err)
	}

	stop() // SIGTERM
	eventually.Succeeds(t, "readyz failing once the verifier stops", func() error {
		if stopping.readyz(nil) == nil {
			return errors.New("still ready")
		}
		return nil
	})
	eventually.Succeeds(t, "the shutdown delay's timer set", func() error {
		if !clk.HasWaiters() {
			return errors.New("no timer on the clock yet")
		}
		return nil
	})
	// The delay has not passed on the clock: both listeners still accept new connections.
	if err := get(); err != nil {
		t.Errorf("an HTTP request during the shutdown delay failed: %v", err)
	}
	if c, err := net.Dial("tcp", grpcLn.Addr().String()); err != nil {
		t.Errorf("a gRPC connection during the shutdown delay failed: %v", err)
	} else {
		c.Close()
	}
	select {
	case err := <-httpDone:
		t.Fatalf("the HTTP listener stopped before the delay ended: %v", err)
	case err := <-grpcDone:
		t.Fatalf("the gRPC listener stopped before the delay ended: %v", err)
	default:
	}

	clk.Step(delay)
	for name, done := range map[string]chan error{"HTTP": httpDone, "gRPC": grpcDone} {
		if err := eventually.Receive(t, "the "+name+" listener stopping once the delay ended", done); err != nil {
			t.Errorf("the %s listener stopped with %v", name, err)
		}
	}
	if err := get(); err == nil {
		t.Error("the HTTP listener still answers after the delay")
	}
}
