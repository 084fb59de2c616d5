package controllers

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/policy"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// creators is how many clients create the APIKeys of a benchmark at once, as a GitOps apply of many
// objects would.
const creators = 8

// createAPIKeys creates n APIKeys named key-00000... in ns with creators clients at once, calling created
// (when not nil) with each as the API server returned it.
func createAPIKeys(b *testing.B, ns string, n int, created func(*keywardv1alpha1.APIKey)) {
	createShapedAPIKeys(b, ns, 0, n, func(ns, name string) *keywardv1alpha1.APIKey {
		return &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	}, created)
}

// createShapedAPIKeys is createAPIKeys of the APIKeys numbered from to to (excluded), each made by shape.
func createShapedAPIKeys(b *testing.B, ns string, from, to int, shape func(ns, name string) *keywardv1alpha1.APIKey, created func(*keywardv1alpha1.APIKey)) {
	b.Helper()
	var wg sync.WaitGroup
	names := make(chan int)
	for range creators {
		wg.Go(func() {
			for i := range names {
				ak := shape(ns, fmt.Sprintf("key-%05d", i))
				if err := env.Client.Create(context.Background(), ak); err != nil {
					b.Errorf("creating APIKey %d: %v", i, err)
					continue
				}
				if created != nil {
					created(ak)
				}
			}
		})
	}
	for i := from; i < to; i++ {
		names <- i
	}
	close(names)
	wg.Wait()
}

// readyWatch counts, from a watch of the namespace's APIKeys, how many are Ready. It keeps names only, so it
// adds little to the process's heap, and costs the API server one watch instead of repeated lists.
type readyWatch struct {
	w     watch.Interface
	ready chan struct{}
}

// watchUntilReady starts watching ns; ready closes once n APIKeys have been seen Ready.
func watchUntilReady(b *testing.B, ns string, n int) *readyWatch {
	b.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &keywardv1alpha1.APIKeyList{}, client.InNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	rw := &readyWatch{w: w, ready: make(chan struct{})}
	go func() {
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			ak, ok := ev.Object.(*keywardv1alpha1.APIKey)
			if !ok || seen[ak.Name] || !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
				continue
			}
			if seen[ak.Name] = true; len(seen) == n {
				close(rw.ready)
				return
			}
		}
	}()
	return rw
}

// wait waits until every APIKey was Ready, failing the benchmark after limit.
func (rw *readyWatch) wait(b *testing.B, limit time.Duration) {
	b.Helper()
	defer rw.w.Stop()
	select {
	case <-rw.ready:
	case <-time.After(limit):
		b.Fatalf("not every APIKey was Ready after %v", limit)
	}
}

// BenchmarkManagerAtScale creates APIKeys (10,000 unless KEYWARD_BENCH_SCALE_APIKEYS says otherwise) against the
// real control plane for a manager with the production settings (both controllers, the real clock), waits
// until every one is Ready, and reports the manager's live heap per APIKey above its idle heap, the seconds
// until all were Ready, and the manager's API requests (reads and watches included) and writes per APIKey.
// The manager runs in the benchmark's process; the live heap after a collection is what its caches, index
// and queues keep. Run it once: go test ./controllers -run '^$' -bench ManagerAtScale -benchtime 1x
func BenchmarkManagerAtScale(b *testing.B) {
	testenv.Need(b)
	n := testenv.EnvInt("KEYWARD_BENCH_SCALE_APIKEYS", 10000)
	for range b.N {
		h := newHarness(b)
		h.writes.countOnly.Store(true)
		h.startManager(managerOptions{production: true})
		idle, idleResident := testenv.LiveHeap(), testenv.ResidentHighWater()
		requests := h.writes.requests.Load()

		start := time.Now()
		rw := watchUntilReady(b, h.ns, n)
		createAPIKeys(b, h.ns, n, nil)
		rw.wait(b, 30*time.Minute)
		toReady := time.Since(start)
		requests = h.writes.requests.Load() - requests
		writes := h.writes.snapshot()
		busy, busyResident := testenv.LiveHeap(), testenv.ResidentHighWater()

		perKey := (float64(busy) - float64(idle)) / float64(n)
		b.ReportMetric(perKey, "heap-B/APIKey")
		// The benchmark's own clients (the creators, the Ready watch) share the process, so this is an upper
		// bound on what the manager's container would see.
		b.ReportMetric((float64(busyResident)-float64(idleResident))/float64(n), "resident-hwm-B/APIKey")
		b.ReportMetric(toReady.Seconds(), "s-until-all-ready")
		b.ReportMetric(float64(requests)/float64(n), "requests/APIKey")
		b.ReportMetric(float64(writes["secrets"]+writes["apikeys/status"])/float64(n), "writes/APIKey")
		b.Logf("%d APIKeys Ready in %v; live heap %d MB idle, %d MB with them (%.0f B per APIKey, %.0f MB at 100,000); writes %v",
			n, toReady.Round(time.Millisecond), idle>>20, busy>>20, perKey, perKey*100000/(1<<20), writes)
		h.stopManager()
	}
}

// BenchmarkManagerWithTheLargestAPIKeys proves that what a tenant writes into its APIKeys does not become
// the shared manager's memory: for APIKeys at the largest size admission allows (testenv.LargestAPIKey,
// about 470 KiB each) and for ordinary ones, each with a production manager of its own, it creates a
// quarter of them (100 in all unless KEYWARD_BENCH_LARGEST_APIKEYS says otherwise), then the rest, and
// reports the live heap each further APIKey adds. Measured between the two, the figure leaves out what
// grows once with the largest object seen rather than with their number (each watch connection's decode
// buffer); with-buffers-B/APIKey includes it, from the idle manager on.
// Run it once: go test ./controllers -run '^$' -bench LargestAPIKeys -benchtime 1x
func BenchmarkManagerWithTheLargestAPIKeys(b *testing.B) {
	testenv.Need(b)
	n := testenv.EnvInt("KEYWARD_BENCH_LARGEST_APIKEYS", 100)
	first := n / 4
	ordinary := func(ns, name string) *keywardv1alpha1.APIKey {
		return &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	}
	for range b.N {
		for _, shape := range []struct {
			name string
			make func(ns, name string) *keywardv1alpha1.APIKey
		}{{"largest", testenv.LargestAPIKey}, {"ordinary", ordinary}} {
			h := newHarness(b)
			h.writes.countOnly.Store(true)
			h.startManager(managerOptions{production: true})
			idle := testenv.LiveHeap()
			rw := watchUntilReady(b, h.ns, first)
			createShapedAPIKeys(b, h.ns, 0, first, shape.make, nil)
			rw.wait(b, 30*time.Minute)
			some := testenv.LiveHeap()
			rw = watchUntilReady(b, h.ns, n)
			createShapedAPIKeys(b, h.ns, first, n, shape.make, nil)
			rw.wait(b, 30*time.Minute)
			all := testenv.LiveHeap()
			b.ReportMetric((float64(all)-float64(some))/float64(n-first), "heap-B/"+shape.name+"-APIKey")
			b.ReportMetric((float64(all)-float64(idle))/float64(n), "with-buffers-B/"+shape.name+"-APIKey")
			h.stopManager()
		}
	}
}

// BenchmarkThousandAPIKeys measures, side by side, how long 1,000 APIKeys (KEYWARD_BENCH_APIKEYS) take until
// every one is Ready under the manager, and the API server's floor for the same writes: a plain client with
// the manager's identity and concurrency that, as each APIKey is created, creates its Secret, patches its
// status and creates an event. It reports both times and their ratio, the manager's writes per APIKey and
// its writes while idle afterwards (KEYWARD_BENCH_IDLE_SECONDS, 60 by default).
// Run it once: go test ./controllers -run '^$' -bench ThousandAPIKeys -benchtime 1x
func BenchmarkThousandAPIKeys(b *testing.B) {
	testenv.Need(b)
	n := testenv.EnvInt("KEYWARD_BENCH_APIKEYS", 1000)
	idle := time.Duration(testenv.EnvInt("KEYWARD_BENCH_IDLE_SECONDS", 60)) * time.Second
	for range b.N {
		floor := floorFor(b, n)

		h := newHarness(b)
		h.writes.countOnly.Store(true)
		h.startManager(managerOptions{production: true})
		start := time.Now()
		rw := watchUntilReady(b, h.ns, n)
		createAPIKeys(b, h.ns, n, nil)
		rw.wait(b, 10*time.Minute)
		toReady := time.Since(start)
		time.Sleep(time.Second) // let trailing event writes land before counting
		afterCreate := h.writes.snapshot()

		time.Sleep(idle)
		afterIdle := h.writes.snapshot()
		idleWrites := 0
		for k, v := range afterIdle {
			idleWrites += v - afterCreate[k]
		}

		b.ReportMetric(toReady.Seconds(), "s-until-all-ready")
		b.ReportMetric(floor.Seconds(), "s-floor")
		b.ReportMetric(toReady.Seconds()/floor.Seconds(), "x-floor")
		b.ReportMetric(float64(afterCreate["secrets"]+afterCreate["apikeys/status"])/float64(n), "writes/key")
		b.ReportMetric(float64(afterCreate["events"])/float64(n), "event-writes/key")
		b.ReportMetric(float64(idleWrites), "writes-while-idle")
		b.Logf("%d APIKeys Ready in %v, %.2f x the floor of %v; writes %v; %d writes in %v idle",
			n, toReady.Round(time.Millisecond), toReady.Seconds()/floor.Seconds(), floor.Round(time.Millisecond), afterCreate, idleWrites, idle)
		h.stopManager()
	}
}

// floorFor is the time the API server needs for what the manager does for n new APIKeys, issued by a plain
// client: as the APIKeys are created (by the same creators as the manager's run), DefaultMaxConcurrentReconciles
// workers with the manager's identity create each one's Secret (a key and a signed record), patch its status
// Ready and create its KeyCreated event. No cache, no watch, no reconcile: the least those writes cost.
func floorFor(b *testing.B, n int) time.Duration {
	b.Helper()
	ns := env.Namespace(b)
	cfg := testenv.ImpersonatingConfig(env.Config, testenv.ManagerUser)
	cfg.QPS = -1
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	signer, err := keyrecord.NewSigner([]byte("the floor benchmark's record signing key, long enough"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	work := make(chan *keywardv1alpha1.APIKey, n)
	var wg sync.WaitGroup
	start := time.Now()
	for range DefaultMaxConcurrentReconciles {
		wg.Go(func() {
			for ak := range work {
				if err := floorWrites(ctx, c, signer, ak); err != nil {
					b.Error(err)
				}
			}
		})
	}
	createAPIKeys(b, ns, n, func(ak *keywardv1alpha1.APIKey) { work <- ak })
	close(work)
	wg.Wait()
	return time.Since(start)
}

// floorWrites makes the three writes of a new APIKey's first reconcile.
func floorWrites(ctx context.Context, c client.Client, signer *keyrecord.Signer, ak *keywardv1alpha1.APIKey) error {
	key, err := keys.Generate("kw", rand.Reader) // the default prefix
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	sub := SubjectOf(ak)
	rec := keyrecord.Record{Hash: keys.Hash(key), Revision: 1, IssuedAt: now, Reason: keywardv1alpha1.RotationInitial}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: sub.Secret}}
	keyrecord.WriteSecret(s, keyrecord.Contents{APIKeyName: ak.Name, Key: key, Record: rec}, signer, sub)
	if err := controllerutil.SetControllerReference(ak, s, c.Scheme()); err != nil {
		return err
	}
	if err := c.Create(ctx, s); err != nil {
		return fmt.Errorf("creating Secret %s: %w", s.Name, err)
	}
	before := ak.DeepCopy()
	keyrecord.WriteStatus(&ak.Status, rec, keys.Hint(key), time.Time{}, now, signer, sub)
	health := &policy.Health{Ready: true, Reason: keywardv1alpha1.ReasonKeyReady}
	meta.SetStatusCondition(&ak.Status.Conditions, metav1.Condition{Type: keywardv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: string(health.Reason), Message: health.Message(ak.Status.KeyID), ObservedGeneration: ak.Generation, LastTransitionTime: metav1.NewTime(now)})
	ak.Status.ObservedGeneration = ak.Generation
	if err := c.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("patching the status of %s: %w", ak.Name, err)
	}
	ev := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: MintEventName(ak, rec.Revision, signer)},
		EventTime: metav1.NewMicroTime(now), ReportingController: "keyward", ReportingInstance: "floor",
		Action: "Mint", Reason: string(keywardv1alpha1.EventKeyCreated), Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{Kind: "APIKey", APIVersion: keywardv1alpha1.GroupVersion.String(), Namespace: ak.Namespace,
			Name: ak.Name, UID: ak.UID}, Note: "Minted key " + ak.Status.KeyID}
	if err := c.Create(ctx, ev); err != nil {
		return fmt.Errorf("creating the event of %s: %w", ak.Name, err)
	}
	return nil
}
