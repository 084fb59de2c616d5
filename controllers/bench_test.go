package controllers

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkThousandAPIKeys creates APIKeys (1,000 unless KEYWARD_BENCH_APIKEYS says otherwise) against the
// real control plane with the production controller settings, then stays idle (60 s unless
// KEYWARD_BENCH_IDLE_SECONDS says otherwise). It reports the seconds until every APIKey is Ready, the
// manager's write requests per new key (Secret and status; events separately) and its writes while idle.
// Run it once: go test ./controllers -run '^$' -bench ThousandAPIKeys -benchtime 1x
func BenchmarkThousandAPIKeys(b *testing.B) {
	testenv.Need(b)
	n := envInt("KEYWARD_BENCH_APIKEYS", 1000)
	idle := time.Duration(envInt("KEYWARD_BENCH_IDLE_SECONDS", 60)) * time.Second
	for range b.N {
		h := newHarness(b)
		h.startManager(managerOptions{production: true})
		ctx := context.Background()

		start := time.Now()
		var wg sync.WaitGroup
		names := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range names {
					ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%04d", i), Namespace: h.ns}}
					if err := env.Client.Create(ctx, ak); err != nil {
						b.Errorf("creating APIKey %d: %v", i, err)
					}
				}
			})
		}
		for i := range n {
			names <- i
		}
		close(names)
		wg.Wait()
		for {
			var list keywardv1alpha1.APIKeyList
			if err := env.Client.List(ctx, &list, client.InNamespace(h.ns)); err != nil {
				b.Fatal(err)
			}
			ready := 0
			for _, ak := range list.Items {
				if meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
					ready++
				}
			}
			if ready == n {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("only %d of %d APIKeys Ready after 10 minutes", ready, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
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
		b.ReportMetric(float64(afterCreate["secrets"]+afterCreate["apikeys/status"])/float64(n), "writes/key")
		b.ReportMetric(float64(afterCreate["events"])/float64(n), "event-writes/key")
		b.ReportMetric(float64(idleWrites), "writes-while-idle")
		b.Logf("%d APIKeys Ready in %v; writes %v; %d writes in %v idle", n, toReady.Round(time.Millisecond), afterCreate, idleWrites, idle)
		h.stopManager()
	}
}
