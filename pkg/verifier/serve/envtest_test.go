package serve_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/controllers"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

// cluster runs the Keyward controller and a verifier (each with its own manager, as in production) in one
// namespace of the shared control plane.
type cluster struct {
	t      testing.TB
	ns     string
	index  *verifier.Index
	client client.Client // the verifier's cache-backed client
}

func startCluster(t testing.TB) *cluster {
	c := &cluster{t: t, ns: env.Namespace(t), index: verifier.NewIndex()}
	ctx, cancel := context.WithCancel(context.Background())
	var stops []chan struct{}
	t.Cleanup(func() {
		cancel()
		for _, s := range stops {
			<-s
		}
	})
	start := func(mgr ctrl.Manager) {
		done := make(chan struct{})
		stops = append(stops, done)
		go func() { defer close(done); _ = mgr.Start(ctx) }()
	}
	// Benchmarks report numbers; the managers' logs would drown them.
	logOut := io.Discard
	if _, isTest := t.(*testing.T); isTest {
		logOut = t.Output()
	}
	// Each runs as its service account, with the bundle's RBAC and admission policies.
	newManager := func(user string, cacheOpts cache.Options) ctrl.Manager {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{c.ns: {}}
		mgr, err := ctrl.NewManager(testenv.ImpersonatingConfig(env.Config, user), ctrl.Options{
			Scheme: testenv.Scheme, Cache: cacheOpts, Metrics: metricsserver.Options{BindAddress: "0"},
			Logger:     zap.New(zap.WriteTo(logOut)),
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return mgr
	}

	ctrlMgr := newManager(testenv.ManagerUser, managerconfig.CacheOptions())
	signer, err := controllers.LoadOrCreateSigningKey(ctx, env.Client, env.Client,
		types.NamespacedName{Namespace: c.ns, Name: controllers.DefaultSigningKeySecretName}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.APIKeyReconciler{Client: ctrlMgr.GetClient(), APIReader: ctrlMgr.GetAPIReader(),
		Clock: clock.RealClock{}, Random: rand.Reader, Signer: signer}
	if err := r.SetupWithManager(ctx, ctrlMgr, controller.Options{}); err != nil {
		t.Fatal(err)
	}
	start(ctrlMgr)

	verMgr := newManager(testenv.VerifierUser, serve.CacheOptions())
	synced, err := serve.Watch(ctx, c.index, verMgr.GetCache())
	if err != nil {
		t.Fatal(err)
	}
	c.client = verMgr.GetClient()
	start(verMgr)
	eventually.Succeeds(t, "the verifier's index syncs", func() error {
		if !synced() {
			return eventually.ErrNotYet
		}
		return nil
	})
	return c
}

func (c *cluster) get(name string) *keywardv1alpha1.APIKey {
	c.t.Helper()
	return env.APIKey(c.t, c.ns, name)
}

func (c *cluster) update(name string, change func(*keywardv1alpha1.APIKey)) {
	c.t.Helper()
	env.UpdateAPIKey(c.t, c.ns, name, change)
}

func (c *cluster) waitReadyRevision(name string, rev int64) string {
	c.t.Helper()
	eventually.Succeeds(c.t, fmt.Sprintf("APIKey %s is Ready at revision %d", name, rev), func() error {
		ak := c.get(name)
		if ak.Status.Revision != rev || !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
			return fmt.Errorf("revision %d, conditions %v", ak.Status.Revision, ak.Status.Conditions)
		}
		return nil
	})
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: c.ns, Name: name}, s); err != nil {
		c.t.Fatal(err)
	}
	return string(s.Data[keyrecord.DataAPIKey])
}

// waitCode polls the verifier until key gets the code and returns how long that took from since.
func (c *cluster) waitCode(key string, scopes []string, want verifier.Code, since time.Time) time.Duration {
	c.t.Helper()
	eventually.Tight(c.t, fmt.Sprintf("the verifier answers %s", want), func() error {
		if got := c.index.Verify(key, scopes, time.Now()); got.Code != want {
			return fmt.Errorf("it answers %s", got.Code)
		}
		return nil
	})
	return time.Since(since)
}

func TestVerifierAnswersFollowAPIKeyChangesThroughTheAPIServer(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	scopes := []string{"orders:read"}
	t0 := time.Now()
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: c.ns},
		Spec:       keywardv1alpha1.APIKeySpec{Prefix: "ord", Scopes: []keywardv1alpha1.Scope{"orders:*"}},
	}); err != nil {
		t.Fatal(err)
	}
	k1 := c.waitReadyRevision("orders", 1)
	t.Logf("create → key accepted: %v", c.waitCode(k1, scopes, verifier.CodeValid, t0))
	if got := c.index.Verify(k1, []string{"invoices:read"}, time.Now()).Code; got != verifier.CodeInsufficientScope {
		t.Errorf("a scope the key lacks: %s", got)
	}

	// A manual rotation: the new key works, the old one keeps working for the grace period (1h).
	start := time.Now()
	c.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "one"}
	})
	k2 := c.waitReadyRevision("orders", 2)
	t.Logf("rotate → new key accepted: %v", c.waitCode(k2, scopes, verifier.CodeValid, start))
	if got := c.index.Verify(k1, scopes, time.Now()).Code; got != verifier.CodeValid {
		t.Errorf("the previous key during its grace period: %s", got)
	}

	start = time.Now()
	c.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
	t.Logf("disable → key rejected: %v", c.waitCode(k2, scopes, verifier.CodeDisabled, start))
	if got := c.index.Verify(k1, scopes, time.Now()).Code; got != verifier.CodeDisabled {
		t.Errorf("a previous key of a disabled APIKey: %s", got)
	}
	start = time.Now()
	c.update("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = false })
	t.Logf("enable → key accepted: %v", c.waitCode(k2, scopes, verifier.CodeValid, start))

	// With a zero grace period (the leaked-key procedure) every earlier key stops as soon as the rotation is
	// seen: the one replaced and the one still inside its own grace period.
	c.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Spec.Rotation = &keywardv1alpha1.RotationSpec{GracePeriod: "0s"}
		ak.Annotations[keywardv1alpha1.RotateAnnotation] = "two"
	})
	start = time.Now()
	k3 := c.waitReadyRevision("orders", 3)
	c.waitCode(k3, scopes, verifier.CodeValid, start)
	for i, old := range []string{k1, k2} {
		if got := c.index.Verify(old, scopes, time.Now()).Code; got != verifier.CodeNotFound {
			t.Errorf("key %d after a zero-grace rotation: %s", i+1, got)
		}
	}

	start = time.Now()
	if err := env.Client.Delete(context.Background(), c.get("orders")); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete → key rejected: %v", c.waitCode(k3, scopes, verifier.CodeNotFound, start))
}

func TestUsageIsWrittenToStatusInOneBatchWithoutRotating(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "used", Namespace: c.ns},
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "unused", Namespace: c.ns},
	}); err != nil {
		t.Fatal(err)
	}
	key := c.waitReadyRevision("used", 1)
	c.waitReadyRevision("unused", 1)
	c.waitCode(key, nil, verifier.CodeValid, time.Now())
	for range 4 {
		c.index.Verify(key, nil, time.Now())
	}
	reporter := &serve.UsageReporter{Index: c.index, Client: c.client}
	// The verifier's cache must show the controller's status before the optimistic patch can succeed.
	var patched int
	eventually.Succeeds(t, "usage is flushed", func() error {
		n, err := reporter.Flush(context.Background())
		patched += n
		return err
	})
	if patched != 1 {
		t.Errorf("patched %d APIKeys; want only the used one", patched)
	}
	ak := c.get("used")
	if ak.Status.Usage == nil || ak.Status.Usage.Requests != 5 || ak.Status.Usage.LastUsedAt == nil {
		t.Fatalf("status.usage = %+v; want 5 requests and a last-used time", ak.Status.Usage)
	}
	if c.get("unused").Status.Usage != nil {
		t.Error("an unused APIKey got a usage patch")
	}
	if n, err := reporter.Flush(context.Background()); n != 0 || err != nil {
		t.Errorf("a flush with nothing new patched %d (%v)", n, err)
	}
	// Proof that the controller has judged the APIKey with the usage patch in its cache: a spec edit made
	// after the patch is observed (watch events arrive in order). A mint caused by the patch would show by then.
	c.update("used", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Description = "after the usage report" })
	eventually.Succeeds(t, "the controller observes the edit made after the usage patch", func() error {
		if ak := c.get("used"); ak.Status.ObservedGeneration != ak.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", ak.Status.ObservedGeneration, ak.Generation)
		}
		return nil
	})
	if ak := c.get("used"); ak.Status.Revision != 1 || ak.Status.Usage == nil || ak.Status.Usage.Requests != 5 {
		t.Errorf("after the usage patch: revision %d, usage %+v; want no new key and the usage kept", ak.Status.Revision, ak.Status.Usage)
	}
}

// BenchmarkRevokeToReject measures, on the local control plane, the time from the API write that disables an
// APIKey to the verifier rejecting its key, over 100 disable/enable rounds, and reports p50 and p99.
func BenchmarkRevokeToReject(b *testing.B) {
	testenv.Need(b)
	for b.Loop() {
		c := startCluster(b)
		if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "revoked", Namespace: c.ns},
		}); err != nil {
			b.Fatal(err)
		}
		key := c.waitReadyRevision("revoked", 1)
		c.waitCode(key, nil, verifier.CodeValid, time.Now())
		var lat []time.Duration
		for i := range 100 {
			start := time.Now()
			c.update("revoked", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = i%2 == 0 })
			want := verifier.CodeDisabled
			if i%2 == 1 {
				want = verifier.CodeValid
			}
			d := c.waitCode(key, nil, want, start)
			if want == verifier.CodeDisabled {
				lat = append(lat, d)
			}
		}
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.Logf("revoke → reject over %d revocations: p50 %v, p99 %v, max %v", len(lat), p(0.5), p(0.99), lat[len(lat)-1])
	}
}

func TestShutdownFlushesPendingUsage(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: c.ns},
	}); err != nil {
		t.Fatal(err)
	}
	key := c.waitReadyRevision("late", 1)
	c.waitCode(key, nil, verifier.CodeValid, time.Now())
	// Let the verifier's cache catch up with the controller's last status write, as a running verifier's
	// would have; the flush patches with that resourceVersion.
	eventually.Succeeds(t, "the verifier's cache catches up", func() error {
		cached := &keywardv1alpha1.APIKey{}
		if err := c.client.Get(context.Background(), types.NamespacedName{Namespace: c.ns, Name: "late"}, cached); err != nil {
			return err
		}
		if latest := c.get("late").ResourceVersion; cached.ResourceVersion != latest {
			return fmt.Errorf("the cache has resourceVersion %s, the API server %s", cached.ResourceVersion, latest)
		}
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	reporter := &serve.UsageReporter{Index: c.index, Client: c.client, Interval: time.Hour}
	done := make(chan error, 1)
	go func() { done <- reporter.Start(ctx) }()
	c.index.Verify(key, nil, time.Now())
	cancel()
	if err := eventually.Receive(t, "the reporter stops", done); err != nil {
		t.Fatal(err)
	}
	if u := c.get("late").Status.Usage; u == nil || u.Requests != 2 {
		t.Errorf("status.usage after shutdown = %+v; want the 2 valid verifications flushed", u)
	}
}

func TestANamespaceSelectorDecidesWhichNamespacesKeysCountFrom(t *testing.T) {
	testenv.Need(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trusted, other := env.Namespace(t), env.Namespace(t)
	setLabel := func(ns string, value *string) {
		n := &corev1.Namespace{}
		if err := env.Client.Get(ctx, types.NamespacedName{Name: ns}, n); err != nil {
			t.Fatal(err)
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if value == nil {
			delete(n.Labels, "keyward-test/tenant")
		} else {
			n.Labels["keyward-test/tenant"] = *value
		}
		if err := env.Client.Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	trustedValue := "trusted"
	setLabel(trusted, &trustedValue)
	keyIn := map[string]string{}
	for _, ns := range []string{trusted, other} {
		key, err := keys.Generate("kw", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keyIn[ns] = key
		ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "k", Namespace: ns}}
		if err := env.Client.Create(ctx, ak); err != nil {
			t.Fatal(err)
		}
		expires := metav1.NewTime(time.Now().Add(time.Hour))
		base := ak.DeepCopy()
		ak.Status = keywardv1alpha1.APIKeyStatus{KeyHash: keys.Hash(key), ExpiresAt: &expires}
		// Only the manager may write a key into status.
		if err := testenv.Impersonating(env.Config, testenv.ManagerUser).Status().Patch(ctx, ak, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}

	c, err := cache.New(env.Config, cache.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ix := verifier.NewIndex()
	apiKeysSynced, err := serve.Watch(ctx, ix, c)
	if err != nil {
		t.Fatal(err)
	}
	selector, _ := labels.Parse("keyward-test/tenant=trusted")
	nsSynced, err := serve.TrustNamespacesMatching(ctx, ix, c, selector, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	code := func(ns string) verifier.Code { return ix.Verify(keyIn[ns], nil, time.Now()).Code }
	codeIs := func(ns string, want verifier.Code) func() error {
		return func() error {
			if !apiKeysSynced() || !nsSynced() {
				return errors.New("the caches have not synced")
			}
			if got := code(ns); got != want {
				return fmt.Errorf("the key from %s gets %s", ns, got)
			}
			return nil
		}
	}
	eventually.Succeeds(t, "the trusted namespace's key is valid", codeIs(trusted, verifier.CodeValid))
	if got := code(other); got != verifier.CodeNotFound {
		t.Errorf("a key from a namespace the selector does not match: %s", got)
	}
	setLabel(other, &trustedValue)
	eventually.Succeeds(t, "the relabelled namespace is trusted", codeIs(other, verifier.CodeValid))
	setLabel(trusted, nil)
	eventually.Succeeds(t, "the unlabelled namespace is no longer trusted", codeIs(trusted, verifier.CodeNotFound))
}

func TestKeysStopWhileTheirAPIKeyIsBeingDeleted(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "leaving", Namespace: c.ns,
		Finalizers: []string{"keyward-test.dev/hold"}}} // like foreground deletion waiting for dependents
	if err := env.Client.Create(context.Background(), ak); err != nil {
		t.Fatal(err)
	}
	key := c.waitReadyRevision("leaving", 1)
	c.waitCode(key, nil, verifier.CodeValid, time.Now())
	if err := env.Client.Delete(context.Background(), c.get("leaving")); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete (object held by a finalizer) → key rejected: %v", c.waitCode(key, nil, verifier.CodeNotFound, time.Now()))
	if c.get("leaving").DeletionTimestamp.IsZero() {
		t.Error("the APIKey is gone; the test meant to hold it while being deleted")
	}
	c.update("leaving", func(ak *keywardv1alpha1.APIKey) { ak.Finalizers = nil })
}
