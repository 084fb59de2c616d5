package verifier

import (
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
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

// BenchmarkVerifyDuringDrain measures what a usage drain costs verification at the size that stopped it
// before (issue 27): 20,000 APIKeys with a current key and ten previous ones each (220,000 keys), a tenth
// of them used since the last drain. One goroutine verifies another tenant's key without pause while the
// benchmark drains; it reports the p99, p99.9 and longest Verify during drains, and how long a drain takes.
// Run it: go test ./pkg/verifier -run '^$' -bench VerifyDuringDrain -benchtime 20x
func BenchmarkVerifyDuringDrain(b *testing.B) {
	const apiKeys, previous = 20000, 10
	ix := NewIndex()
	var used []string
	for i := range apiKeys {
		cur := mintKey(b, "kw")
		prev := map[string]time.Time{}
		for range previous {
			prev[mintKey(b, "kw")] = t0.Add(time.Hour)
		}
		ix.Upsert(apiKey(fmt.Sprintf("team-%03d", i%500), fmt.Sprintf("key-%06d", i), cur, t0.Add(90*24*time.Hour), prev))
		if i%10 == 0 {
			used = append(used, cur)
		}
	}
	victim := mintKey(b, "kw")
	ix.Upsert(apiKey("victim", "other-tenant", victim, t0.Add(90*24*time.Hour), nil))

	var draining atomic.Bool
	stop := make(chan struct{})
	done := make(chan []time.Duration)
	go func() {
		var lat []time.Duration
		for {
			select {
			case <-stop:
				done <- lat
				return
			default:
			}
			during := draining.Load()
			start := time.Now()
			ix.Verify(victim, nil, t0)
			if during {
				lat = append(lat, time.Since(start))
			}
		}
	}()
	var drains time.Duration
	for b.Loop() {
		for _, k := range used {
			ix.Verify(k, nil, t0)
		}
		draining.Store(true)
		start := time.Now()
		if got := ix.DrainUsage(); len(got) < len(used) {
			b.Fatalf("drained %d APIKeys, want at least %d", len(got), len(used))
		}
		drains += time.Since(start)
		draining.Store(false)
	}
	close(stop)
	lat := <-done
	if len(lat) == 0 {
		b.Fatal("no verification ran during a drain")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1000, "verify-p99-µs-during-drain")
	b.ReportMetric(float64(lat[len(lat)*999/1000].Nanoseconds())/1000, "verify-p99.9-µs-during-drain")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds())/1000, "verify-max-µs-during-drain")
	b.ReportMetric(float64(drains.Milliseconds())/float64(b.N), "drain-ms")
}
