package serve

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
)

// redisServer is a real redis-server (Debian's package) on a free loopback port, without persistence.
type redisServer struct {
	cmd *exec.Cmd
	URL string
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: apt-get install redis-server (.ci/run installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &redisServer{cmd: cmd, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	t.Cleanup(r.kill)
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	eventually.Succeeds(t, "redis-server answers", func() error { return c.Ping(context.Background()).Err() })
	return r
}

func (r *redisServer) kill() {
	if r.cmd.Process != nil && r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

func limitedAPIKey(key string, requests int32) *keywardv1alpha1.APIKey {
	return apiKey("billing", "limited", key, time.Now().Add(time.Hour), nil, func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: requests, Period: "1h"}
	})
}

func TestTwoReplicasSharingRedisAllowExactlyTheDeclaredLimit(t *testing.T) {
	r := startRedis(t)
	key := mintKey(t, "kw")
	var replicas []*verifier.Index
	for range 2 {
		l, err := NewRedisLimiter(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ix := verifier.NewIndex()
		ix.UseSharedLimiter(l, false)
		ix.Upsert(limitedAPIKey(key, 10))
		replicas = append(replicas, ix)
	}
	allowed := 0
	for i := range 40 {
		res := replicas[i%2].Verify(key, nil, time.Now())
		switch res.Code {
		case verifier.CodeValid:
			allowed++
		case verifier.CodeRateLimited:
			if res.RateLimit == nil || res.RateLimit.RetryAfter <= 0 {
				t.Errorf("a refusal without Retry-After: %+v", res.RateLimit)
			}
		default:
			t.Fatalf("request %d: %s", i, res.Code)
		}
	}
	if allowed != 10 {
		t.Errorf("two replicas sharing Redis allowed %d of 40 requests; the APIKey declares 10 per hour", allowed)
	}
}

func TestWhenRedisDiesTheIndexFailsAsConfigured(t *testing.T) {
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("failOpen=%v", failOpen), func(t *testing.T) {
			r := startRedis(t)
			key := mintKey(t, "kw")
			l, err := NewRedisLimiter(r.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ix := verifier.NewIndex()
			ix.UseSharedLimiter(l, failOpen)
			ix.Upsert(limitedAPIKey(key, 100))
			if got := ix.Verify(key, nil, time.Now()).Code; got != verifier.CodeValid {
				t.Fatalf("with Redis up: %s", got)
			}
			// Every operation of a decision is bounded (a Redis that hangs cannot hold requests up); how long a
			// decision takes is for benchmarks, not for a test on a busy machine.
			o := l.client.Options()
			if o.DialTimeout != RedisTimeout || o.ReadTimeout != RedisTimeout || o.WriteTimeout != RedisTimeout || o.PoolTimeout != RedisTimeout {
				t.Errorf("Redis timeouts dial %v read %v write %v pool %v; want %v each", o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, RedisTimeout)
			}
			r.kill()
			got := ix.Verify(key, nil, time.Now())
			want := map[bool]verifier.Code{true: verifier.CodeValid, false: verifier.CodeRateLimited}[failOpen]
			if got.Code != want {
				t.Errorf("with Redis gone: %s, want %s", got.Code, want)
			}
			if ix.SharedLimiterErrors() == 0 {
				t.Error("the failure was not counted")
			}
		})
	}
}

func TestLocalBucketsDividedAmongPeersHoldTheDeclaredLimit(t *testing.T) {
	key := mintKey(t, "kw")
	peers := 2
	var replicas []*verifier.Index
	for range peers {
		ix := verifier.NewIndex()
		ix.SetPeers(func() int { return peers })
		ix.Upsert(limitedAPIKey(key, 10))
		replicas = append(replicas, ix)
	}
	allowed := 0
	for i := range 40 {
		if replicas[i%2].Verify(key, nil, t0).Code == verifier.CodeValid {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("%d replicas with local buckets allowed %d; the APIKey declares 10", peers, allowed)
	}
	// A third replica joins: each keeps its fraction of what it had, refilling at a third of the limit.
	peers = 3
	later := t0.Add(time.Hour) // a full period: every bucket is full again
	allowed = 0
	for i := range 60 {
		if replicas[i%2].Verify(key, nil, later).Code == verifier.CodeValid {
			allowed++
		}
	}
	if allowed > 7 { // two of three replicas: at most 2 × ceil(10/3)
		t.Errorf("after a third peer joined two replicas allowed %d; their share is 2 × 10/3", allowed)
	}
}

func TestReadyEndpointsCountsReplicasOnce(t *testing.T) {
	ep := func(uid string, ready *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{uid}, Conditions: discoveryv1.EndpointConditions{Ready: ready},
			TargetRef: &corev1.ObjectReference{UID: types.UID(uid)}}
	}
	slices := []discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep("a", ptr.To(true)), ep("b", ptr.To(false)), ep("c", nil)}},
		{Endpoints: []discoveryv1.Endpoint{ep("a", ptr.To(true))}}, // the same pod in a dual-stack slice
	}
	if got := ReadyEndpoints(slices); got != 2 {
		t.Errorf("ReadyEndpoints = %d, want 2 (a and c)", got)
	}
	if got := ReadyEndpoints(nil); got != 1 {
		t.Errorf("ReadyEndpoints(nil) = %d, want 1", got)
	}
}

// BenchmarkVerifyWithRedis is Verify of a valid, rate-limited key with the limit in Redis on loopback. It
// reports the p99 latency and the round trips to Redis per verification, counted by a client hook.
func BenchmarkVerifyWithRedis(b *testing.B) {
	r := startRedis(b)
	l, err := NewRedisLimiter(r.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	key := mintKey(b, "kw")
	ix := verifier.NewIndex()
	ix.UseSharedLimiter(l, false)
	ix.Upsert(limitedAPIKey(key, 1_000_000_000))
	ix.Verify(key, nil, time.Now()) // load the script once
	trips := &roundTrips{}
	l.client.AddHook(trips)
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if ix.Verify(key, nil, start).Code != verifier.CodeValid {
			b.Fatal("not valid")
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(trips.n.Load())/float64(len(lat)), "round-trips/op")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// roundTrips counts the commands and pipelines the client sends: one round trip each.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}
