package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// RedisLimiter enforces rate limits in Redis with GCRA (github.com/go-redis/redis_rate), so that every
// verifier replica spends from one budget per APIKey. A decision is one round trip (EVALSHA; EVAL once more
// after Redis lost its scripts). Timeouts are short: a slow Redis must not hold requests up, and the index
// then fails open or closed as configured.
type RedisLimiter struct {
	client  *redis.Client
	limiter *redis_rate.Limiter
}

// RedisTimeout bounds every Redis operation of a rate-limit decision.
const RedisTimeout = 250 * time.Millisecond

// NewRedisLimiter connects to the Redis at url (redis://host:port/db, or rediss:// for TLS).
func NewRedisLimiter(url string) (*RedisLimiter, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("--rate-limit-redis: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = RedisTimeout, RedisTimeout, RedisTimeout, RedisTimeout
	opts.MaxRetries = 1
	client := redis.NewClient(opts)
	return &RedisLimiter{client: client, limiter: redis_rate.NewLimiter(client)}, nil
}

// Take spends one of limit requests per period for the APIKey id.
func (l *RedisLimiter) Take(ctx context.Context, id string, limit int, period time.Duration) (verifier.RateLimitState, error) {
	res, err := l.limiter.Allow(ctx, "keyward:"+id, redis_rate.Limit{Rate: limit, Burst: limit, Period: period})
	if err != nil {
		return verifier.RateLimitState{}, fmt.Errorf("rate limit of %s in Redis: %w", id, err)
	}
	return verifier.RateLimitState{Allowed: res.Allowed > 0, Limit: limit, Remaining: res.Remaining,
		Reset: max(res.ResetAfter, 0), RetryAfter: max(res.RetryAfter, 0)}, nil
}

// Ping checks that Redis answers.
func (l *RedisLimiter) Ping(ctx context.Context) error { return l.client.Ping(ctx).Err() }

// Close closes the connections.
func (l *RedisLimiter) Close() error { return l.client.Close() }

// ReadyEndpoints counts the ready endpoints in a Service's EndpointSlices: the number of verifier replicas
// that share the traffic, by which each replica divides its local rate-limit buckets. An endpoint whose
// readiness is unknown counts as ready, as kube-proxy treats it; never less than 1.
func ReadyEndpoints(slices []discoveryv1.EndpointSlice) int {
	seen := map[string]bool{}
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			id := fmt.Sprint(e.Addresses)
			if e.TargetRef != nil {
				id = string(e.TargetRef.UID)
			}
			seen[id] = true
		}
	}
	return max(len(seen), 1)
}
