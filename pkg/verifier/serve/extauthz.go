package serve

import (
	"context"
	"net/http"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"k8s.io/utils/clock"
)

// Per-route ext_authz context extensions, as alternatives to the X-Keyward-Required-* headers.
const (
	// ContextExtensionScopes lists required scopes (comma-separated).
	ContextExtensionScopes = "keyward-required-scopes"
	// ContextExtensionNamespaces lists the namespaces keys may come from (comma-separated).
	ContextExtensionNamespaces = "keyward-required-namespaces"
)

// Limits of the gRPC listener: a CheckRequest over MaxGRPCMessageBytes is refused (ResourceExhausted) before
// it is decoded; streams per connection are bounded; clients that ping too often are disconnected.
const (
	MaxGRPCMessageBytes  = 64 << 10
	MaxConcurrentStreams = 256
)

// NewGRPCServer returns a gRPC server with the verifier's limits and s registered, plus any extra options
// (TLS credentials).
func NewGRPCServer(s *ExtAuthzServer, extra ...grpc.ServerOption) *grpc.Server {
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxGRPCMessageBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute, Time: time.Minute, Timeout: 20 * time.Second}),
	}, extra...)
	g := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(g, s)
	return g
}

// ExtAuthzServer implements Envoy's envoy.service.auth.v3.Authorization/Check with the same decisions and
// headers as forward auth.
type ExtAuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	Index    *verifier.Index
	Clock    clock.PassiveClock
	Answerer Answerer
	Metrics  *Metrics
	// Decisions, when set, logs the decisions.
	Decisions *DecisionLog
}

// Check verifies the key in the request's headers.
func (s *ExtAuthzServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.Decisions.started()
	attrs := req.GetAttributes()
	httpAttrs := attrs.GetRequest().GetHttp()
	headers := httpAttrs.GetHeaders() // Envoy lowercases header names
	get := func(name string) string { return headers[toLowerASCII(name)] }
	rt := func() route {
		return route{method: httpAttrs.GetMethod(), host: httpAttrs.GetHost(), path: httpAttrs.GetPath(), header: get}
	}
	key := KeyFromHeaders(get)
	if key == "" {
		s.Metrics.observe(InterfaceExtAuthz, CodeMissing)
		s.Decisions.decide(InterfaceExtAuthz, verifier.Result{Code: CodeMissing}, verifier.Requirements{}, rt, "", start)
		return denied(Answer{Status: http.StatusUnauthorized, Headers: [][2]string{{HeaderCode, string(CodeMissing)}}}), nil
	}
	// Each source that is present counts, blank or not: a present but blank list of namespaces accepts none.
	var requirements verifier.Requirements
	ext := attrs.GetContextExtensions()
	present := func(list []string, m map[string]string, name string) []string {
		if v, ok := m[name]; ok {
			return append(list, v)
		}
		return list
	}
	requirements.Scopes = present(present(nil, headers, headerScopesLower), ext, ContextExtensionScopes)
	requirements.Namespaces = present(present(nil, headers, headerNamespaceLower), ext, ContextExtensionNamespaces)
	res := s.Index.VerifyRequest(ctx, key, requirements, s.Clock.Now())
	s.Metrics.observe(InterfaceExtAuthz, res.Code)
	s.Metrics.observeResult(res)
	s.Decisions.decide(InterfaceExtAuthz, res, requirements, rt, key, start)
	ans := s.Answerer.Answer(res)
	if !ans.Allowed() {
		return denied(ans), nil
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headerOptions(ans.Headers)}},
	}, nil
}

// The required-scopes and -namespace headers as Envoy sends them, lowercased.
var (
	headerScopesLower    = toLowerASCII(HeaderRequiredScopes)
	headerNamespaceLower = toLowerASCII(HeaderRequiredNamespace)
)

func denied(ans Answer) *authv3.CheckResponse {
	code := codes.PermissionDenied
	switch ans.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusBadRequest:
		code = codes.InvalidArgument
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(ans.Status)},
			Headers: headerOptions(ans.Headers),
		}},
	}
}

func headerOptions(h [][2]string) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, len(h))
	for _, kv := range h {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv[0], Value: kv[1]},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return out
}

func toLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
