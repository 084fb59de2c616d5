// Package serve puts pkg/verifier's index behind the interfaces cmd/verifier serves and feeds it from a
// cluster: HTTP forward auth and the JSON API, Envoy ext_authz over gRPC, TLS that reloads, rate limits
// shared through Redis or divided among replicas, the watches of APIKeys and trusted namespaces, and the
// usage reporter. It pulls in what the core must not: gRPC, Envoy's API, Redis, Prometheus and
// controller-runtime's caches and clients.
package serve
