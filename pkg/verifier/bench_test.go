package verifier

import (
	"fmt"
	"runtime"
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
