package verifier

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Usage is what one APIKey's keys were used for since the last drain.
type Usage struct {
	Namespace, Name string
	// Requests counts the valid verifications of any of its keys, LastUsed the last of them.
	Requests int64
	LastUsed time.Time
	// Keys is what the verifier answered for each of its keys.
	Keys []KeyUse
}

// KeyUse is what the verifier answered for one key since the last drain.
type KeyUse struct {
	KeyID string
	// Valid counts acceptances (the last at LastUsed), RateLimited refusals for the rate limit, Rejected the
	// other refusals by code.
	Valid, RateLimited int64
	Rejected           map[Code]int64
	LastUsed           time.Time
}

// drainBatch is how many APIKeys a drain visits per hold of the index's lock. Verify waits at most for one
// batch: a drain of 20,000 APIKeys with eleven keys each holds the lock some eighty times for tens of
// microseconds each, where one hold for the whole index stopped every verification for 100 ms.
const drainBatch = 256

// DrainUsage returns and resets the usage of every APIKey whose keys were used since the last drain:
// accepted, or refused once known (disabled, expired, the route's requirements, the rate limit). It
// visits the APIKeys in batches, releasing the index's lock between them, so verification goes on during a
// drain. Counts are atomic, so a use counted while a drain runs is reported by this drain or the next.
func (ix *Index) DrainUsage() []Usage {
	ix.mu.RLock()
	entries := make([]*entry, 0, len(ix.byName))
	for _, e := range ix.byName {
		entries = append(entries, e)
	}
	ix.mu.RUnlock()
	var out []Usage
	for start := 0; start < len(entries); start += drainBatch {
		ix.mu.Lock() // retired counts are dropped once drained
		for _, e := range entries[start:min(start+drainBatch, len(entries))] {
			if u, used := e.drainLocked(); used {
				out = append(out, u)
			}
		}
		ix.mu.Unlock()
		if ix.betweenDrainBatches != nil {
			ix.betweenDrainBatches()
		}
	}
	return out
}

// drainLocked returns and resets the usage of e's keys; used is false when none was used. ix.mu is held.
func (e *entry) drainLocked() (u Usage, used bool) {
	u = Usage{Namespace: e.namespace, Name: e.name}
	for _, kus := range [][]*keyUse{e.uses, e.retired} {
		for _, ku := range kus {
			if !ku.counted() {
				continue // most keys of a large index are idle: no allocation, no swaps
			}
			if d := ku.drain(); d.Valid+d.RateLimited > 0 || len(d.Rejected) > 0 {
				u.Keys = append(u.Keys, d)
				u.Requests += d.Valid
				if d.LastUsed.After(u.LastUsed) {
					u.LastUsed = d.LastUsed
				}
			}
		}
	}
	e.retired = nil
	return u, u.Requests > 0 || len(u.Keys) > 0
}

// counted reports whether any count of u is above zero.
func (u *keyUse) counted() bool {
	if u.valid.Load() != 0 || u.rateLimited.Load() != 0 {
		return true
	}
	for i := range u.rejected {
		if u.rejected[i].Load() != 0 {
			return true
		}
	}
	return false
}

// drain returns and resets the counts.
func (u *keyUse) drain() KeyUse {
	d := KeyUse{KeyID: u.digest.ID(), Valid: u.valid.Swap(0), RateLimited: u.rateLimited.Swap(0)}
	if d.Valid > 0 {
		d.LastUsed = time.Unix(0, u.lastUsed.Load()).UTC()
	}
	for i := range u.rejected {
		if n := u.rejected[i].Swap(0); n > 0 {
			if d.Rejected == nil {
				d.Rejected = map[Code]int64{}
			}
			d.Rejected[rejectionCodes[i]] = n
		}
	}
	return d
}

// RestoreUsage gives back usage that could not be reported, so the next flush reports it. Counts of a key
// the APIKey no longer has are dropped with it (the APIKey's requests are the keys' sums).
func (ix *Index) RestoreUsage(u Usage) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e := ix.byName[types.NamespacedName{Namespace: u.Namespace, Name: u.Name}]
	if e == nil {
		return
	}
	for _, k := range u.Keys {
		for _, ku := range e.uses {
			if ku.digest.ID() != k.KeyID {
				continue
			}
			ku.valid.Add(k.Valid)
			ku.rateLimited.Add(k.RateLimited)
			for i, c := range rejectionCodes {
				ku.rejected[i].Add(k.Rejected[c])
			}
			if !k.LastUsed.IsZero() && k.LastUsed.UnixNano() > ku.lastUsed.Load() {
				ku.lastUsed.Store(k.LastUsed.UnixNano())
			}
		}
	}
}
