package serve

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	"k8s.io/utils/clock"
)

// Limits of the HTTP listener. A request whose request line and headers exceed MaxHeaderBytes is answered
// 431 by the server before any handler runs.
const (
	MaxHeaderBytes    = 16 << 10
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 90 * time.Second
	// MaxJSONBodyBytes caps the body of POST /v1/verify.
	MaxJSONBodyBytes = 16 << 10
)

// HTTPServer serves forward auth for ingress controllers and gateways and the JSON verification API.
//
//	ANY  /v1/auth[/...]  forward auth: the key from Authorization (Bearer or x-api-key) or X-API-Key; required
//	                     scopes from ?scope=a&scope=b, ?scopes=a,b or X-Keyward-Required-Scopes; accepted
//	                     namespaces from ?namespace=a,b or X-Keyward-Required-Namespace, and both from a
//	                     first path segment @namespace=a;scope=b (see RouteSegmentPrefix). Every list of
//	                     namespaces must hold, so each source can only narrow the others.
//	POST /v1/verify      {"key": "...", "scopes": ["..."], "namespaces": ["..."]} → {"valid", "code", ...}
type HTTPServer struct {
	Index    *verifier.Index
	Clock    clock.PassiveClock
	Answerer Answerer
	Metrics  *Metrics
	// Decisions, when set, logs the decisions.
	Decisions *DecisionLog
}

// Handler returns the routes. Every path below /v1/auth/ is forward auth as it comes, never cleaned or
// redirected: Envoy's HTTP ext_authz appends the original path, which may hold "//" or "..".
func (s *HTTPServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/verify", s.verifyJSON)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/v1/auth" || strings.HasPrefix(p, "/v1/auth/") {
			s.forwardAuth(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Server returns an http.Server for the handler on addr with the verifier's limits: header bytes, read,
// write and idle timeouts.
func (s *HTTPServer) Server(addr string) *http.Server {
	return &http.Server{
		Addr: addr, Handler: s.Handler(), MaxHeaderBytes: MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout, WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout,
	}
}

func (s *HTTPServer) forwardAuth(w http.ResponseWriter, r *http.Request) {
	start := s.Decisions.started()
	key := KeyFromHeaders(r.Header.Get)
	if key == "" {
		s.Metrics.observe(InterfaceForwardAuth, CodeMissing)
		s.Decisions.decide(InterfaceForwardAuth, verifier.Result{Code: CodeMissing}, verifier.Requirements{}, func() route { return forwardedRoute(r) }, "", start)
		w.Header().Set(HeaderCode, string(CodeMissing))
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	// The route's own requirements, pinned in the gateway's path prefix; what the client's query adds only
	// narrows them.
	req := verifier.Requirements{Query: r.URL.RawQuery, Route: routeSegment(r.URL.EscapedPath())}
	if v := r.Header.Values(HeaderRequiredScopes); len(v) > 0 {
		req.Scopes = v
	}
	if v := r.Header.Values(HeaderRequiredNamespace); len(v) > 0 {
		req.Namespaces = v
	}
	res := s.Index.VerifyRequest(r.Context(), key, req, s.Clock.Now())
	s.Metrics.observe(InterfaceForwardAuth, res.Code)
	s.Metrics.observeResult(res)
	s.Decisions.decide(InterfaceForwardAuth, res, req, func() route { return forwardedRoute(r) }, key, start)
	ans := s.Answerer.Answer(res)
	h := w.Header()
	for _, kv := range ans.Headers {
		h[kv[0]] = []string{kv[1]}
	}
	w.WriteHeader(ans.Status)
}

// forwardedRoute is where the request a gateway asks about was going: the X-Forwarded-Method, -Host and
// -Uri headers (Traefik, Envoy Gateway), nginx's X-Original-Method and X-Original-URI, else this request's
// own method, host and the path below /v1/auth (Envoy's HTTP ext_authz appends the original path there),
// without the route's requirements segment.
func forwardedRoute(r *http.Request) route {
	first := func(names ...string) string {
		for _, n := range names {
			if v := r.Header.Get(n); v != "" {
				return v
			}
		}
		return ""
	}
	rt := route{method: first("X-Forwarded-Method", "X-Original-Method"), host: first("X-Forwarded-Host"),
		path: first("X-Forwarded-Uri", "X-Original-URI"), header: r.Header.Get}
	if rt.method == "" {
		rt.method = r.Method
	}
	if rt.host == "" {
		rt.host = r.Host
	}
	if rt.path == "" {
		rt.path = strings.TrimPrefix(r.URL.EscapedPath(), "/v1/auth")
		if seg := routeSegment(r.URL.EscapedPath()); seg != "" {
			rt.path = strings.TrimPrefix(rt.path, "/"+seg)
		}
	}
	return rt
}

// RouteSegmentPrefix starts the path segment that carries a route's requirements in the forward-auth path:
// /v1/auth/@namespace=billing;scope=orders:read/... A gateway whose ext_authz appends the client's path to
// a configured prefix (Envoy's path_prefix, Envoy Gateway's extAuth.http.path, Istio's pathPrefix) sends
// it as the first segment, ahead of anything the client chose. Its grammar is strict
// (verifier.RouteSegmentGrammar): an unknown name, a missing '=' or a blank value is INVALID_REQUEST.
const RouteSegmentPrefix = "@"

// routeSegment returns the first path segment below /v1/auth/ when it is a route segment, with its '@', ""
// when it is not. A segment starting with an encoded '@' (%40) is returned as it is, so that Verify refuses
// it instead of taking a mistyped pin for part of the client's path. It does not allocate.
func routeSegment(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/auth/")
	if !ok || !(strings.HasPrefix(rest, RouteSegmentPrefix) || (len(rest) >= 3 && strings.EqualFold(rest[:3], "%40"))) {
		return ""
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	Key        string   `json:"key"`
	Scopes     []string `json:"scopes,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify. Name, namespace, scopes and expiry are given only for a
// live key (valid, or refused for scope, namespace or rate limit): a disabled or expired key is not described.
type VerifyResponse struct {
	Valid     bool               `json:"valid"`
	Code      verifier.Code      `json:"code"`
	KeyID     string             `json:"keyID,omitempty"`
	Name      string             `json:"name,omitempty"`
	Namespace string             `json:"namespace,omitempty"`
	Scopes    []string           `json:"scopes,omitempty"`
	ExpiresAt *time.Time         `json:"expiresAt,omitempty"`
	RateLimit *RateLimitResponse `json:"rateLimit,omitempty"`
	// Problem explains INVALID_REQUEST.
	Problem string `json:"problem,omitempty"`
}

// RateLimitResponse describes the APIKey's rate limit bucket.
type RateLimitResponse struct {
	Limit     int `json:"limit"`
	Remaining int `json:"remaining"`
	// Reset is the number of seconds until the bucket is full again.
	Reset int `json:"reset"`
}

var errTrailingData = errors.New("data after the JSON object")

func decodeOne(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errTrailingData
	}
	return nil
}

func (s *HTTPServer) verifyJSON(w http.ResponseWriter, r *http.Request) {
	start := s.Decisions.started()
	var req VerifyRequest
	if err := decodeOne(http.MaxBytesReader(w, r.Body, MaxJSONBodyBytes), &req); err != nil {
		http.Error(w, `the body must be one JSON object: {"key": "...", "scopes": ["..."], "namespaces": ["..."]}`, http.StatusBadRequest)
		return
	}
	requirements := verifier.Requirements{Scopes: req.Scopes, Namespaces: req.Namespaces}
	res := s.Index.VerifyRequest(r.Context(), strings.TrimSpace(req.Key), requirements, s.Clock.Now())
	s.Metrics.observe(InterfaceJSON, res.Code)
	s.Metrics.observeResult(res)
	// The caller is a service asking about a request of its own: no route to record, only its address.
	s.Decisions.decide(InterfaceJSON, res, requirements, func() route { return route{header: r.Header.Get} }, "", start)
	out := VerifyResponse{Valid: res.Valid(), Code: res.Code, KeyID: res.KeyID, Problem: res.Problem}
	if res.Identified() {
		out.Name, out.Namespace, out.Scopes = res.Name, res.Namespace, res.Scopes
		t := res.ExpiresAt.UTC()
		out.ExpiresAt = &t
		if rl := res.RateLimit; rl != nil {
			out.RateLimit = &RateLimitResponse{Limit: rl.Limit, Remaining: rl.Remaining, Reset: int((rl.Reset + time.Second - 1) / time.Second)}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
