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
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/serving"
	"github.com/keyward-dev/keyward/internal/version"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// options are the verifier's flags.
type options struct {
	httpAddr, grpcAddr, probeAddr string
	metrics                       serving.MetricsFlags
	flushInterval                 time.Duration
	rateLimitedStatus             int
	namespaces, namespaceSelector string
	tlsCert, tlsKey               string
	redisURL, redisFailure        string
	peersService                  string
}

func main() {
	var o options
	flag.StringVar(&o.httpAddr, "http-bind-address", ":8080", "Address of forward auth (/v1/auth) and the JSON API (/v1/verify).")
	flag.StringVar(&o.grpcAddr, "grpc-bind-address", ":9001", "Address of Envoy ext_authz (envoy.service.auth.v3.Authorization). Empty disables it.")
	o.metrics.Bind(flag.CommandLine)
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.DurationVar(&o.flushInterval, "usage-flush-interval", verifier.DefaultUsageFlushInterval, "How often usage is written to status.usage.")
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

func run(o options) error {
	if o.rateLimitedStatus != http.StatusTooManyRequests && o.rateLimitedStatus != http.StatusForbidden {
		return fmt.Errorf("--rate-limited-status must be 429 or 403, not %d", o.rateLimitedStatus)
	}
	if o.redisFailure != "open" && o.redisFailure != "closed" {
		return fmt.Errorf("--rate-limit-redis-failure must be open or closed, not %q", o.redisFailure)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	selector, err := labels.Parse(o.namespaceSelector)
	if err != nil {
		return fmt.Errorf("--namespace-selector: %w", err)
	}
	var allowed []string
	if o.namespaces != "" {
		for _, ns := range strings.Split(o.namespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				allowed = append(allowed, ns)
			}
		}
	}
	podNamespace := os.Getenv("POD_NAMESPACE")
	if o.peersService != "" && podNamespace == "" {
		return errors.New("--rate-limit-peers-service needs POD_NAMESPACE (set it from the downward API)")
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(discoveryv1.AddToScheme(scheme))
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{}}
	if allowed != nil {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range allowed {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	if o.peersService != "" {
		cacheOpts.ByObject[&discoveryv1.EndpointSlice{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{podNamespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: o.peersService}),
		}
	}
	ctx := ctrl.SetupSignalHandler()
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme: scheme, Cache: cacheOpts, Metrics: o.metrics.Options(), HealthProbeBindAddress: o.probeAddr,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ix := verifier.NewIndex()
	ix.SetLogger(ctrl.Log.WithName("index"))
	synced, err := ix.Watch(ctx, mgr.GetCache())
	if err != nil {
		return err
	}
	if o.namespaceSelector != "" {
		nsSynced, err := ix.TrustNamespacesMatching(ctx, mgr.GetCache(), selector, allowed)
		if err != nil {
			return err
		}
		apiKeysSynced := synced
		synced = func() bool { return apiKeysSynced() && nsSynced() }
	} else if allowed != nil {
		ix.TrustNamespaces(allowed)
	}
	m := verifier.NewMetrics(metrics.Registry)
	switch {
	case o.redisURL != "":
		l, err := verifier.NewRedisLimiter(o.redisURL)
		if err != nil {
			return err
		}
		defer l.Close()
		ix.UseSharedLimiter(l, o.redisFailure == "open")
		metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyward_verifier_rate_limit_store_errors_total",
			Help: "Rate-limit decisions that Redis could not make (answered per --rate-limit-redis-failure).",
		}, func() float64 { return float64(ix.SharedLimiterErrors()) }))
	case o.peersService != "":
		peersSynced, err := ix.DividePeersBy(ctx, mgr.GetCache(), podNamespace, o.peersService)
		if err != nil {
			return err
		}
		// Until the replicas are counted each would allow the whole limit: not ready before.
		indexSynced := synced
		synced = func() bool { return indexSynced() && peersSynced() }
	}
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
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("index-synced", verifier.SyncedCheck(synced)); err != nil {
		return err
	}

	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		var watcher manager.Runnable
		if tlsConfig, watcher, err = verifier.ReloadingTLS(o.tlsCert, o.tlsKey); err != nil {
			return err
		}
		if err := mgr.Add(watcher); err != nil {
			return err
		}
	}
	answerer := verifier.Answerer{RateLimitedStatus: o.rateLimitedStatus}
	httpSrv := (&verifier.HTTPServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m}).Server(o.httpAddr)
	httpSrv.TLSConfig = tlsConfig
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return serveHTTP(ctx, httpSrv) })); err != nil {
		return err
	}
	if o.grpcAddr != "" {
		var creds []grpc.ServerOption
		if tlsConfig != nil {
			creds = append(creds, grpc.Creds(credentials.NewTLS(tlsConfig)))
		}
		g := verifier.NewGRPCServer(&verifier.ExtAuthzServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m}, creds...)
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return serveGRPC(ctx, g, o.grpcAddr) })); err != nil {
			return err
		}
	}
	reporter := &verifier.UsageReporter{Index: ix, Client: mgr.GetClient(), Interval: o.flushInterval, Log: ctrl.Log.WithName("usage")}
	if err := mgr.Add(reporter); err != nil {
		return err
	}
	ctrl.Log.Info("Starting the verifier", "http", o.httpAddr, "grpc", o.grpcAddr, "tls", tlsConfig != nil,
		"namespaces", o.namespaces, "namespaceSelector", o.namespaceSelector, "sharedRateLimits", o.redisURL != "")
	return mgr.Start(ctx)
}

// serveHTTP serves until ctx ends, then drains in-flight requests for up to 10 seconds.
func serveHTTP(ctx context.Context, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ListenAndServeTLS("", "") // certificates come from TLSConfig.GetCertificate
		} else {
			errc <- srv.ListenAndServe()
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", srv.Addr, err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

// serveGRPC serves until ctx ends, then stops gracefully.
func serveGRPC(ctx context.Context, g *grpc.Server, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for gRPC on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving gRPC on %s: %w", addr, err)
	case <-ctx.Done():
		g.GracefulStop()
		return nil
	}
}
