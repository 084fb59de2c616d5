package serve

import (
	"crypto/tls"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// ReloadingTLS returns a TLS configuration for the HTTP and gRPC listeners that serves the certificate in
// certFile and keyFile, and the watcher that reloads them when they change on disk (a renewed
// cert-manager Secret mounted as a volume, for instance). Start the watcher (it is a manager.Runnable).
func ReloadingTLS(certFile, keyFile string) (*tls.Config, *certwatcher.CertWatcher, error) {
	w, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the TLS certificate %s: %w", certFile, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: w.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}, w, nil
}
