package serve

import (
	"net/http"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// APIServerContact follows whether the verifier reaches the API server, from the fate of its own requests:
// any answer, whatever its status, means reachable; a request that got none (refused, reset, timed out)
// means not. While it is not, the verifier keeps answering from its index as it last saw it, so a key
// revoked meanwhile is still accepted: the gauge is what says so.
type APIServerContact struct {
	// Log, when set, says when contact is lost and when it is back.
	Log         logr.Logger
	unreachable atomic.Bool
}

// Wrap is a rest.Config's WrapTransport: it notes the outcome of every request.
func (c *APIServerContact) Wrap(rt http.RoundTripper) http.RoundTripper {
	return contactTransport{rt: rt, c: c}
}

// Reachable reports whether the last request that ended got an answer (true before any did).
func (c *APIServerContact) Reachable() bool { return !c.unreachable.Load() }

// Gauge is keyward_verifier_api_server_reachable, read at scrape time.
func (c *APIServerContact) Gauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_verifier_api_server_reachable",
		Help: "1 while the verifier reaches the API server; 0 while it answers from its index as last seen, " +
			"in which changes made since (a revocation too) are not applied.",
	}, func() float64 {
		if c.Reachable() {
			return 1
		}
		return 0
	})
}

func (c *APIServerContact) note(reached bool) {
	if was := c.unreachable.Swap(!reached); was == !reached || c.Log.GetSink() == nil {
		return
	}
	if reached {
		c.Log.Info("The API server is reachable again; the index catches up through its watch")
	} else {
		c.Log.Info("The API server is unreachable; answering from the index as last seen until it is back")
	}
}

type contactTransport struct {
	rt http.RoundTripper
	c  *APIServerContact
}

func (t contactTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	switch {
	case err == nil:
		t.c.note(true)
	case req.Context().Err() == nil: // a request its caller gave up on says nothing about the API server
		t.c.note(false)
	}
	return resp, err
}
