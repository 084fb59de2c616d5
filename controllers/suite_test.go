package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

// t0 is where every test's fake clock starts: 10:00 UTC a year after today. It lies ahead of the real clock
// because the shipped admission policy refuses, at creation, a fixed expiresAt before the APIKey's real
// creation time; a fixed expiry shortly after t0 (expiresAt(...)) is therefore accepted as users' are.
var t0 = time.Now().UTC().Truncate(24*time.Hour).AddDate(1, 0, 0).Add(10 * time.Hour)

// expiresAt is an APIKey spec line with the fixed expiry t0+d.
func expiresAt(d time.Duration) string { return "expiresAt: " + t0.Add(d).Format(time.RFC3339) }

// harness runs managers against the shared control plane for one test, in the test's own namespace, on a
// fake clock, capturing their logs; at the end it scans logs, events and status for every key it saw.
type harness struct {
	t     testing.TB
	ns    string
	clock *clocktesting.FakeClock
	logs  *syncBuffer
	// writes counts write requests of the running manager by resource ("secrets", "apikeys", "events").
	writes *writeCounter
	keys   map[string]bool
	stop   func()
	// queue is the running controller's workqueue, which records the requeues it schedules.
	// It is set from the controller's goroutine when the controller starts.
	queue atomic.Pointer[schedulingQueue]
	// webhookQueue is the delivery controller's workqueue, when it runs.
	webhookQueue atomic.Pointer[schedulingQueue]
	// keySeen and webhookSeen record which APIKey versions each controller's reconciles read.
	keySeen, webhookSeen seenVersions
}

func newHarness(t testing.TB) *harness {
	h := &harness{t: t, ns: env.Namespace(t), clock: clocktesting.NewFakeClock(t0), logs: &syncBuffer{},
		writes: &writeCounter{}, keys: map[string]bool{}}
	t.Cleanup(func() {
		h.stopManager()
		h.assertNoKeyMaterialLeaked()
		if t.Failed() && os.Getenv("KEYWARD_TEST_LOGS") != "" {
			t.Log(h.logs.String())
		}
	})
	return h
}

// managerOptions tweak one manager start.
type managerOptions struct {
	// wrapClient wraps the reconciler's client (to simulate a crash between writes).
	wrapClient func(client.Client, context.CancelFunc) client.Client
	// production runs on the real clock with the production controller options, for benchmarks.
	production bool
	// webhookCIDRs are the --webhook-allowed-cidrs of the delivery controller; nil runs none.
	webhookCIDRs []string
	// attemptTimeout is the delivery controller's --webhook-attempt-timeout; 2 minutes when zero.
	attemptTimeout time.Duration
	// alsoNamespaces are namespaces the manager reconciles besides the test's own.
	alsoNamespaces []string
	// election, when set, runs the manager with leader election, as --leader-elect does.
	election *electionOptions
	// crash, when set, is the manager's kill switch: once thrown, none of its requests reach the API server.
	crash *killSwitch
	// name tells apart the logs of several managers in one test.
	name string
	// via, when set, is the proxy the manager reaches the API server through, so a test can take it away.
	via *testenv.Outage
	// judgePolicies judges APIKeys against APIKeyPolicies, as the manager does outside namespaced mode.
	judgePolicies bool
}

// electionOptions are a manager's --leader-elect settings. The Lease lives in the bundle's namespace, where
// the shipped Role lets the manager's identity hold it; its name is the test's own.
type electionOptions struct {
	id                                        string
	leaseDuration, renewDeadline, retryPeriod time.Duration
}

// killSwitch makes a manager vanish as a crashed process does: once thrown, every request it starts fails,
// so it can neither write, nor renew its Lease, nor release it.
type killSwitch struct{ thrown atomic.Bool }

func (k *killSwitch) throw() { k.thrown.Store(true) }

func (k *killSwitch) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if k.thrown.Load() {
			return nil, errors.New("the manager process is gone")
		}
		return rt.RoundTrip(req)
	})
}

// runningManager is one manager started by runManager.
type runningManager struct {
	// elected is closed once the manager leads (at once without leader election).
	elected <-chan struct{}
	stop    func()
}

func (h *harness) startManager(opts managerOptions) {
	h.t.Helper()
	h.stopManager()
	h.stop = h.runManager(opts).stop
}

// runManager starts a manager as cmd/main.go sets it up, acting as the shipped manager identity.
func (h *harness) runManager(opts managerOptions) *runningManager {
	h.t.Helper()
	h.queue.Store(nil) // reconcile counts start again with the new controller
	h.webhookQueue.Store(nil)
	// As in production: the manager's service account with the bundle's RBAC and admission policies.
	cfg := testenv.ImpersonatingConfig(env.Config, testenv.ManagerUser)
	cfg.QPS = -1 // as in production: no client-side throttling, the API server's fairness applies
	cfg.WrapTransport = h.writes.wrap
	if opts.via != nil {
		cfg = opts.via.Config(cfg)
	}
	if opts.crash != nil {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return opts.crash.wrap(h.writes.wrap(rt)) }
	}
	// Namespaced mode, as the manager runs with --namespaces: the test's namespace only.
	cacheOpts := managerconfig.CacheOptions(append([]string{h.ns}, opts.alsoNamespaces...)...)
	var logOut io.Writer = h.logs
	if h.writes.countOnly.Load() {
		logOut = io.Discard // benchmarks: production logs leave the process; a buffer here would grow with the APIKeys
	}
	logger := zap.New(zap.WriteTo(logOut), zap.UseDevMode(true))
	if opts.name != "" {
		logger = logger.WithName(opts.name)
	}
	mgrOpts := ctrl.Options{
		Scheme:                 testenv.Scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 logger,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if e := opts.election; e != nil {
		mgrOpts.LeaderElection, mgrOpts.LeaderElectionID = true, e.id
		mgrOpts.LeaderElectionNamespace, mgrOpts.LeaderElectionReleaseOnCancel = testenv.SystemNamespace, true
		mgrOpts.LeaseDuration, mgrOpts.RenewDeadline, mgrOpts.RetryPeriod = &e.leaseDuration, &e.renewDeadline, &e.retryPeriod
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		h.t.Fatalf("creating a manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := mgr.GetClient()
	if opts.wrapClient != nil {
		c = opts.wrapClient(c, cancel)
	}
	// The signing key lives in the test's namespace and is loaded the way the manager loads it, so every
	// restart of a test's manager signs and verifies with the same key.
	signer, err := LoadOrCreateSigningKey(context.Background(), env.Client, env.Client,
		types.NamespacedName{Namespace: h.ns, Name: DefaultSigningKeySecretName}, rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	// Benchmarks measure the manager alone: no test bookkeeping that grows with the APIKeys.
	keyClient, webhookClient := client.Client(recordingClient{Client: c, seen: &h.keySeen}), client.Client(recordingClient{Client: c, seen: &h.webhookSeen})
	if h.writes.countOnly.Load() {
		keyClient, webhookClient = c, c
	}
	r := &APIKeyReconciler{
		Client: keyClient, APIReader: mgr.GetAPIReader(), Clock: h.clock, Random: rand.Reader, Signer: signer,
		Events: mgr.GetEventRecorder("keyward"), ConflictRecheckInterval: 30 * time.Second, JudgePolicies: opts.judgePolicies,
	}
	ctrlOpts := controller.Options{
		// The queue's delays run on the fake clock, so stepping the clock fires requeues at exact instants.
		NewQueue: func(name string, _ workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			q := &schedulingQueue{clock: h.clock, TypedRateLimitingInterface: NewFairQueue(name,
				workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](0, 0), h.clock)}
			if name == "webhook" {
				h.webhookQueue.Store(q)
			} else {
				h.queue.Store(q)
			}
			return q
		},
	}
	if opts.production {
		r.Clock = clock.RealClock{}
		ctrlOpts = controller.Options{MaxConcurrentReconciles: DefaultMaxConcurrentReconciles}
	}
	err = r.SetupWithManager(ctx, mgr, ctrlOpts)
	if err != nil {
		h.t.Fatal(err)
	}
	// A production manager runs the delivery controller too, as cmd/main.go does.
	if opts.webhookCIDRs != nil || opts.production {
		allowed, err := ParseCIDRs(opts.webhookCIDRs)
		if err != nil {
			h.t.Fatal(err)
		}
		// A receiver on loopback answers in milliseconds, but a busy CI machine can stall a process for
		// seconds: an attempt timing out there would be a flake, so tests allow far more than production.
		if opts.attemptTimeout == 0 {
			opts.attemptTimeout = 2 * time.Minute
		}
		wr := &WebhookReconciler{Client: webhookClient, APIReader: mgr.GetAPIReader(), Clock: h.clock, Events: mgr.GetEventRecorder("keyward-webhook"),
			AllowedCIDRs: allowed, Jitter: func() float64 { return 0 }, AttemptTimeout: opts.attemptTimeout}
		if opts.production {
			wr.Clock, wr.Jitter = clock.RealClock{}, nil
		}
		// As many delivery workers as in production, so fairness across namespaces is what ships.
		webhookOpts := ctrlOpts
		webhookOpts.MaxConcurrentReconciles = DefaultWebhookWorkers
		if err := wr.SetupWithManager(mgr, webhookOpts); err != nil {
			h.t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			_, _ = h.logs.Write([]byte("manager " + opts.name + " stopped with error: " + err.Error() + "\n"))
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		h.t.Fatal("the manager's cache did not sync")
	}
	var once sync.Once
	return &runningManager{elected: mgr.Elected(), stop: func() { once.Do(func() { cancel(); <-done }) }}
}

func (h *harness) stopManager() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *harness) create(name, specYAML string, mutate ...func(*keywardv1alpha1.APIKey)) *keywardv1alpha1.APIKey {
	h.t.Helper()
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns}}
	if specYAML != "" {
		if err := yamlToSpec(specYAML, &ak.Spec); err != nil {
			h.t.Fatal(err)
		}
	}
	for _, m := range mutate {
		m(ak)
	}
	if err := env.Client.Create(context.Background(), ak); err != nil {
		h.t.Fatalf("creating APIKey %s: %v", name, err)
	}
	return ak
}

func (h *harness) get(name string) *keywardv1alpha1.APIKey {
	h.t.Helper()
	return env.APIKey(h.t, h.ns, name)
}

// update changes the APIKey and returns it as written.
func (h *harness) update(name string, change func(*keywardv1alpha1.APIKey)) *keywardv1alpha1.APIKey {
	h.t.Helper()
	return env.UpdateAPIKey(h.t, h.ns, name, change)
}

// waitFor polls the API server (not the manager's cache) until cond holds.
func (h *harness) waitFor(name, what string, cond func(*keywardv1alpha1.APIKey) bool) *keywardv1alpha1.APIKey {
	h.t.Helper()
	return eventually.Get(h.t, "APIKey "+name+": "+what, func() (*keywardv1alpha1.APIKey, error) {
		ak := h.get(name)
		if cond(ak) {
			return ak, nil
		}
		status, _ := json.MarshalIndent(ak.Status, "", "  ")
		return nil, fmt.Errorf("status is\n%s", status)
	})
}

// stepToRequeue moves the fake clock by d once the controller has scheduled a requeue at or before the new
// time. Stepping before the requeue is scheduled would compute its instant from the new time and miss it.
func (h *harness) stepToRequeue(d time.Duration) {
	h.t.Helper()
	h.waitForRequeueBy(h.clock.Now().Add(d))
	h.clock.Step(d)
}

// waitForRequeueBy waits until the controller has scheduled a requeue after now and at or before t.
func (h *harness) waitForRequeueBy(t time.Time) {
	h.t.Helper()
	eventually.Succeeds(h.t, "the controller schedules a requeue by "+t.Format(time.RFC3339), func() error {
		if !h.queue.Load().scheduledBetween(h.clock.Now(), t) {
			return fmt.Errorf("requeues scheduled at %v", h.queue.Load().scheduledTimes())
		}
		return nil
	})
}

// schedulingQueue records the instants of the delayed adds (RequeueAfter) on the fake clock, and counts the
// items the controller took and finished, which is proof that reconciles ran.
type schedulingQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	clock     *clocktesting.FakeClock
	mu        sync.Mutex
	scheduled []time.Time
	// gets and dones count the items the controller took and finished.
	gets, dones int
}

func (q *schedulingQueue) Get() (reconcile.Request, bool) {
	item, shutdown := q.TypedRateLimitingInterface.Get()
	q.mu.Lock()
	q.gets++
	q.mu.Unlock()
	return item, shutdown
}

func (q *schedulingQueue) Done(item reconcile.Request) {
	q.TypedRateLimitingInterface.Done(item)
	q.mu.Lock()
	q.dones++
	q.mu.Unlock()
}

// idle reports whether no reconcile is running or waiting; false before the controller started.
func (q *schedulingQueue) idle() bool {
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.gets == q.dones && q.TypedRateLimitingInterface.Len() == 0
}

func (q *schedulingQueue) AddAfter(item reconcile.Request, d time.Duration) {
	q.TypedRateLimitingInterface.AddAfter(item, d)
	if d > 0 {
		q.mu.Lock()
		q.scheduled = append(q.scheduled, q.clock.Now().Add(d))
		q.mu.Unlock()
	}
}

// scheduledTimes lists the instants of the requeues scheduled so far, for a failure message.
func (q *schedulingQueue) scheduledTimes() []time.Time {
	if q == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]time.Time(nil), q.scheduled...)
}

// scheduledAfter returns how many requeues are scheduled after t, and the earliest of them.
func (q *schedulingQueue) scheduledAfter(t time.Time) (n int, earliest time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.scheduled {
		if s.After(t) {
			n++
			if earliest.IsZero() || s.Before(earliest) {
				earliest = s
			}
		}
	}
	return n, earliest
}

func (q *schedulingQueue) scheduledBetween(after, by time.Time) bool {
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.scheduled {
		if s.After(after) && !s.After(by) {
			return true
		}
	}
	return false
}

// waitReconciledAt waits until the key controller has read APIKey name at resourceVersion rv or later, and
// has finished that reconcile (no reconcile is running or queued). That is proof the controller acted on
// every change up to rv: a reconcile that read the version started after it, and an idle queue says it ended.
func (h *harness) waitReconciledAt(name, rv string) {
	h.t.Helper()
	waitReconciledAt(h.t, "the key controller", &h.queue, &h.keySeen, name, rv)
}

// waitWebhookReconciledAt is waitReconciledAt for the delivery controller.
func (h *harness) waitWebhookReconciledAt(name, rv string) {
	h.t.Helper()
	waitReconciledAt(h.t, "the delivery controller", &h.webhookQueue, &h.webhookSeen, name, rv)
}

// waitWebhookIdle waits until no reconcile of the delivery controller is running or queued. After seeing a
// write that a reconcile made, it is proof that reconcile has finished.
func (h *harness) waitWebhookIdle() {
	h.t.Helper()
	eventually.Succeeds(h.t, "the delivery controller is idle", func() error {
		if !h.webhookQueue.Load().idle() {
			return errors.New("a reconcile is running or queued")
		}
		return nil
	})
}

// waitReconciled waits until the key controller has acted on the APIKey as the API server has it now.
func (h *harness) waitReconciled(name string) {
	h.t.Helper()
	h.waitReconciledAt(name, h.get(name).ResourceVersion)
}

func waitReconciledAt(t testing.TB, controller string, q *atomic.Pointer[schedulingQueue], seen *seenVersions, name, rv string) {
	t.Helper()
	want, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q is not a number", rv)
	}
	eventually.Succeeds(t, fmt.Sprintf("%s has reconciled APIKey %s at resourceVersion %s and is idle", controller, name, rv), func() error {
		// A version the controller wrote itself needs no reconcile: its watch skips the echo.
		if got := seen.version(name); got < want && !seen.wroteVersion(name, want) {
			return fmt.Errorf("it has read resourceVersion %d at most", got)
		}
		if !q.Load().idle() {
			return errors.New("a reconcile is running or queued")
		}
		return nil
	})
}

// seenVersions records, per APIKey name, the highest resourceVersion that a controller's reads returned,
// and the versions its own status writes made.
type seenVersions struct {
	mu    sync.Mutex
	rv    map[string]int64
	wrote map[string]map[int64]bool
}

func (s *seenVersions) noteWrite(ak *keywardv1alpha1.APIKey) {
	v, err := strconv.ParseInt(ak.ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrote == nil {
		s.wrote = map[string]map[int64]bool{}
	}
	if s.wrote[ak.Name] == nil {
		s.wrote[ak.Name] = map[int64]bool{}
	}
	s.wrote[ak.Name][v] = true
}

func (s *seenVersions) wroteVersion(name string, v int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wrote[name][v]
}

func (s *seenVersions) note(ak *keywardv1alpha1.APIKey) {
	v, err := strconv.ParseInt(ak.ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rv == nil {
		s.rv = map[string]int64{}
	}
	s.rv[ak.Name] = max(s.rv[ak.Name], v)
}

func (s *seenVersions) version(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv[name]
}

// recordingClient notes the version of every APIKey that a controller reads.
type recordingClient struct {
	client.Client
	seen *seenVersions
}

func (c recordingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := c.Client.Get(ctx, key, obj, opts...)
	if ak, ok := obj.(*keywardv1alpha1.APIKey); ok && err == nil {
		c.seen.note(ak)
	}
	return err
}

// Status notes the versions the controller's own status writes make.
func (c recordingClient) Status() client.SubResourceWriter {
	return recordingStatusWriter{SubResourceWriter: c.Client.Status(), seen: c.seen}
}

type recordingStatusWriter struct {
	client.SubResourceWriter
	seen *seenVersions
}

func (w recordingStatusWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if ak, ok := obj.(*keywardv1alpha1.APIKey); ok && err == nil {
		w.seen.noteWrite(ak)
	}
	return err
}

// touch sets keyward.dev/requested-at on the APIKey, which makes the controller reconcile it and changes
// nothing else, and waits until it has.
func (h *harness) touch(name string) {
	h.t.Helper()
	touched := h.update(name, func(ak *keywardv1alpha1.APIKey) {
		if ak.Annotations == nil {
			ak.Annotations = map[string]string{}
		}
		ak.Annotations[keywardv1alpha1.RequestedAtAnnotation] = time.Now().Format(time.RFC3339Nano)
	})
	h.waitReconciledAt(name, touched.ResourceVersion)
}

func readyIs(status metav1.ConditionStatus, reason keywardv1alpha1.ConditionReason) func(*keywardv1alpha1.APIKey) bool {
	return func(ak *keywardv1alpha1.APIKey) bool {
		c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
		return c != nil && c.Status == status && c.Reason == string(reason) && c.ObservedGeneration == ak.Generation &&
			ak.Status.ObservedGeneration == ak.Generation
	}
}

func (h *harness) waitReady(name string) *keywardv1alpha1.APIKey {
	h.t.Helper()
	return h.waitFor(name, "Ready=True", readyIs(metav1.ConditionTrue, keywardv1alpha1.ReasonKeyReady))
}

func revisionIs(rev int64) func(*keywardv1alpha1.APIKey) bool {
	return func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.Revision == rev }
}

func (h *harness) secret(name string) *corev1.Secret {
	h.t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: h.ns, Name: name}, s); err != nil {
		h.t.Fatalf("getting Secret %s: %v", name, err)
	}
	if k := string(s.Data[keyrecord.DataAPIKey]); k != "" {
		h.keys[k] = true
	}
	return s
}

func (h *harness) key(secretName string) string {
	h.t.Helper()
	return string(h.secret(secretName).Data[keyrecord.DataAPIKey])
}

// events returns the events in the test's namespace, by reason.
func (h *harness) events() map[keywardv1alpha1.EventReason][]eventsv1.Event {
	h.t.Helper()
	var list eventsv1.EventList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(h.ns)); err != nil {
		h.t.Fatal(err)
	}
	out := map[keywardv1alpha1.EventReason][]eventsv1.Event{}
	for _, e := range list.Items {
		out[keywardv1alpha1.EventReason(e.Reason)] = append(out[keywardv1alpha1.EventReason(e.Reason)], e)
	}
	return out
}

// waitForEvent waits until count events with the reason exist.
func (h *harness) waitForEvent(reason keywardv1alpha1.EventReason, count int) []eventsv1.Event {
	h.t.Helper()
	return eventually.Get(h.t, fmt.Sprintf("%d %s events exist", count, reason), func() ([]eventsv1.Event, error) {
		evs := h.events()[reason]
		if len(evs) >= count {
			return evs, nil
		}
		return nil, fmt.Errorf("%d so far", len(evs))
	})
}

// assertNoKeyMaterialLeaked scans the manager logs, the events and every APIKey's status for each key the
// manager wrote into a Secret (taken from its write requests) or the test read, and for its random part.
func (h *harness) assertNoKeyMaterialLeaked() {
	var haystack strings.Builder
	haystack.WriteString(h.logs.String())
	// A failed List would make the scan search nothing and pass: it fails the test instead.
	var evs eventsv1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(h.ns)); err != nil {
		h.t.Errorf("the key-leak scan cannot list events: %v", err)
	}
	for _, e := range evs.Items {
		haystack.WriteString(e.Note + e.Reason + e.Action + "\n")
	}
	var aks keywardv1alpha1.APIKeyList
	if err := env.Client.List(context.Background(), &aks, client.InNamespace(h.ns)); err != nil {
		h.t.Errorf("the key-leak scan cannot list APIKeys: %v", err)
	}
	for _, ak := range aks.Items {
		b, _ := json.Marshal(ak)
		haystack.Write(b)
	}
	text := haystack.String()
	for k := range h.writes.keysWritten() {
		h.keys[k] = true
	}
	for k := range h.keys {
		random := k[strings.IndexByte(k, '_')+1:]
		random = random[:min(len(random), 32)]
		if strings.Contains(text, k) || (len(random) >= 16 && strings.Contains(text, random)) {
			h.t.Errorf("key material of a minted key appears in logs, events or status")
		}
	}
}

// writeCounter counts write requests by resource and remembers every key written into a Secret.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
	keys   map[string]bool
	total  atomic.Int64
	// requests counts every request, reads and watches included.
	requests atomic.Int64
	// countOnly skips remembering the keys written, whose map would grow with the APIKeys.
	countOnly atomic.Bool
}

// keysWritten returns every api-key value the manager sent in a Secret write.
func (w *writeCounter) keysWritten() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.keys)
}

// keyOf returns the written key whose hash is hash, "" when none was written.
func (w *writeCounter) keyOf(hash string) string {
	for k := range w.keysWritten() {
		if keys.Hash(k) == hash {
			return k
		}
	}
	return ""
}

// noteKeys records the api-key of a Secret in a write request body (JSON or protobuf), leaving the body
// readable.
func (w *writeCounter) noteKeys(req *http.Request) {
	if req.GetBody == nil {
		return
	}
	body, err := req.GetBody()
	if err != nil {
		return
	}
	defer body.Close()
	raw, _ := io.ReadAll(body)
	obj, _, err := secretDecoder.Decode(raw, nil, nil)
	s, ok := obj.(*corev1.Secret)
	if err != nil || !ok {
		// The manager updates its Secrets with merge patches: {"data":{"api-key":"<base64>"},...}.
		s = &corev1.Secret{}
		if json.Unmarshal(raw, s) != nil {
			return
		}
	}
	if len(s.Data[keyrecord.DataAPIKey]) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.keys == nil {
		w.keys = map[string]bool{}
	}
	w.keys[string(s.Data[keyrecord.DataAPIKey])] = true
}

// secretDecoder reads the JSON or protobuf bodies that clients send.
var secretDecoder = serializer.NewCodecFactory(testenv.Scheme).UniversalDeserializer()

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		w.requests.Add(1)
		if req.Method != http.MethodGet {
			parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
			resource := ""
			for i, p := range parts {
				if p == "namespaces" && i+2 < len(parts) {
					resource = parts[i+2]
					if i+4 < len(parts) {
						resource += "/" + parts[i+4]
					}
				}
			}
			if resource == "secrets" && !w.countOnly.Load() {
				w.noteKeys(req)
			}
			w.mu.Lock()
			if w.counts == nil {
				w.counts = map[string]int{}
			}
			w.counts[resource]++
			w.mu.Unlock()
			w.total.Add(1)
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.counts {
		out[k] = v
	}
	return out
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func yamlToSpec(s string, spec *keywardv1alpha1.APIKeySpec) error {
	return yaml.Unmarshal([]byte(s), spec)
}
