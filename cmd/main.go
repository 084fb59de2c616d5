// Command manager runs the Keyward operator: the APIKey controller, metrics and health probes.
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/controllers"
	"github.com/keyward-dev/keyward/internal/delivery"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/serving"
	"github.com/keyward-dev/keyward/internal/version"
)

func main() {
	var (
		metricsFlags serving.MetricsFlags
		probeAddr    string
		leaderElect  bool
		election     leaderElection
		concurrency  int
		signingKey   string
		namespaces   string
		allowedCIDRs string
		deletionWait time.Duration
		hookWorkers  int
		hookPerNS    int
		hookTimeout  time.Duration
	)
	metricsFlags.Bind(flag.CommandLine)
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false,
		"Elect a leader so that only one of several replicas reconciles at a time.")
	election.bind(flag.CommandLine)
	flag.IntVar(&concurrency, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles,
		"How many APIKeys are reconciled at once.")
	flag.StringVar(&signingKey, "signing-key-secret", defaultSigningKeySecret(),
		"namespace/name of the Secret holding the key that signs every key record; created when missing. "+
			"Losing it gives every APIKey a new key, so back it up with the rest of Keyward's state.")
	flag.StringVar(&namespaces, "namespaces", "",
		"Namespaced mode: comma-separated namespaces whose APIKeys the manager reconciles; it caches and watches "+
			"nothing else, so RBAC in those namespaces (and its own) is enough. Empty: the whole cluster.")
	flag.StringVar(&allowedCIDRs, "webhook-allowed-cidrs", "",
		"Comma-separated CIDRs that webhook deliveries may reach although they are loopback, private, link-local or "+
			"otherwise special-purpose (for in-cluster receivers: the cluster's service CIDR). Everything else there is refused.")
	flag.DurationVar(&deletionWait, "webhook-deletion-timeout", controllers.DefaultWebhookDeletionTimeout,
		"How long a deleted APIKey with a webhook is held (by a finalizer) at most, for key.deleted to be delivered.")
	flag.IntVar(&hookWorkers, "webhook-workers", controllers.DefaultWebhookWorkers,
		"How many webhook delivery attempts the manager makes at once, across all namespaces.")
	flag.IntVar(&hookPerNS, "webhook-namespace-concurrency", controllers.DefaultWebhookNamespaceConcurrency,
		"How many of those attempts one namespace may have in flight at once; keep it well below --webhook-workers, "+
			"so one tenant's slow receivers cannot hold every worker.")
	flag.DurationVar(&hookTimeout, "webhook-attempt-timeout", delivery.DefaultAttemptTimeout,
		"How long one delivery attempt may take, connection and answer included; answers slower than 5s are "+
			"delivered but pace the APIKey's next event.")
	leakResponse := flag.String("leak-response", string(keywardv1alpha1.LeakResponseRotate),
		"What a report of a leaked key does when its APIKey's spec.leakResponse is unset: Rotate (stop it at once "+
			"and mint a new one), Disable (stop every key; mint none until a new keyward.dev/rotate value) or Notify "+
			"(change no key; tell through the KeyLeaked condition, event and key.leaked).")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("manager"))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))

	ctx := ctrl.SetupSignalHandler()
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  managerconfig.CacheOptions(splitList(namespaces)...),
		Metrics:                metricsFlags.Options(),
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "keyward-manager.keyward.dev",
		// The Lease lives in the manager's own namespace, so --leader-elect works outside a pod too, and a
		// replica that stops (a rolling update) releases it at once instead of making the next wait it out.
		LeaderElectionNamespace:       election.namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &election.leaseDuration,
		RenewDeadline:                 &election.renewDeadline,
		RetryPeriod:                   &election.retryPeriod,
	})
	if err != nil {
		setupLog.Error(err, "Unable to create the manager")
		os.Exit(1)
	}

	defaultLeakResponse := keywardv1alpha1.LeakResponse(*leakResponse)
	if !slices.Contains([]keywardv1alpha1.LeakResponse{keywardv1alpha1.LeakResponseRotate, keywardv1alpha1.LeakResponseDisable,
		keywardv1alpha1.LeakResponseNotify}, defaultLeakResponse) {
		setupLog.Error(fmt.Errorf("%q is not Rotate, Disable or Notify", *leakResponse), "Invalid --leak-response")
		os.Exit(1)
	}
	signingRef, err := parseNamespacedName(signingKey)
	if err != nil {
		setupLog.Error(err, "Invalid --signing-key-secret")
		os.Exit(1)
	}
	// The manager's cache holds only APIKey Secrets: read the signing key from the API server.
	signer, err := controllers.LoadOrCreateSigningKey(ctx, mgr.GetAPIReader(), mgr.GetClient(), signingRef, rand.Reader)
	if err != nil {
		setupLog.Error(err, "Unable to load the record signing key")
		os.Exit(1)
	}
	reconciler := &controllers.APIKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     clock.RealClock{},
		Random:    rand.Reader,
		Signer:    signer,
		Events:    mgr.GetEventRecorder("keyward"),
		// Judging policies reads namespaces cluster-wide, which namespaced mode's RBAC does not grant.
		JudgePolicies:       namespaces == "",
		DefaultLeakResponse: defaultLeakResponse,
	}
	if err := reconciler.SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: concurrency}); err != nil {
		setupLog.Error(err, "Unable to set up the APIKey controller")
		os.Exit(1)
	}
	allowed, err := controllers.ParseCIDRs(splitList(allowedCIDRs))
	if err != nil {
		setupLog.Error(err, "Invalid --webhook-allowed-cidrs")
		os.Exit(1)
	}
	deliveries := &controllers.WebhookReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clock.RealClock{},
		Events: mgr.GetEventRecorder("keyward-webhook"), AllowedCIDRs: allowed, DeletionTimeout: deletionWait,
		AttemptTimeout: hookTimeout, NamespaceConcurrency: hookPerNS}
	if err := deliveries.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: hookWorkers}); err != nil {
		setupLog.Error(err, "Unable to set up the webhook controller")
		os.Exit(1)
	}
	if err := metrics.Registry.Register(controllers.StatusCollector{Reader: mgr.GetCache()}); err != nil {
		setupLog.Error(err, "Unable to register the APIKey metrics")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up the readiness check")
		os.Exit(1)
	}

	setupLog.Info("Starting the manager")
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

// ownNamespace is the manager's namespace: POD_NAMESPACE (set by the Deployment), else the service account's
// namespace, else keyward-system.
func ownNamespace() string {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	if ns == "" {
		ns = "keyward-system"
	}
	return ns
}

// defaultSigningKeySecret is the signing key Secret in the manager's own namespace.
func defaultSigningKeySecret() string {
	return ownNamespace() + "/" + controllers.DefaultSigningKeySecretName
}

// leaderElection holds the leader election flags. A standby takes over a leader that died without releasing
// the Lease once the lease has run out, within LeaseDuration + RenewDeadline of the leader's last renewal; a
// leader that stops releases the Lease, and a standby takes it at its next try, within 2.2 x RetryPeriod
// (client-go jitters the tries by up to 1.2 x): 1.1 s by default. The cost of the short retry period is two
// small Lease writes a second from the leader and a read a second from each standby.
type leaderElection struct {
	namespace                                 string
	leaseDuration, renewDeadline, retryPeriod time.Duration
}

func (e *leaderElection) bind(fs *flag.FlagSet) {
	fs.StringVar(&e.namespace, "leader-election-namespace", ownNamespace(),
		"Namespace of the leader election Lease. Default: the manager's own (POD_NAMESPACE, else the service account's).")
	fs.DurationVar(&e.leaseDuration, "leader-election-lease-duration", managerconfig.DefaultLeaseDuration,
		"How long a leader's Lease is valid without renewal: how long others wait after a leader dies.")
	fs.DurationVar(&e.renewDeadline, "leader-election-renew-deadline", managerconfig.DefaultRenewDeadline,
		"How long the leader keeps trying to renew before it gives up leading.")
	fs.DurationVar(&e.retryPeriod, "leader-election-retry-period", managerconfig.DefaultRetryPeriod,
		"How often candidates try to acquire or renew the Lease; a released Lease is taken within 2.2 x this.")
}

func parseNamespacedName(s string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, fmt.Errorf("%q is not namespace/name", s)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
