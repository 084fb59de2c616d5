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

// DrainUsage returns and resets the usage of every APIKey whose keys were used since the last drain:
// accepted, or refused once known (disabled, expired, the route's requirements, the rate limit).
func (ix *Index) DrainUsage() []Usage {
	ix.mu.Lock() // retired counts are dropped once drained
	defer ix.mu.Unlock()
	var out []Usage
	for _, e := range ix.byName {
		u := Usage{Namespace: e.namespace, Name: e.name}
		for _, kus := range [][]*keyUse{e.uses, e.retired} {
			for _, ku := range kus {
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
		if u.Requests > 0 || len(u.Keys) > 0 {
			out = append(out, u)
		}
	}
	return out
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
