// Command verifier answers whether presented API keys are valid, for gateways (HTTP forward auth, Envoy
// ext_authz over gRPC) and services (JSON API). It watches APIKeys, never Secrets, and scales horizontally:
// every replica holds the full index.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/serving"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

func main() {
	var (
		httpAddr, grpcAddr, probeAddr string
		metricsFlags                  serving.MetricsFlags
		flushInterval                 time.Duration
		rateLimitedStatus             int
	)
	flag.StringVar(&httpAddr, "http-bind-address", ":8080", "Address of forward auth (/v1/auth) and the JSON API (/v1/verify).")
	flag.StringVar(&grpcAddr, "grpc-bind-address", ":9001", "Address of Envoy ext_authz (envoy.service.auth.v3.Authorization). Empty disables it.")
	metricsFlags.Bind(flag.CommandLine)
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.DurationVar(&flushInterval, "usage-flush-interval", verifier.DefaultUsageFlushInterval, "How often usage is written to status.usage.")
	flag.IntVar(&rateLimitedStatus, "rate-limited-status", http.StatusTooManyRequests,
		"HTTP status for rate-limited requests: 429, or 403 for proxies that turn other codes into 500s.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(httpAddr, grpcAddr, probeAddr, metricsFlags, flushInterval, rateLimitedStatus); err != nil {
		ctrl.Log.Error(err, "The verifier stopped with an error")
		os.Exit(1)
	}
}

func run(httpAddr, grpcAddr, probeAddr string, metricsFlags serving.MetricsFlags, flushInterval time.Duration, rateLimitedStatus int) error {
	if rateLimitedStatus != http.StatusTooManyRequests && rateLimitedStatus != http.StatusForbidden {
		return fmt.Errorf("--rate-limited-status must be 429 or 403, not %d", rateLimitedStatus)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))
	ctx := ctrl.SetupSignalHandler()
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme: scheme, Metrics: metricsFlags.Options(), HealthProbeBindAddress: probeAddr,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ix := verifier.NewIndex()
	synced, err := ix.Watch(ctx, mgr.GetCache())
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("index-synced", verifier.SyncedCheck(synced)); err != nil {
		return err
	}

	m := verifier.NewMetrics(metrics.Registry)
	answerer := verifier.Answerer{RateLimitedStatus: rateLimitedStatus}
	httpSrv := &http.Server{
		Addr:              httpAddr,
		Handler:           (&verifier.HTTPServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m}).Handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return serveHTTP(ctx, httpSrv) })); err != nil {
		return err
	}
	if grpcAddr != "" {
		g := grpc.NewServer()
		authv3.RegisterAuthorizationServer(g, &verifier.ExtAuthzServer{Index: ix, Clock: clock.RealClock{}, Answerer: answerer, Metrics: m})
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return serveGRPC(ctx, g, grpcAddr) })); err != nil {
			return err
		}
	}
	reporter := &verifier.UsageReporter{Index: ix, Client: mgr.GetClient(), Interval: flushInterval, Log: ctrl.Log.WithName("usage")}
	if err := mgr.Add(reporter); err != nil {
		return err
	}
	ctrl.Log.Info("Starting the verifier", "http", httpAddr, "grpc", grpcAddr)
	return mgr.Start(ctx)
}

// serveHTTP serves until ctx ends, then drains in-flight requests for up to 10 seconds.
func serveHTTP(ctx context.Context, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
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
