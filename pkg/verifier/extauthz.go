package verifier

import (
	"context"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"k8s.io/utils/clock"
)

// ContextExtensionScopes is the ext_authz per-route context extension that lists required scopes
// (comma-separated), as an alternative to the X-Keyward-Required-Scopes header.
const ContextExtensionScopes = "keyward-required-scopes"

// ExtAuthzServer implements Envoy's envoy.service.auth.v3.Authorization/Check with the same decisions and
// headers as forward auth.
type ExtAuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	Index    *Index
	Clock    clock.PassiveClock
	Answerer Answerer
	Metrics  *Metrics
}

// Check verifies the key in the request's headers.
func (s *ExtAuthzServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	headers := attrs.GetRequest().GetHttp().GetHeaders() // Envoy lowercases header names
	get := func(name string) string { return headers[toLowerASCII(name)] }
	key := KeyFromHeaders(get)
	if key == "" {
		s.Metrics.observe(InterfaceExtAuthz, CodeMissing)
		return denied(Answer{Status: http.StatusUnauthorized, Headers: [][2]string{{HeaderCode, string(CodeMissing)}}}), nil
	}
	scopes := SplitScopes(get(HeaderRequiredScopes))
	scopes = append(scopes, SplitScopes(attrs.GetContextExtensions()[ContextExtensionScopes])...)
	res := s.Index.Verify(key, scopes, s.Clock.Now())
	s.Metrics.observe(InterfaceExtAuthz, res.Code)
	ans := s.Answerer.Answer(res)
	if !ans.Allowed() {
		return denied(ans), nil
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headerOptions(ans.Headers)}},
	}, nil
}

func denied(ans Answer) *authv3.CheckResponse {
	code := codes.PermissionDenied
	if ans.Status == http.StatusUnauthorized {
		code = codes.Unauthenticated
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
