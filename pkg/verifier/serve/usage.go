package serve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// DefaultUsageFlushInterval is how often usage is written to status.usage.
const DefaultUsageFlushInterval = 60 * time.Second

// UsageReporter writes the index's usage counts to status.usage in batches: at most one patch per APIKey
// per interval, and only for APIKeys that were used. Patches carry the resourceVersion they were computed
// from, so several verifier replicas add up instead of overwriting each other; a patch that loses the race
// gives its counts back for the next flush.
type UsageReporter struct {
	Index    *verifier.Index
	Client   client.Client
	Interval time.Duration
	Log      logr.Logger
}

// Start flushes every interval until ctx ends, then flushes once more. It implements manager.Runnable.
func (u *UsageReporter) Start(ctx context.Context) error {
	interval := u.Interval
	if interval <= 0 {
		interval = DefaultUsageFlushInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			u.flushAndLog(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			u.flushAndLog(final)
			cancel()
			return nil
		}
	}
}

func (u *UsageReporter) flushAndLog(ctx context.Context) {
	if _, err := u.Flush(ctx); err != nil {
		u.Log.Info("Some usage could not be reported; it is kept for the next flush", "error", err.Error())
	}
}

// Flush reports the usage gathered since the last flush and returns how many APIKeys it patched.
func (u *UsageReporter) Flush(ctx context.Context) (int, error) {
	var errs []error
	patched := 0
	for _, use := range u.Index.DrainUsage() {
		if err := u.report(ctx, use); err != nil {
			u.Index.RestoreUsage(use)
			errs = append(errs, err)
			continue
		}
		patched++
	}
	return patched, errors.Join(errs...)
}

func (u *UsageReporter) report(ctx context.Context, use verifier.Usage) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := u.Client.Get(ctx, types.NamespacedName{Namespace: use.Namespace, Name: use.Name}, ak); err != nil {
		return fmt.Errorf("reading APIKey %s/%s: %w", use.Namespace, use.Name, err)
	}
	base := ak.DeepCopy()
	usage := keywardv1alpha1.UsageStatus{}
	if ak.Status.Usage != nil {
		usage = *ak.Status.Usage
	}
	usage.Requests += use.Requests
	if !use.LastUsed.IsZero() && (usage.LastUsedAt == nil || use.LastUsed.After(usage.LastUsedAt.Time)) {
		t := metav1.NewTime(use.LastUsed.Truncate(time.Second))
		usage.LastUsedAt = &t
	}
	usage.Keys = MergeKeyUsage(usage.Keys, use.Keys, ak.Status)
	ak.Status.Usage = &usage
	if err := u.Client.Status().Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching the usage of APIKey %s/%s: %w", use.Namespace, use.Name, err)
	}
	return nil
}

// MergeKeyUsage adds what a drain counted per key to what status.usage.keys says, for the keys status still
// accepts (the current one first, then the previous ones in status order): the list is bounded by them, and
// a key that stopped working stops being reported.
func MergeKeyUsage(reported []keywardv1alpha1.KeyUsage, drained []verifier.KeyUse, st keywardv1alpha1.APIKeyStatus) []keywardv1alpha1.KeyUsage {
	var accepted []string
	if st.KeyID != "" {
		accepted = append(accepted, st.KeyID)
	}
	for _, p := range st.PreviousKeys {
		accepted = append(accepted, p.KeyID)
	}
	var out []keywardv1alpha1.KeyUsage
	for _, id := range accepted {
		ku := keywardv1alpha1.KeyUsage{KeyID: id}
		for _, r := range reported {
			if r.KeyID == id {
				ku = *r.DeepCopy()
			}
		}
		for _, d := range drained {
			if d.KeyID != id {
				continue
			}
			ku.Valid += d.Valid
			ku.RateLimited += d.RateLimited
			for code, n := range d.Rejected {
				if ku.Rejected == nil {
					ku.Rejected = map[string]int64{}
				}
				ku.Rejected[string(code)] += n
			}
			if !d.LastUsed.IsZero() && (ku.LastUsedAt == nil || d.LastUsed.After(ku.LastUsedAt.Time)) {
				t := metav1.NewTime(d.LastUsed.Truncate(time.Second))
				ku.LastUsedAt = &t
			}
		}
		if ku.Valid+ku.RateLimited > 0 || len(ku.Rejected) > 0 {
			out = append(out, ku)
		}
	}
	return out
}
