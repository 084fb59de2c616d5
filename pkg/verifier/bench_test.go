package verifier

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// indexWith returns an index of n APIKeys with one current key each, and the keys.
func indexWith(b testing.TB, n int) (*Index, []string) {
	ix := NewIndex()
	ks := make([]string, n)
	for i := range n {
		ks[i] = mintKey(b, "kw")
		ix.Upsert(apiKey("bench", fmt.Sprintf("key-%06d", i), ks[i], t0.Add(90*24*time.Hour), nil, withScopes("orders:*", "invoices:read")))
	}
	return ix, ks
}

// BenchmarkVerifyValidKey10k: in-process Verify of a valid key with a required scope, 10,000 keys indexed.
func BenchmarkVerifyValidKey10k(b *testing.B) {
	ix, ks := indexWith(b, 10_000)
	key := ks[4242]
	required := []string{"orders:read"}
	b.ReportAllocs()
	for b.Loop() {
		if ix.Verify(key, required, t0).Code != CodeValid {
			b.Fatal("not valid")
		}
	}
}

// BenchmarkVerifyValidKey10kParallel is the same from every core at once.
func BenchmarkVerifyValidKey10kParallel(b *testing.B) {
	ix, ks := indexWith(b, 10_000)
	required := []string{"orders:read"}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := ks[next.Add(1)%int64(len(ks))]
		for pb.Next() {
			ix.Verify(key, required, t0)
		}
	})
}

// BenchmarkIndexMemoryPerKey100k reports the heap the index holds per indexed key at 100,000 APIKeys.
func BenchmarkIndexMemoryPerKey100k(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		ks := make([]string, n)
		for i := range ks {
			ks[i] = mintKey(b, "kw")
		}
		aks := make([]any, 0) // nothing retained but the index
		_ = aks
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		ix := NewIndex()
		for i := range n {
			ix.Upsert(apiKey("bench", fmt.Sprintf("key-%06d", i), ks[i], t0.Add(90*24*time.Hour), nil, withScopes("orders:*", "invoices:read")))
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/indexed-key")
		runtime.KeepAlive(ix)
		runtime.KeepAlive(ks)
	}
}

// BenchmarkHTTPForwardAuth runs the forward-auth server and a bare 200 server side by side on loopback,
// each behind its own listener, with the same client and concurrency, and reports requests per second of
// both and their ratio.
func BenchmarkHTTPForwardAuth(b *testing.B) {
	ix, ks := indexWith(b, 10_000)
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
	for b.Loop() {
		bareRPS := run(bare, "Bearer ")
		authRPS := run(srv.Handler(), "Bearer ")
		b.ReportMetric(bareRPS, "bare-req/s")
		b.ReportMetric(authRPS, "forward-auth-req/s")
		b.ReportMetric(100*authRPS/bareRPS, "%-of-bare")
	}
}
