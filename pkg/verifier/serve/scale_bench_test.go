package serve_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

// populateKeys creates n APIKeys in ns, each with a current key in status written as the manager's identity
// (as the manager would after minting), with 8 clients at once, and returns the keys by APIKey index.
func populateKeys(b *testing.B, ns string, n int) []string {
	return populateShapedKeys(b, ns, 0, n, func(ns, name string) *keywardv1alpha1.APIKey {
		return &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	})
}

// populateShapedKeys is populateKeys of the APIKeys numbered from to to (excluded), each made by shape.
func populateShapedKeys(b *testing.B, ns string, from, to int, shape func(ns, name string) *keywardv1alpha1.APIKey) []string {
	b.Helper()
	cfg := testenv.ImpersonatingConfig(env.Config, testenv.ManagerUser)
	cfg.QPS = -1
	writer, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	out := make([]string, to)
	expires := metav1.NewTime(time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				key, err := keys.Generate("kw", rand.Reader)
				if err != nil {
					b.Error(err)
					continue
				}
				ak := shape(ns, fmt.Sprintf("key-%06d", i))
				if err := env.Client.Create(ctx, ak); err != nil {
					b.Errorf("creating APIKey %d: %v", i, err)
					continue
				}
				before := ak.DeepCopy()
				hash := keys.Hash(key)
				ak.Status.KeyHash, ak.Status.KeyID, ak.Status.Revision, ak.Status.ExpiresAt = hash, keys.IDFromHash(hash), 1, &expires
				if err := writer.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
					b.Errorf("writing the status of APIKey %d: %v", i, err)
					continue
				}
				out[i] = key
			}
		})
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// BenchmarkVerifierAtScale puts APIKeys (100,000 unless KEYWARD_BENCH_VERIFIER_KEYS says otherwise), each
// with a current key, into the test control plane, then starts a verifier as cmd/verifier does (its own
// manager as the verifier's identity, managedFields dropped) and reports: the seconds from its start until
// its index has every key (when it turns ready), its live heap per key above the heap before it started
// (informer cache and index together), and, while two clients verify random keys as fast as they can, the
// time from the API write that disables an APIKey to the verifier rejecting its key, over 50 revocations.
// Run it once: go test ./pkg/verifier/serve -run '^$' -bench VerifierAtScale -benchtime 1x
func BenchmarkVerifierAtScale(b *testing.B) {
	testenv.Need(b)
	n := testenv.EnvInt("KEYWARD_BENCH_VERIFIER_KEYS", 100000)
	ns := env.Namespace(b)
	populated := time.Now()
	keyOf := populateKeys(b, ns, n)
	b.Logf("%d APIKeys with keys written in %v", n, time.Since(populated).Round(time.Second))

	for b.Loop() {
		idle := testenv.LiveHeap()
		start := time.Now()
		ix, stopVerifier := startBenchVerifier(b, ns)
		ready := time.Since(start)
		heap := testenv.LiveHeap()
		if got := ix.Verify(keyOf[n-1], nil, time.Now()).Code; got != verifier.CodeValid {
			b.Fatalf("the last key written: %s", got)
		}

		// Load: two clients verify random keys (of APIKeys not about to be disabled) without pause.
		var verified atomic.Int64
		stop := make(chan struct{})
		var load sync.WaitGroup
		for range 2 {
			load.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					ix.Verify(keyOf[100+mrand.IntN(n-100)], nil, time.Now())
					verified.Add(1)
				}
			})
		}
		loadStart := time.Now()
		var lat []time.Duration
		for i := range min(50, n) {
			name := fmt.Sprintf("key-%06d", i)
			t0 := time.Now()
			ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
			if err := env.Client.Patch(context.Background(), ak, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"disabled":true}}`))); err != nil {
				b.Fatal(err)
			}
			for ix.Verify(keyOf[i], nil, time.Now()).Code != verifier.CodeDisabled {
				time.Sleep(100 * time.Microsecond)
			}
			lat = append(lat, time.Since(t0))
		}
		close(stop)
		load.Wait()
		rate := float64(verified.Load()) / time.Since(loadStart).Seconds()
		stopVerifier()

		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		perKey := (float64(heap) - float64(idle)) / float64(n)
		b.ReportMetric(ready.Seconds(), "s-until-ready")
		b.ReportMetric(perKey, "heap-B/key")
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "revoke-p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "revoke-p99-ms")
		b.ReportMetric(rate, "verifications/s")
		b.Logf("%d keys: ready %v after start; live heap %d MB before, %d MB with them (%.0f B per key); "+
			"revoke → reject under %.0f verifications/s: p50 %v, p99 %v, max %v",
			n, ready.Round(time.Millisecond), idle>>20, heap>>20, perKey, rate, p(0.5), p(0.99), lat[len(lat)-1])
	}
}

// BenchmarkVerifierWithTheLargestAPIKeys proves that what a tenant writes into its APIKeys does not become
// every verifier replica's memory: for APIKeys at the largest size admission allows (testenv.LargestAPIKey:
// about 470 KiB each, 32 KiB of it scopes, which Verify needs) and for ordinary ones, it starts a verifier's
// cache and index as cmd/verifier builds them over a quarter of them (100 in all unless
// KEYWARD_BENCH_LARGEST_APIKEYS says otherwise), adds the rest, and reports the live heap each further
// APIKey adds (what grows once with the largest object seen, a watch's decode buffer, is left out).
// Run it once: go test ./pkg/verifier/serve -run '^$' -bench LargestAPIKeys -benchtime 1x
func BenchmarkVerifierWithTheLargestAPIKeys(b *testing.B) {
	testenv.Need(b)
	n := testenv.EnvInt("KEYWARD_BENCH_LARGEST_APIKEYS", 100)
	first := n / 4
	shapes := []struct {
		name string
		make func(ns, name string) *keywardv1alpha1.APIKey
	}{{"largest", testenv.LargestAPIKey}, {"ordinary", func(ns, name string) *keywardv1alpha1.APIKey {
		return &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	}}}
	for b.Loop() {
		for _, shape := range shapes {
			ns := env.Namespace(b)
			populateShapedKeys(b, ns, 0, first, shape.make)
			ix, stop := startBenchVerifier(b, ns)
			some := testenv.LiveHeap()
			keyOf := populateShapedKeys(b, ns, first, n, shape.make)
			for i := first; i < n; i++ {
				for ix.Verify(keyOf[i], nil, time.Now()).Code != verifier.CodeValid {
					time.Sleep(time.Millisecond) // a benchmark's poll of its own index, not a test's wait
				}
			}
			all := testenv.LiveHeap()
			stop()
			b.ReportMetric((float64(all)-float64(some))/float64(n-first), "heap-B/"+shape.name+"-APIKey")
		}
	}
}

// startBenchVerifier starts a verifier's cache and index over ns as cmd/verifier builds them (its own
// manager as the verifier's identity, serve.CacheOptions) and returns the index once it has every APIKey,
// with a function that stops it.
func startBenchVerifier(b *testing.B, ns string) (*verifier.Index, func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cacheOpts := serve.CacheOptions()
	cacheOpts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	mgr, err := ctrl.NewManager(testenv.ImpersonatingConfig(env.Config, testenv.VerifierUser), ctrl.Options{
		Scheme: testenv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: cacheOpts,
		Logger: zap.New(zap.WriteTo(io.Discard)), Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		b.Fatal(err)
	}
	ix := verifier.NewIndex()
	synced, err := serve.Watch(ctx, ix, mgr.GetCache())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	for !synced() {
		time.Sleep(time.Millisecond) // a benchmark's poll of its own readiness, not a test's wait
	}
	return ix, func() { cancel(); <-done }
}
