package verifier

import (
	"context"
	"sync"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/period"
)

// RateLimitState is the rate limit bucket after a verification.
type RateLimitState struct {
	Allowed bool
	// Limit is the number of requests per period.
	Limit int
	// Remaining is how many more requests the bucket holds now.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until the next request would be allowed (zero when allowed).
	RetryAfter time.Duration
}

// SharedLimiter enforces rate limits in a store that every verifier replica shares.
type SharedLimiter interface {
	// Take spends one of limit requests per period for the APIKey named id ("namespace/name").
	Take(ctx context.Context, id string, limit int, period time.Duration) (RateLimitState, error)
}

// tokenBucket refills continuously at limit/period up to limit tokens, divided among peers replicas: each
// holds limit/peers tokens (at least one) and refills at limit/peers per period.
type tokenBucket struct {
	mu sync.Mutex
	// closed is set for a limit that could not be read: it allows nothing (a limit that cannot be read must
	// not turn rate limiting off).
	closed bool
	limit  int
	period time.Duration
	peers  int
	tokens float64
	last   time.Time
}

func newTokenBucket(rl *keywardv1alpha1.RateLimit) *tokenBucket {
	if rl == nil || rl.Requests <= 0 {
		return nil
	}
	p, err := period.Parse(string(rl.Period))
	if err != nil || p.Approx() <= 0 {
		return &tokenBucket{closed: true, limit: int(rl.Requests), period: time.Minute, peers: 1}
	}
	return &tokenBucket{limit: int(rl.Requests), period: p.Approx(), peers: 1, tokens: float64(rl.Requests)}
}

func (b *tokenBucket) take(now time.Time, peers int) RateLimitState {
	if b.closed {
		return RateLimitState{Limit: b.limit, RetryAfter: b.period}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if peers != b.peers {
		// The share changed: keep the same fraction of the bucket.
		b.tokens = b.tokens * float64(b.peers) / float64(peers)
		b.peers = peers
	}
	share := float64(b.limit) / float64(peers)
	capacity := max(share, 1)
	perNano := share / float64(b.period)
	if !b.last.IsZero() {
		if elapsed := now.Sub(b.last); elapsed > 0 {
			b.tokens = min(capacity, b.tokens+float64(elapsed)*perNano)
		}
	}
	b.tokens = min(b.tokens, capacity)
	if now.After(b.last) {
		b.last = now
	}
	s := RateLimitState{Limit: b.limit}
	if b.tokens >= 1 {
		b.tokens--
		s.Allowed = true
	} else {
		s.RetryAfter = time.Duration((1 - b.tokens) / perNano)
	}
	s.Remaining = int(b.tokens)
	s.Reset = time.Duration((capacity - b.tokens) / perNano)
	return s
}

// take spends one request of e's rate limit: in the shared store when there is one, else in e's bucket.
func (ix *Index) take(ctx context.Context, e *entry, local *tokenBucket, limit keywardv1alpha1.RateLimit, now time.Time) RateLimitState {
	if ix.shared == nil {
		peers := 1
		if ix.peers != nil {
			peers = max(ix.peers(), 1)
		}
		return local.take(now, peers)
	}
	if local.closed {
		return local.take(now, 1)
	}
	state, err := ix.shared.Take(ctx, e.namespace+"/"+e.name, int(limit.Requests), local.period)
	if err != nil {
		ix.sharedErrors.Add(1)
		return RateLimitState{Allowed: ix.sharedFailOpen, Limit: int(limit.Requests), RetryAfter: time.Second}
	}
	return state
}
