// Command verifier answers whether presented API keys are valid, for gateways (HTTP forward auth, Envoy
// ext_authz over gRPC) and services (JSON API). It watches APIKeys, never Secrets, and scales horizontally:
// every replica holds the full index.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/leakreport"
	"github.com/keyward-dev/keyward/internal/serving"
	"github.com/keyward-dev/keyward/internal/version"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

// options are the verifier's flags.
type options struct {
	httpAddr, grpcAddr, probeAddr string
	// leakAddr, leakKeysURL and leakPerMinute run the leak receiver (--leak-reports-*).
	leakAddr, leakKeysURL         string
	leakPerMinute                 float64
	metrics                       serving.MetricsFlags
	flushInterval                 time.Duration
	shutdownDelay                 time.Duration
	rateLimitedStatus             int
	namespaces, namespaceSelector string
	tlsCert, tlsKey               string
	redisURL, redisFailure        string
	peersService                  string
	perAPIKeyMetrics              bool
	decisionLog                   string
	decisionLogOptions            serve.DecisionLogOptions
}

func main() {
	var o options
	flag.StringVar(&o.httpAddr, "http-bind-address", ":8080", "Address of forward auth (/v1/auth) and the JSON API (/v1/verify).")
	flag.StringVar(&o.grpcAddr, "grpc-bind-address", ":9001", "Address of Envoy ext_authz (envoy.service.auth.v3.Authorization). Empty disables it.")
	o.metrics.Bind(flag.CommandLine)
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.DurationVar(&o.shutdownDelay, "shutdown-delay", 5*time.Second,
		"How long a terminating verifier keeps answering before it stops listening: the time kube-proxy and gateways take to stop sending it new requests.")
	flag.DurationVar(&o.flushInterval, "usage-flush-interval", serve.DefaultUsageFlushInterval, "How often usage is written to status.usage.")
	flag.IntVar(&o.rateLimitedStatus, "rate-limited-status", http.StatusTooManyRequests,
		"HTTP status for rate-limited requests: 429, or 403 for proxies that turn other codes into 500s.")
	flag.StringVar(&o.namespaces, "namespaces", "", "Comma-separated namespaces whose APIKeys this verifier trusts (and watches). Empty: all.")
	flag.StringVar(&o.namespaceSelector, "namespace-selector", "",
		"Label selector of the namespaces whose APIKeys this verifier trusts, followed as labels change. Empty: all.")
	flag.StringVar(&o.tlsCert, "tls-cert-file", "", "PEM certificate for the HTTP and gRPC listeners; reloaded when it changes. Empty: plain text.")
	flag.StringVar(&o.tlsKey, "tls-key-file", "", "PEM private key for --tls-cert-file.")
	flag.StringVar(&o.redisURL, "rate-limit-redis", "",
		"redis://host:port/db (or rediss://) of a Redis shared by every replica, so a declared rate limit holds across them.")
	flag.StringVar(&o.redisFailure, "rate-limit-redis-failure", "open",
		"When Redis cannot answer: open (allow the request; authentication still applies) or closed (answer RATE_LIMITED).")
	flag.StringVar(&o.peersService, "rate-limit-peers-service", "",
		"Without Redis: the verifier's own Service (in POD_NAMESPACE); each replica allows 1/N of every limit, N its ready endpoints.")
	flag.BoolVar(&o.perAPIKeyMetrics, "per-apikey-metrics", false,
		"Export keyward_verifier_apikey_verifications_total{namespace,name,code}: a series per APIKey and code, so off by default.")
	flag.StringVar(&o.decisionLog, "decision-log", "stdout",
		"Where the decision log's JSON lines go: stdout, off, or a file path (appended to).")
	flag.Float64Var(&o.decisionLogOptions.ValidSample, "decision-log-valid-sample", serve.DefaultDecisionLogValidSample,
		"Fraction (0 to 1) of valid decisions the decision log records (1, all of them, by default: a complete audit trail); rejections are recorded within the budgets below.")
	flag.Float64Var(&o.decisionLogOptions.RejectionsPerSecond, "decision-log-rejections-per-second", serve.DefaultDecisionLogRejectionsPerSecond,
		"Most rejections of known keys the decision log records per second in each namespace; those over it are counted in keyward_verifier_decision_log_dropped_total{category=\"known_key\"}.")
	flag.Float64Var(&o.decisionLogOptions.UnknownPerSecond, "decision-log-unknown-per-second", serve.DefaultDecisionLogUnknownPerSecond,
		"Most decisions on unknown, malformed or missing keys the decision log records per second; those over it are counted in keyward_verifier_decision_log_dropped_total{category=\"unknown_key\"}.")
	flag.IntVar(&o.decisionLogOptions.Buffer, "decision-log-buffer", serve.DefaultDecisionLogBuffer,
		"Decisions that may wait for a slow log sink; when full, decisions are counted instead of logged and never wait.")
	flag.StringVar(&o.decisionLogOptions.ClientHeader, "decision-log-client-header", "",
		"Header that a proxy you trust sets to the client's address (X-Forwarded-For, X-Real-IP, ...); its last element is logged. Empty: none.")
	flag.StringVar(&o.leakAddr, "leak-reports-bind-address", "",
		"Address of the leak receiver ("+serve.LeakReportsPath+", GitHub's secret scanning reports). Empty disables it. "+
			"Run it under an identity bound to keyward-leak-receiver, not the verifier's.")
	flag.StringVar(&o.leakKeysURL, "leak-reports-keys-url", leakreport.DefaultKeysURL, "Where the keys that sign leak reports are published.")
	flag.Float64Var(&o.leakPerMinute, "leak-reports-per-minute", 60, "How many verified leak reports are acted on per minute at most (a burst of as many).")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("verifier"))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(o); err != nil {
		ctrl.Log.Error(err, "The verifier stopped with an error")
		os.Exit(1)
	}
}

// run starts the verifier: check the flags, build the manager and its cache, feed the index, set up rate
// limits, readiness and metrics, then the listeners, and serve until a signal.
func run(o options) error {
	cfg, err := o.check()
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	// While the API server is away the index keeps answering as last seen; the gauge says so.
	contact := &serve.APIServerContact{Log: ctrl.Log.WithName("api-server")}
	metrics.Registry.MustRegister(contact.Gauge())
	restConfig := ctrl.GetConfigOrDie()
	restConfig.Wrap(contact.Wrap)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: newScheme(), Cache: o.cacheOptions(cfg), Metrics: o.metrics.Options(), HealthProbeBindAddress: o.probeAddr,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ix := verifier.NewIndex()
	ix.SetLogger(ctrl.Log.WithName("index"))
	synced, err := feedIndex(ctx, ix, mgr, o, cfg)
	if err != nil {
		return err
	}
	synced, closeLimiter, err := o.setUpRateLimits(ctx, ix, mgr, cfg, synced)
	if err != nil {
		return err
	}
	defer closeLimiter() // after mgr.Start returns: the listeners have drained their requests by then
	registerFailureMetrics(ix)
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("index-synced", serve.SyncedCheck(synced)); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	stopping := newShutdown(o.shutdownDelay, clock.RealClock{})
	if err := mgr.AddReadyzCheck("not-stopping", stopping.readyz); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	if err := o.addListeners(ctx, mgr, ix, stopping); err != nil {
		return err
	}
	ctrl.Log.Info("Starting the verifier", "http", o.httpAddr, "grpc", o.grpcAddr, "tls", o.tlsCert != "",
		"namespaces", o.namespaces, "namespaceSelector", o.namespaceSelector, "sharedRateLimits", o.redisURL != "")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the verifier: %w", err)
	}
	return nil
}

// checked is what the flags say once checked.
type checked struct {
	selector     labels.Selector
	allowed      []string // --namespaces; nil: all
	podNamespace string
}

// check validates the flags that go together or take one of a few values.
func (o options) check() (checked, error) {
	var c checked
	switch {
	case o.rateLimitedStatus != http.StatusTooManyRequests && o.rateLimitedStatus != http.StatusForbidden:
		return c, fmt.Errorf("--rate-limited-status must be 429 or 403, not %d", o.rateLimitedStatus)
	case o.redisFailure != "open" && o.redisFailure != "closed":
		return c, fmt.Errorf("--rate-limit-redis-failure must be open or closed, not %q", o.redisFailure)
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return c, errors.New("--tls-cert-file and --tls-key-file go together")
	}
	var err error
	if c.selector, err = labels.Parse(o.namespaceSelector); err != nil {
		return c, fmt.Errorf("--namespace-selector: %w", err)
	}
	if o.namespaces != "" {
		for _, ns := range strings.Split(o.namespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				c.allowed = append(c.allowed, ns)
			}
		}
	}
	c.podNamespace = os.Getenv("POD_NAMESPACE")
	if o.peersService != "" && c.podNamespace == "" {
		return c, errors.New("--rate-limit-peers-service needs POD_NAMESPACE (set it from the downward API)")
	}
	return c, nil
}

func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(discoveryv1.AddToScheme(scheme))
	return scheme
}

// cacheOptions watches the trusted namespaces only (all without --namespaces), and only the verifier's own
// EndpointSlices.
func (o options) cacheOptions(c checked) cache.Options {
	opts := serve.CacheOptions()
	if c.allowed != nil {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range c.allowed {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	if o.peersService != "" {
		opts.ByObject[&discoveryv1.EndpointSlice{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{c.podNamespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: o.peersService}),
		}
	}
	return opts
}

// feedIndex watches APIKeys and the trusted namespaces; synced reports both listed.
func feedIndex(ctx context.Context, ix *verifier.Index, mgr manager.Manager, o options, c checked) (synced func() bool, err error) {
	apiKeysSynced, err := serve.Watch(ctx, ix, mgr.GetCache())
	if err != nil {
		return nil, fmt.Errorf("watching APIKeys: %w", err)
	}
	switch {
	case o.namespaceSelector != "":
		nsSynced, err := serve.TrustNamespacesMatching(ctx, ix, mgr.GetCache(), c.selector, c.allowed)
		if err != nil {
			return nil, fmt.Errorf("following --namespace-selector: %w", err)
		}
		return func() bool { return apiKeysSynced() && nsSynced() }, nil
	case c.allowed != nil:
		ix.TrustNamespaces(c.allowed)
	}
	return apiKeysSynced, nil
}

// setUpRateLimits shares limits through Redis, or divides them among the replicas of the verifier's
// Service, in which case readiness also waits for the replicas to be counted.
func (o options) setUpRateLimits(ctx context.Context, ix *verifier.Index, mgr manager.Manager, c checked,
	synced func() bool) (_ func() bool, closeLimiter func(), _ error) {
	switch {
	case o.redisURL != "":
		l, err := serve.NewRedisLimiter(o.redisURL)
		if err != nil {
			return nil, nil, err
		}
		ix.UseSharedLimiter(l, o.redisFailure == "open")
		metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyward_verifier_rate_limit_store_errors_total",
			Help: "Rate-limit decisions that Redis could not make (answered per --rate-limit-redis-failure).",
		}, func() float64 { return float64(ix.SharedLimiterErrors()) }))
		return synced, func() { _ = l.Close() }, nil
	case o.peersService != "":
		peersSynced, err := serve.DividePeersBy(ctx, ix, mgr.GetCache(), c.podNamespace, o.peersService)
		if err != nil {
			return nil, nil, fmt.Errorf("counting the replicas of %s: %w", o.peersService, err)
		}
		// Until the replicas are counted each would allow the whole limit: not ready before.
		return func() bool { return synced() && peersSynced() }, func() {}, nil
	}
	return synced, func() {}, nil
}

// registerFailureMetrics counts what the index refused instead of guessing.
func registerFailureMetrics(ix *verifier.Index) {
	for reason, count := range map[string]func() int64{
		"invalid_rate_limit":   func() int64 { return ix.Failures().InvalidRateLimits },
		"namespace_list_error": func() int64 { return ix.Failures().NamespaceListErrors },
		"peer_list_error":      func() int64 { return ix.Failures().PeerListErrors },
	} {
		metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keyward_verifier_fail_closed_total",
			Help:        "What the verifier could not know and refused instead of guessing, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(count()) }))
	}
}

// addListeners adds the HTTP listener (forward auth and JSON), the gRPC one (ext_authz) and the usage
// reporter, over TLS when configured. They stop together, after stopping's lame-duck period.
func (o options) addListeners(ctx context.Context, mgr manager.Manager, ix *verifier.Index, stopping *shutdown) error {
	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		var watcher manager.Runnable
		var err error
		if tlsConfig, watcher, err = serve.ReloadingTLS(o.tlsCert, o.tlsKey); err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		if err := mgr.Add(watcher); err != nil {
			return fmt.Errorf("watching the TLS certificate: %w", err)
		}
	}
	m := serve.NewMetrics(metrics.Registry)
	if o.perAPIKeyMetrics {
		m.CountPerAPIKey(metrics.Registry)
		if err := m.ForgetDeletedAPIKeys(ctx, mgr.GetCache()); err != nil {
			return err
		}
	}
	answerer := serve.Answerer{RateLimitedStatus: o.rateLimitedStatus}
	decisions, err := o.openDecisionLog(mgr)
	if err != nil {
		return err
	}
	httpSrv := (&serve.HTTPServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m, Decisions: decisions}).Server(o.httpAddr)
	httpSrv.TLSConfig = tlsConfig
	if err := mgr.Add(listening("HTTP", o.httpAddr, func(ctx context.Context, ln net.Listener) error {
		return serveHTTP(ctx, httpSrv, ln, stopping)
	})); err != nil {
		return fmt.Errorf("adding the HTTP listener: %w", err)
	}
	if o.grpcAddr != "" {
		var creds []grpc.ServerOption
		if tlsConfig != nil {
			creds = append(creds, grpc.Creds(credentials.NewTLS(tlsConfig)))
		}
		g := serve.NewGRPCServer(&serve.ExtAuthzServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m, Decisions: decisions}, creds...)
		if err := mgr.Add(listening("gRPC", o.grpcAddr, func(ctx context.Context, ln net.Listener) error {
			return serveGRPC(ctx, g, ln, stopping)
		})); err != nil {
			return fmt.Errorf("adding the gRPC listener: %w", err)
		}
	}
	if o.leakAddr != "" {
		reports, tokens := leakreport.NewCounters()
		metrics.Registry.MustRegister(reports, tokens)
		mux := http.NewServeMux()
		mux.Handle(serve.LeakReportsPath, &leakreport.Handler{
			Keys: &leakreport.PublicKeys{URL: o.leakKeysURL, Client: &http.Client{Timeout: 10 * time.Second}},
			Responder: &serve.LeakRecorder{Index: ix, Reader: mgr.GetAPIReader(), Client: mgr.GetClient(), Reporter: serve.GitHubReporter, Now: time.Now,
				Log: ctrl.Log.WithName("leaks")},
			Limiter: rate.NewLimiter(rate.Limit(o.leakPerMinute/60), max(1, int(o.leakPerMinute))),
			Log:     ctrl.Log.WithName("leaks"), Reports: reports, Tokens: tokens})
		leakSrv := &http.Server{Addr: o.leakAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			MaxHeaderBytes: 16 << 10, TLSConfig: tlsConfig}
		if err := mgr.Add(listening("leak reports", o.leakAddr, func(ctx context.Context, ln net.Listener) error {
			return serveHTTP(ctx, leakSrv, ln, stopping)
		})); err != nil {
			return fmt.Errorf("adding the leak receiver: %w", err)
		}
	}
	reporter := &serve.UsageReporter{Index: ix, Client: mgr.GetClient(), Interval: o.flushInterval, Log: ctrl.Log.WithName("usage")}
	if err := mgr.Add(reporter); err != nil {
		return fmt.Errorf("adding the usage reporter: %w", err)
	}
	return nil
}

// listening is a runnable that listens on addr when the manager starts and serves on it.
func listening(what, addr string, serve func(context.Context, net.Listener) error) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening for %s on %s: %w", what, addr, err)
		}
		return serve(ctx, ln)
	})
}

// openDecisionLog starts the decision log that --decision-log names; nil when it is off.
func (o options) openDecisionLog(mgr manager.Manager) (*serve.DecisionLog, error) {
	var out io.Writer
	switch o.decisionLog {
	case "off", "":
		return nil, nil
	case "stdout":
		out = os.Stdout
	default:
		f, err := os.OpenFile(o.decisionLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--decision-log: %w", err)
		}
		out = f
	}
	if v := o.decisionLogOptions.ValidSample; v < 0 || v > 1 {
		return nil, fmt.Errorf("--decision-log-valid-sample must be between 0 and 1, not %v", v)
	}
	l := serve.NewDecisionLog(out, o.decisionLogOptions)
	metrics.Registry.MustRegister(l.Collectors()...)
	if err := mgr.Add(l); err != nil {
		return nil, fmt.Errorf("adding the decision log: %w", err)
	}
	return l, nil
}

// shutdown is a terminating verifier's lame-duck period. A deleted Pod gets SIGTERM while its address may
// still be in kube-proxy's rules and in gateways' connection pools: a verifier that stopped listening at once
// would fail requests that the other replica could answer. It keeps answering for delay, reporting not
// ready, and only then stops its listeners.
type shutdown struct {
	delay   time.Duration
	clock   clock.Clock
	once    sync.Once
	started atomic.Bool
	over    chan struct{}
}

func newShutdown(delay time.Duration, c clock.Clock) *shutdown {
	return &shutdown{delay: delay, clock: c, over: make(chan struct{})}
}

// readyz fails once the verifier is stopping.
func (s *shutdown) readyz(*http.Request) error {
	if s.started.Load() {
		return errors.New("stopping")
	}
	return nil
}

// wait starts the lame-duck period on the first call and returns when it is over; every listener calls it
// when its context ends, and all stop together.
func (s *shutdown) wait() {
	s.once.Do(func() {
		s.started.Store(true)
		after := s.clock.After(s.delay)
		go func() {
			<-after
			close(s.over)
		}()
	})
	<-s.over
}

// serveHTTP serves until ctx ends and the lame-duck period is over, then drains in-flight requests for up to
// 10 seconds.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener, stopping *shutdown) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // certificates come from TLSConfig.GetCertificate
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		stopping.wait()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

// serveGRPC serves until ctx ends and the lame-duck period is over, then stops gracefully.
func serveGRPC(ctx context.Context, g *grpc.Server, ln net.Listener, stopping *shutdown) error {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving gRPC on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		stopping.wait()
		g.GracefulStop()
		return nil
	}
}
