// Package serving holds what Keyward's two binaries, the manager and the verifier, configure alike.
package serving

import (
	"crypto/tls"
	"flag"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// MetricsFlags are the command-line flags of the /metrics endpoint.
type MetricsFlags struct {
	BindAddress string
	Secure      bool
}

// Bind registers --metrics-bind-address and --metrics-secure on fs.
func (m *MetricsFlags) Bind(fs *flag.FlagSet) {
	fs.StringVar(&m.BindAddress, "metrics-bind-address", ":8443",
		"Address the metrics endpoint binds to, for example :8443 (HTTPS) or :8080 (HTTP). 0 disables it.")
	fs.BoolVar(&m.Secure, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticated and authorized by the API server (TokenReview, SubjectAccessReview).")
}

// Options returns the controller-runtime metrics server options for the flags.
func (m *MetricsFlags) Options() metricsserver.Options {
	opts := metricsserver.Options{
		BindAddress:   m.BindAddress,
		SecureServing: m.Secure,
		// HTTP/2 is disabled because of the HTTP/2 Stream Cancellation and Rapid Reset CVEs.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if m.Secure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}
