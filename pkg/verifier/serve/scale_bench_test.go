package serve_test

import (
	"context"
	"crypto/rand"
	"fmt"
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
	b.Helper()
	cfg := testenv.ImpersonatingConfig(env.Config, testenv.ManagerUser)
	cfg.QPS = -1
	writer, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	out := make([]string, n)
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
				ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%06d", i), Namespace: ns}}
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
	for i := range n {
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
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		cacheOpts := serve.CacheOptions()
		cacheOpts.DefaultNamespaces = map[string]cache.Config{ns: {}}
		mgr, err := ctrl.NewManager(testenv.ImpersonatingConfig(env.Config, testenv.VerifierUser), ctrl.Options{
			Scheme: testenv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: cacheOpts,
			Logger:     zap.New(zap.WriteTo(b.Output())),
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
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
			time.Sleep(time.Millisecond)
		}
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
			if err := env.Client.Patch(ctx, ak, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"disabled":true}}`))); err != nil {
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
		cancel()
		<-done

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
