package controllers

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestMetricsReportExpiryRenewalAndReadinessWithoutKeyMaterial(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	h.startManager(managerOptions{})
	h.create("orders", "validity: 30d")
	h.create("trial", expiresAt(24*time.Hour))
	h.waitReady("orders")
	h.waitReady("trial")
	h.key("orders")
	h.key("trial")

	reg := prometheus.NewPedanticRegistry()
	// In the manager the collector reads the cache; here it reads the test's namespace directly.
	reg.MustRegister(StatusCollector{Reader: namespaced{h}})
	expiry := float64(t0.Add(30 * 24 * time.Hour).Unix())
	renewal := float64(t0.Add(20 * 24 * time.Hour).Unix())
	want := strings.NewReplacer("NS", h.ns, "EXP", ftoa(expiry), "REN", ftoa(renewal), "TRIAL", ftoa(float64(t0.Add(24*time.Hour).Unix()))).Replace(`
# HELP keyward_apikey_expiration_timestamp_seconds When the current key of the APIKey expires, in seconds since the epoch.
# TYPE keyward_apikey_expiration_timestamp_seconds gauge
keyward_apikey_expiration_timestamp_seconds{name="orders",namespace="NS"} EXP
keyward_apikey_expiration_timestamp_seconds{name="trial",namespace="NS"} TRIAL
# HELP keyward_apikey_renewal_timestamp_seconds When Keyward will mint the APIKey's next key, in seconds since the epoch (absent when never).
# TYPE keyward_apikey_renewal_timestamp_seconds gauge
keyward_apikey_renewal_timestamp_seconds{name="orders",namespace="NS"} REN
# HELP keyward_apikey_ready_status The APIKey's Ready condition: 1 for the series whose condition label matches its status.
# TYPE keyward_apikey_ready_status gauge
keyward_apikey_ready_status{condition="False",name="orders",namespace="NS"} 0
keyward_apikey_ready_status{condition="False",name="trial",namespace="NS"} 0
keyward_apikey_ready_status{condition="True",name="orders",namespace="NS"} 1
keyward_apikey_ready_status{condition="True",name="trial",namespace="NS"} 1
keyward_apikey_ready_status{condition="Unknown",name="orders",namespace="NS"} 0
keyward_apikey_ready_status{condition="Unknown",name="trial",namespace="NS"} 0
`)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	before := testutil.ToFloat64(rotationsTotal.WithLabelValues("Manual"))
	h.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "now"}
	})
	rotated := h.waitFor("orders", "revision 2", revisionIs(2))
	// The counter moves after the status write; once the controller has reconciled its own write, the
	// reconcile that rotated has finished.
	h.waitReconciledAt("orders", rotated.ResourceVersion)
	h.key("orders")
	if got := testutil.ToFloat64(rotationsTotal.WithLabelValues("Manual")); got != before+1 {
		t.Errorf("keyward_apikey_rotations_total{reason=Manual} = %v, want %v", got, before+1)
	}
}

// namespaced lists only the test's namespace, as the manager's cache would in a cluster with one tenant.
type namespaced struct{ h *harness }

func (n namespaced) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return env.Client.Get(ctx, key, obj, opts...)
}

func (n namespaced) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return env.Client.List(ctx, list, append(opts, client.InNamespace(n.h.ns))...)
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// failingLister is a cache that cannot list.
type failingLister struct{ client.Reader }

func (failingLister) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("simulated: the cache cannot list APIKeys")
}

func TestAScrapeFailsVisiblyWhenAPIKeysCannotBeListed(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(StatusCollector{Reader: failingLister{}})
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "cannot list APIKeys") {
		t.Errorf("Gather = %v; an unlistable cache must fail the scrape, not report no APIKeys", err)
	}
}
