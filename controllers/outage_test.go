package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

// outageVerifier is a verifier (its index, fed by its own manager as the verifier's identity) that reaches
// the API server through the outage proxy.
type outageVerifier struct {
	index   *verifier.Index
	contact *serve.APIServerContact
}

func startVerifierVia(t *testing.T, h *harness, outage *testenv.Outage) *outageVerifier {
	t.Helper()
	v := &outageVerifier{index: verifier.NewIndex(), contact: &serve.APIServerContact{}}
	cfg := outage.Config(testenv.ImpersonatingConfig(env.Config, testenv.VerifierUser))
	cfg.Wrap(v.contact.Wrap)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testenv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{h.ns: {}}, DefaultTransform: cache.TransformStripManagedFields()},
		Logger:     zap.New(zap.WriteTo(h.logs)),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	synced, err := serve.Watch(ctx, v.index, mgr.GetCache())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually.Succeeds(t, "the verifier's index syncs", func() error {
		if !synced() {
			return eventually.ErrNotYet
		}
		return nil
	})
	return v
}

func (v *outageVerifier) waitCode(t *testing.T, key string, want verifier.Code) {
	t.Helper()
	eventually.Succeeds(t, "the verifier answers "+string(want), func() error {
		if got := v.index.Verify(key, nil, time.Now()).Code; got != want {
			return fmt.Errorf("it answers %s", got)
		}
		return nil
	})
}

// TestDuringAnAPIServerOutageTheVerifierAnswersFromItsIndexAndTheManagerCatchesUpWithoutMintingAgain takes
// the API server away from a manager and a verifier (their connections cut, new ones refused), changes
// APIKeys meanwhile, and brings it back. While it is away the verifier keeps accepting the keys it knew and
// says it cannot reach the API server; once it is back, the manager mints the keys of APIKeys created
// meanwhile and the rotation asked for meanwhile, and nothing else: no APIKey gets a second key.
func TestDuringAnAPIServerOutageTheVerifierAnswersFromItsIndexAndTheManagerCatchesUpWithoutMintingAgain(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	outage := testenv.NewOutage(t, env.Config)
	h.startManager(managerOptions{production: true, via: outage})
	v := startVerifierVia(t, h, outage)

	for _, name := range []string{"kept", "rotated", "disabled"} {
		h.create(name, "")
	}
	before := map[string]string{}
	for _, name := range []string{"kept", "rotated", "disabled"} {
		h.waitReady(name)
		before[name] = h.key(name)
		v.waitCode(t, before[name], verifier.CodeValid)
	}

	outage.Cut()
	eventually.Succeeds(t, "the verifier notices the API server is away", func() error {
		if v.contact.Reachable() {
			return errors.New("it still counts the API server reachable")
		}
		return nil
	})
	// Meanwhile, through the API server directly: two new APIKeys, a rotation and a disable.
	h.create("new-1", "")
	h.create("new-2", "")
	h.update("rotated", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "during-the-outage"}
	})
	h.update("disabled", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
	for name, key := range before {
		if got := v.index.Verify(key, nil, time.Now()).Code; got != verifier.CodeValid {
			t.Errorf("during the outage the verifier answers %s for the key of %s; want VALID from its index", got, name)
		}
	}

	outage.Restore(t)
	eventually.Succeeds(t, "the verifier reaches the API server again", func() error {
		if !v.contact.Reachable() {
			return errors.New("not yet")
		}
		return nil
	})
	for _, name := range []string{"new-1", "new-2"} {
		h.waitReady(name)
		v.waitCode(t, h.key(name), verifier.CodeValid)
	}
	h.waitFor("rotated", "revision 2", revisionIs(2))
	v.waitCode(t, h.key("rotated"), verifier.CodeValid)
	h.waitFor("disabled", "Ready=False Disabled", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonDisabled))
	v.waitCode(t, before["disabled"], verifier.CodeDisabled)

	for name, want := range map[string]int64{"kept": 1, "rotated": 2, "disabled": 1, "new-1": 1, "new-2": 1} {
		if got := h.get(name).Status.Revision; got != want {
			t.Errorf("APIKey %s is at revision %d, want %d", name, got, want)
		}
	}
	if h.key("kept") != before["kept"] {
		t.Error("the key of an APIKey nobody touched changed")
	}
	// Three first keys, two more for the APIKeys created meanwhile, one rotation: nothing minted twice.
	if written := h.writes.keysWritten(); len(written) != 6 {
		t.Errorf("the manager wrote %d distinct keys, want 6", len(written))
	}
}
