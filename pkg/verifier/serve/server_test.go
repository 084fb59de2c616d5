package serve

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/keyward-dev/keyward/internal/testenv"

	"github.com/keyward-dev/keyward/pkg/verifier"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	clocktesting "k8s.io/utils/clock/testing"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func serverFixture(t testing.TB) (*HTTPServer, *ExtAuthzServer, string, *prometheus.Registry) {
	key := mintKey(t, "ord")
	ix := verifier.NewIndex()
	ix.Upsert(apiKey("billing", "orders", key, t0.Add(time.Hour), nil, withScopes("orders:*"),
		func(ak *keywardv1alpha1.APIKey) {
			ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 3, Period: "1m"}
		}))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	clk := clocktesting.NewFakePassiveClock(t0)
	return &HTTPServer{Index: ix, Clock: clk, Metrics: m}, &ExtAuthzServer{Index: ix, Clock: clk, Metrics: m}, key, reg
}

func TestForwardAuthAnswersAndPassesIdentityUpstream(t *testing.T) {
	srv, _, key, reg := serverFixture(t)
	h := srv.Handler()
	cases := []struct {
		name, target string
		headers      map[string]string
		want         int
		code         verifier.Code
	}{
		{"bearer", "/v1/auth?scope=orders:read", map[string]string{"Authorization": "Bearer " + key}, 200, verifier.CodeValid},
		{"x-api-key scheme with scopes list", "/v1/auth?scopes=orders:read,orders:write", map[string]string{"Authorization": "x-api-key " + key}, 200, verifier.CodeValid},
		{"X-API-Key header, Envoy path suffix, scope header", "/v1/auth/orders/42", map[string]string{"X-API-Key": key, HeaderRequiredScopes: "orders:read"}, 200, verifier.CodeValid},
		{"missing key", "/v1/auth", nil, 401, CodeMissing},
		{"malformed", "/v1/auth", map[string]string{"Authorization": "Bearer nope"}, 401, verifier.CodeMalformed},
		{"wrong scope", "/v1/auth?scope=invoices:read", map[string]string{"Authorization": "Bearer " + key}, 403, verifier.CodeInsufficientScope},
		{"rate limited on the fourth", "/v1/auth", map[string]string{"Authorization": "Bearer " + key}, 429, verifier.CodeRateLimited},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.target, nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want || rec.Header().Get(HeaderCode) != string(tc.code) {
				t.Fatalf("status %d code %q, want %d %s", rec.Code, rec.Header().Get(HeaderCode), tc.want, tc.code)
			}
			if tc.want == 200 && (rec.Header().Get(HeaderName) != "orders" || rec.Header().Get(HeaderNamespace) != "billing" ||
				rec.Header().Get(HeaderScopes) != "orders:*" || !strings.HasPrefix(rec.Header().Get(HeaderKeyID), "kid_")) {
				t.Errorf("upstream headers %v", rec.Header())
			}
			if tc.want == 429 && rec.Header().Get("Retry-After") != "20" {
				t.Errorf("Retry-After %q, want 20 (3 per minute)", rec.Header().Get("Retry-After"))
			}
			if strings.Contains(rec.Body.String(), key) {
				t.Error("the response contains the key")
			}
		})
	}
	if got := testutil.ToFloat64(srv.Metrics.counters[InterfaceForwardAuth][verifier.CodeValid]); got != 3 {
		t.Errorf("verifications_total{code=VALID} = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "keyward_verifier_verifications_total"); err != nil || n != 3*(len(verifier.Codes)+1) {
		t.Errorf("series: %d, %v", n, err)
	}
}

func TestJSONVerify(t *testing.T) {
	srv, _, key, _ := serverFixture(t)
	h := srv.Handler()
	post := func(body string) (int, VerifyResponse) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/verify", strings.NewReader(body)))
		var out VerifyResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	status, out := post(`{"key":"` + key + `","scopes":["orders:read"]}`)
	if status != 200 || !out.Valid || out.Code != verifier.CodeValid || out.Name != "orders" || out.Namespace != "billing" ||
		out.ExpiresAt == nil || !out.ExpiresAt.Equal(t0.Add(time.Hour)) || out.RateLimit == nil ||
		out.RateLimit.Limit != 3 || out.RateLimit.Remaining != 2 || out.RateLimit.Reset != 20 {
		t.Errorf("valid: %d %+v %+v", status, out, out.RateLimit)
	}
	if _, out := post(`{"key":"kw_nope"}`); out.Valid || out.Code != verifier.CodeMalformed {
		t.Errorf("malformed: %+v", out)
	}
	if status, _ := post(`not json`); status != 400 {
		t.Errorf("bad body: %d", status)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/verify", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/verify: %d", rec.Code)
	}
}

func TestExtAuthzCheckMakesTheSameDecisions(t *testing.T) {
	_, ext, key, _ := serverFixture(t)
	req := func(headers, extensions map[string]string) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: extensions,
			Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: headers}},
		}}
	}
	cases := []struct {
		name       string
		headers    map[string]string
		extensions map[string]string
		grpc       codes.Code
		http       int
	}{
		{"bearer with route scopes", map[string]string{"authorization": "Bearer " + key}, map[string]string{ContextExtensionScopes: "orders:read"}, codes.OK, 200},
		{"x-api-key header", map[string]string{"x-api-key": key}, nil, codes.OK, 200},
		{"missing", map[string]string{}, nil, codes.Unauthenticated, 401},
		{"unknown", map[string]string{"x-api-key": mintKey(t, "ord")}, nil, codes.Unauthenticated, 401},
		{"scope", map[string]string{"x-api-key": key, "x-keyward-required-scopes": "invoices:read"}, nil, codes.PermissionDenied, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ext.Check(context.Background(), req(tc.headers, tc.extensions))
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != tc.grpc {
				t.Fatalf("gRPC status %v, want %v", codes.Code(resp.GetStatus().GetCode()), tc.grpc)
			}
			if tc.http == 200 {
				got := map[string]string{}
				for _, h := range resp.GetOkResponse().GetHeaders() {
					got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
				}
				if got[HeaderName] != "orders" || got[HeaderNamespace] != "billing" || got[HeaderScopes] != "orders:*" {
					t.Errorf("upstream headers %v", got)
				}
			} else if int(resp.GetDeniedResponse().GetStatus().GetCode()) != tc.http {
				t.Errorf("denied HTTP status %v, want %d", resp.GetDeniedResponse().GetStatus().GetCode(), tc.http)
			}
		})
	}
}

func TestExtAuthzServesOverGRPC(t *testing.T) {
	_, ext, key, _ := serverFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, ext)
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"authorization": "Bearer " + key}}}},
	})
	if err != nil {
		t.Fatalf("Check over gRPC: %v", err)
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
		t.Errorf("Check over gRPC = %v", resp)
	}
}

func TestPerAPIKeyMetricsAreOffUnlessAskedForAndNameOnlyKnownKeys(t *testing.T) {
	srv, _, key, reg := serverFixture(t)
	send := func(k string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/auth?scope=orders:read", nil)
		req.Header.Set("Authorization", "Bearer "+k)
		srv.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	send(key)
	if n, err := testutil.GatherAndCount(reg, "keyward_verifier_apikey_verifications_total"); err != nil || n != 0 {
		t.Fatalf("per-APIKey series without the flag: %d, %v", n, err)
	}
	srv.Metrics.CountPerAPIKey(reg)
	send(key)
	send(key)
	send(mintKey(t, "ord")) // unknown: no APIKey to name
	want := `
# HELP keyward_verifier_apikey_verifications_total Verifications of each APIKey's keys by result code (only with --per-apikey-metrics: a series per APIKey and code).
# TYPE keyward_verifier_apikey_verifications_total counter
keyward_verifier_apikey_verifications_total{code="VALID",name="orders",namespace="billing"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "keyward_verifier_apikey_verifications_total"); err != nil {
		t.Error(err)
	}
	// A deleted APIKey's series go with it, whether the informer saw the deletion or only its tombstone.
	srv.Metrics.apiKeyDeleted(toolscache.DeletedFinalStateUnknown{Obj: apiKey("billing", "orders", key, t0.Add(time.Hour), nil)})
	if n, err := testutil.GatherAndCount(reg, "keyward_verifier_apikey_verifications_total"); err != nil || n != 0 {
		t.Errorf("%d series left of a deleted APIKey (%v)", n, err)
	}
}

// The verifier's cache keeps of an APIKey what Verify and the usage reports read, and none of what a
// tenant may write beside it.
func TestTheVerifiersCacheKeepsOfAnAPIKeyOnlyWhatVerifyAndUsageRead(t *testing.T) {
	key := mintKey(t, "kw")
	ak := testenv.LargestAPIKey("billing", "orders")
	full := apiKey("billing", "orders", key, t0.Add(time.Hour), map[string]time.Time{mintKey(t, "kw"): t0.Add(time.Minute)})
	ak.Status = full.Status
	ak.Status.Usage = &keywardv1alpha1.UsageStatus{Requests: 3}
	ak.Status.Conditions = []metav1.Condition{{Type: "Ready", Message: strings.Repeat("m", 1000)}}
	ak.Spec.Disabled, ak.Spec.RateLimit = true, &keywardv1alpha1.RateLimit{Requests: 5, Period: "1m"}
	out, err := TrimAPIKey(ak)
	if err != nil {
		t.Fatal(err)
	}
	kept := out.(*keywardv1alpha1.APIKey)
	if kept.Annotations != nil || kept.Labels != nil || kept.Spec.SecretTemplate != nil || kept.Spec.Webhook != nil ||
		kept.Spec.Description != "" || kept.Status.Conditions != nil {
		t.Errorf("the verifier's cache keeps what it never reads: %+v", kept.ObjectMeta)
	}
	if !kept.Spec.Disabled || kept.Spec.RateLimit == nil || len(kept.Spec.Scopes) != 1 || kept.Status.KeyHash != full.Status.KeyHash ||
		len(kept.Status.PreviousKeys) != 1 || kept.Status.Usage.Requests != 3 {
		t.Errorf("the trim dropped what Verify or the usage reports read: %+v %+v", kept.Spec, kept.Status)
	}
	ix := verifier.NewIndex()
	ix.Upsert(kept)
	if got := ix.Verify(key, nil, t0).Code; got != verifier.CodeDisabled {
		t.Errorf("the trimmed APIKey's key: %s", got)
	}
	// The scopes, joined once in the cache, are granted and reported as the full object's are.
	kept.Spec.Disabled, kept.Spec.RateLimit = false, nil
	ix.Upsert(kept)
	whole := verifier.NewIndex()
	ak.Spec.Disabled, ak.Spec.RateLimit = false, nil
	whole.Upsert(ak)
	for _, required := range [][]string{{string(ak.Spec.Scopes[0])}, {string(ak.Spec.Scopes[255])}, {"s000:nope"}} {
		got, want := ix.Verify(key, required, t0), whole.Verify(key, required, t0)
		if got.Code != want.Code || got.ScopesHeader != want.ScopesHeader || !slices.Equal(got.Scopes, want.Scopes) {
			t.Errorf("required %v: trimmed %s (%d scopes), whole %s (%d scopes)", required, got.Code, len(got.Scopes), want.Code, len(want.Scopes))
		}
	}
}

// The cache holds what an approval grants, not the approval: the trimmed APIKey's scopes and rate limit are
// the spec's narrowed to it.
func TestTheVerifiersCacheHoldsWhatAnApprovalGrantsNotTheApproval(t *testing.T) {
	ak := apiKey("billing", "refunds", mintKey(t, "kw"), t0.Add(time.Hour), nil)
	ak.Spec.Scopes = []keywardv1alpha1.Scope{"payments:refund", "payments:payout"}
	ak.Spec.RateLimit = &keywardv1alpha1.RateLimit{Requests: 100, Period: "1s"}
	ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob",
		Covers: keywardv1alpha1.ApprovedSpec{Scopes: []keywardv1alpha1.Scope{"payments:refund"}, RateLimit: &keywardv1alpha1.RateLimit{Requests: 1, Period: "1s"}}}}
	out, err := TrimAPIKey(ak)
	if err != nil {
		t.Fatal(err)
	}
	kept := out.(*keywardv1alpha1.APIKey)
	if kept.Status.Approval != nil || !slices.Equal(kept.Spec.Scopes, []keywardv1alpha1.Scope{"payments:refund"}) ||
		kept.Spec.RateLimit == nil || kept.Spec.RateLimit.Requests != 1 {
		t.Errorf("kept %+v, approval %+v; want the approved scope and rate and no approval record", kept.Spec, kept.Status.Approval)
	}
}
