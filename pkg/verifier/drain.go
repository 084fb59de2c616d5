package verifier

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Usage is what one APIKey's keys were used for since the last drain.
type Usage struct {
	Namespace, Name string
	Requests        int64
	LastUsed        time.Time
}

// DrainUsage returns and resets the usage of every APIKey that was used since the last drain.
func (ix *Index) DrainUsage() []Usage {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []Usage
	for _, e := range ix.byName {
		if n := e.requests.Swap(0); n > 0 {
			out = append(out, Usage{Namespace: e.namespace, Name: e.name, Requests: n, LastUsed: time.Unix(0, e.lastUsed.Load()).UTC()})
		}
	}
	return out
}

// RestoreUsage gives back usage that could not be reported, so the next flush reports it.
func (ix *Index) RestoreUsage(u Usage) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if e := ix.byName[types.NamespacedName{Namespace: u.Namespace, Name: u.Name}]; e != nil {
		e.requests.Add(u.Requests)
	}
}
