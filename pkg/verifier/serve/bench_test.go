package serve

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/keyward-dev/keyward/pkg/verifier"
)

// BenchmarkHTTPForwardAuth runs the forward-auth server and a bare 200 server side by side on loopback,
// each behind its own listener, with the same client and concurrency, and reports requests per second of
// both and their ratio.
func BenchmarkHTTPForwardAuth(b *testing.B) {
	// 10,000 APIKeys indexed, as in the core's Verify benchmarks.
	ix, ks := verifier.NewIndex(), make([]string, 10_000)
	for i := range ks {
		ks[i] = mintKey(b, "kw")
		ix.Upsert(apiKey("bench", fmt.Sprint("key-", i), ks[i], t0.Add(90*24*time.Hour), nil, withScopes("orders:*")))
	}
	srv := &HTTPServer{Index: ix, Clock: clocktesting.NewFakePassiveClock(t0), Metrics: NewMetrics(nil)}
	bare := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	const requests, workers = 40_000, 16
	run := func(h http.Handler, header string) float64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		hs := &http.Server{Handler: h}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}}
		url := "http://" + ln.Addr().String() + "/v1/auth?scope=orders:read"
		var sent atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := range workers {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Authorization", header+ks[w])
				for sent.Add(1) <= requests {
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		return requests / time.Since(start).Seconds()
	}
	// The same server with the decision log on, as shipped: complete (every valid decision), writing to a file.
	f, err := os.Create(filepath.Join(b.TempDir(), "decisions.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	decisions := NewDecisionLog(f, DecisionLogOptions{ValidSample: DefaultDecisionLogValidSample,
		RejectionsPerSecond: DefaultDecisionLogRejectionsPerSecond, UnknownPerSecond: DefaultDecisionLogUnknownPerSecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = decisions.Start(ctx) }()
	logged := &HTTPServer{Index: ix, Clock: srv.Clock, Metrics: NewMetrics(nil), Decisions: decisions}
	for b.Loop() {
		bareRPS := run(bare, "Bearer ")
		authRPS := run(srv.Handler(), "Bearer ")
		loggedRPS := run(logged.Handler(), "Bearer ")
		b.ReportMetric(bareRPS, "bare-req/s")
		b.ReportMetric(authRPS, "forward-auth-req/s")
		b.ReportMetric(100*authRPS/bareRPS, "%-of-bare")
		b.ReportMetric(100*loggedRPS/bareRPS, "%-of-bare-complete-log")
		dropped, _ := decisions.Dropped()
		b.ReportMetric(float64(dropped), "log-lines-dropped-queue-full")
	}
}
