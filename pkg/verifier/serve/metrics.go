package serve

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"

	"github.com/keyward-dev/keyward/pkg/verifier"
)

// Interfaces through which a verification arrives, the "interface" label of the metrics.
const (
	InterfaceForwardAuth = "forward_auth"
	InterfaceJSON        = "json"
	InterfaceExtAuthz    = "ext_authz"
)

// Metrics counts verifications by code and interface. Labels never hold key material or key IDs.
type Metrics struct {
	vec *prometheus.CounterVec
	// counters are resolved once so the hot path does no label lookup.
	counters map[string]map[verifier.Code]prometheus.Counter
	// perAPIKey is set by CountPerAPIKey.
	perAPIKey *prometheus.CounterVec
}

// NewMetrics creates the counters and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_verifier_verifications_total",
			Help: "Verifications of presented keys, by result code and by interface (forward_auth, json, ext_authz).",
		}, []string{"interface", "code"}),
		counters: map[string]map[verifier.Code]prometheus.Counter{},
	}
	for _, iface := range []string{InterfaceForwardAuth, InterfaceJSON, InterfaceExtAuthz} {
		m.counters[iface] = map[verifier.Code]prometheus.Counter{}
		for _, c := range append(verifier.Codes, CodeMissing) {
			m.counters[iface][c] = m.vec.WithLabelValues(iface, string(c))
		}
	}
	if reg != nil {
		reg.MustRegister(m.vec)
	}
	return m
}

func (m *Metrics) observe(iface string, c verifier.Code) {
	if m != nil {
		m.counters[iface][c].Inc()
	}
}

// CountPerAPIKey adds keyward_verifier_apikey_verifications_total{namespace, name, code}, registered with
// reg: the verifications of each APIKey's keys, once the key is known to belong to it. It is a series per
// APIKey and code, so it is off unless --per-apikey-metrics asks for it; ForgetDeletedAPIKeys removes the
// series of a deleted APIKey. Labels never hold key material or key IDs.
func (m *Metrics) CountPerAPIKey(reg prometheus.Registerer) {
	m.perAPIKey = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_verifier_apikey_verifications_total",
		Help: "Verifications of each APIKey's keys by result code (only with --per-apikey-metrics: a series per APIKey and code).",
	}, []string{"namespace", "name", "code"})
	if reg != nil {
		reg.MustRegister(m.perAPIKey)
	}
}

// observeResult counts res per APIKey, when that is on and the key belongs to one.
func (m *Metrics) observeResult(res verifier.Result) {
	if m != nil && m.perAPIKey != nil && res.Name != "" {
		m.perAPIKey.WithLabelValues(res.Namespace, res.Name, string(res.Code)).Inc()
	}
}

// ForgetDeletedAPIKeys removes the per-APIKey series of each APIKey the informer sees deleted, so that
// APIKeys that come and go do not grow the verifier's metrics without end. A verification already under
// way when its APIKey is deleted can bring a series back; the index no longer knows the key, so nothing
// after it can.
func (m *Metrics) ForgetDeletedAPIKeys(ctx context.Context, informers cache.Informers) error {
	inf, err := informers.GetInformer(ctx, &keywardv1alpha1.APIKey{})
	if err != nil {
		return fmt.Errorf("getting the APIKey informer: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: m.apiKeyDeleted}); err != nil {
		return fmt.Errorf("watching APIKey deletions: %w", err)
	}
	return nil
}

// apiKeyDeleted drops the series of a deleted APIKey (or its tombstone).
func (m *Metrics) apiKeyDeleted(obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if ak, ok := obj.(*keywardv1alpha1.APIKey); ok && m.perAPIKey != nil {
		m.perAPIKey.DeletePartialMatch(prometheus.Labels{"namespace": ak.Namespace, "name": ak.Name})
	}
}
