package serve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// heapPeak runs load while sampling the heap and returns how far the heap grew above where it started.
func heapPeak(t *testing.T, load func()) uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	load()
	close(done)
	<-sampled
	return peak - base
}

// closedByServer reports whether err is the client's view of a connection the server closed or reset while
// the request was being written or the answer awaited.
func closedByServer(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// rawCodec sends pre-marshalled bytes, so that 64 test clients share one request body instead of each
// marshalling 4 MiB inside the process whose heap is measured.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }

func (rawCodec) Name() string { return "proto" }

func TestSixtyFourConcurrentOversizedRequestsKeepTheHeapUnder64MiB(t *testing.T) {
	srv, ext, key, _ := serverFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpSrv := srv.Server("")
	go func() { _ = httpSrv.Serve(ln) }()
	defer httpSrv.Close()
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPCServer(ext)
	go func() { _ = g.Serve(gln) }()
	defer g.Stop()

	const concurrent = 64
	mib := strings.Repeat("orders:read,", 1<<20/12) // about 1 MiB of required scopes
	body, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{
			"authorization": "Bearer " + key, "x-keyward-required-scopes": strings.Repeat(mib, 4)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: concurrent, MaxIdleConnsPerHost: concurrent}}

	var httpStatus, grpcCodes sync.Map
	grew := heapPeak(t, func() {
		var wg sync.WaitGroup
		for i := range concurrent {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/auth", nil)
				req.Header.Set("Authorization", "Bearer "+[]string{key, "kw_garbage"}[i%2])
				req.Header.Set(HeaderRequiredScopes, mib)
				resp, err := client.Do(req)
				if err != nil {
					// The server may answer 431 and close while the client is still sending its 1 MiB
					// header; the client then sees the closed connection, not the answer. Either way the
					// request was refused.
					if closedByServer(err) {
						httpStatus.Store(http.StatusRequestHeaderFieldsTooLarge, true)
					} else {
						httpStatus.Store(err.Error(), true)
					}
					return
				}
				resp.Body.Close()
				httpStatus.Store(resp.StatusCode, true)
			})
			wg.Go(func() {
				out := &authv3.CheckResponse{}
				err := conn.Invoke(context.Background(), "/envoy.service.auth.v3.Authorization/Check", &body, out)
				grpcCodes.Store(status.Code(err), true)
			})
		}
		wg.Wait()
	})
	t.Logf("heap grew by %.1f MiB serving %d oversized HTTP and %d oversized gRPC requests at once", float64(grew)/(1<<20), concurrent, concurrent)
	if grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB; the bound is 64 MiB", grew>>20)
	}
	httpStatus.Range(func(k, _ any) bool {
		if k != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("an oversized HTTP request was answered %v, want 431", k)
		}
		return true
	})
	grpcCodes.Range(func(k, _ any) bool {
		if k != codes.ResourceExhausted {
			t.Errorf("an oversized gRPC request was answered %v, want ResourceExhausted", k)
		}
		return true
	})
}

func TestEdgeCasesThatUsedToGiveWrongAnswers(t *testing.T) {
	srv, _, _, _ := serverFixture(t)
	h := srv.Handler()
	unscoped, key := mintKey(t, "kw"), mintKey(t, "kw")
	srv.Index.Upsert(apiKey("billing", "unscoped", unscoped, t0.Add(time.Hour), nil))
	srv.Index.Upsert(apiKey("billing", "unlimited", key, t0.Add(time.Hour), nil, withScopes("orders:*")))
	do := func(target string, headers map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	cases := []struct {
		name, target string
		headers      map[string]string
		want         int
		code         verifier.Code
	}{
		{"an empty ?scope= demands nothing", "/v1/auth?scope=", map[string]string{"X-API-Key": unscoped}, 200, verifier.CodeValid},
		{"a non-clean appended path gets a verdict, not a redirect", "/v1/auth/orders//42/../x", map[string]string{"X-API-Key": key}, 200, verifier.CodeValid},
		{"an unrelated bearer JWT does not hide X-API-Key", "/v1/auth", map[string]string{
			"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "X-API-Key": key}, 200, verifier.CodeValid},
		{"a bearer key wins over an X-API-Key that is not a key", "/v1/auth", map[string]string{"Authorization": "Bearer " + key, "X-API-Key": "nope"}, 200, verifier.CodeValid},
		{"a bearer JWT alone is malformed", "/v1/auth", map[string]string{"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}, 401, verifier.CodeMalformed},
		{"a malformed required scope is a bad request", "/v1/auth?scope=orders:0:", map[string]string{"X-API-Key": key}, 400, verifier.CodeInvalidRequest},
		{"a route that accepts another namespace", "/v1/auth?namespace=payments", map[string]string{"X-API-Key": key}, 403, verifier.CodeWrongNamespace},
		{"the namespace header", "/v1/auth", map[string]string{"X-API-Key": key, HeaderRequiredNamespace: "payments, billing"}, 200, verifier.CodeValid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(tc.target, tc.headers)
			if rec.Code != tc.want || rec.Header().Get(HeaderCode) != string(tc.code) {
				t.Errorf("status %d code %q, want %d %s", rec.Code, rec.Header().Get(HeaderCode), tc.want, tc.code)
			}
		})
	}
}

func TestTheJSONAPIDescribesOnlyLiveKeysAndTakesExactlyOneObject(t *testing.T) {
	srv, _, _, _ := serverFixture(t)
	h := srv.Handler()
	disabled, expired := mintKey(t, "kw"), mintKey(t, "kw")
	srv.Index.Upsert(apiKey("billing", "disabled", disabled, t0.Add(time.Hour), nil, withScopes("orders:*"),
		func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true }))
	srv.Index.Upsert(apiKey("billing", "expired", expired, t0, nil, withScopes("orders:*")))
	post := func(body string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/verify", strings.NewReader(body)))
		out := map[string]any{}
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	for key, code := range map[string]verifier.Code{disabled: verifier.CodeDisabled, expired: verifier.CodeExpired} {
		status, out := post(`{"key":"` + key + `"}`)
		if status != 200 || out["code"] != string(code) {
			t.Fatalf("%s: %d %v", code, status, out)
		}
		for _, field := range []string{"name", "namespace", "scopes", "expiresAt", "rateLimit"} {
			if _, ok := out[field]; ok {
				t.Errorf("a %s key is described: %s = %v", code, field, out[field])
			}
		}
	}
	for _, body := range []string{`{"key":"kw_x"} trailing`, `{"key":"kw_x"}{"key":"kw_y"}`, `{"key":"kw_x"`} {
		if status, _ := post(body); status != http.StatusBadRequest {
			t.Errorf("body %q: %d, want 400", body, status)
		}
	}
	if status, out := post(`{"key":"kw_x"}` + "\n"); status != 200 || out["code"] != string(verifier.CodeMalformed) {
		t.Errorf("one object and a newline: %d %v", status, out)
	}
}

// BenchmarkRejectOversizedRequest is the cost of refusing a request that requires far more scopes than
// the cap, with a valid key (the worst case: the key is known, so requirements are read up to the cap).
func BenchmarkRejectOversizedRequest(b *testing.B) {
	srv, _, key, _ := serverFixture(b)
	h := srv.Handler()
	scopes := strings.Repeat("orders:read,", 10000)
	req := httptest.NewRequest(http.MethodGet, "/v1/auth", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set(HeaderRequiredScopes, scopes)
	rec := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(rec.h)
		h.ServeHTTP(rec, req)
		if rec.status != http.StatusBadRequest {
			b.Fatalf("status %d", rec.status)
		}
	}
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func (w *discardWriter) WriteHeader(s int) { w.status = s }

// A tenant's unrestricted key must not pass another tenant's route by adding an accepted namespace of its
// own. The requests are built as the gateways send them: Envoy's HTTP ext_authz (path_prefix /v1/auth)
// appends the client's path and query to the check request and adds the route's header; gRPC ext_authz
// carries the client's headers in the CheckRequest beside the route's context extension.
func TestWhatAClientAddsNeverWidensTheNamespacesARouteAccepts(t *testing.T) {
	srv, ext, _, _ := serverFixture(t)
	tenantKey := mintKey(t, "kw")
	srv.Index.Upsert(apiKey("payments", "everything", tenantKey, t0.Add(time.Hour), nil, withScopes("*")))
	h := srv.Handler()

	forward := []struct {
		name, target string
		headers      map[string]string
	}{
		{"the client's query after Envoy's path_prefix", "/v1/auth/invoices/7?namespace=payments",
			map[string]string{HeaderRequiredNamespace: "billing"}},
		{"the client's namespaces query", "/v1/auth/invoices/7?namespaces=payments,billing",
			map[string]string{HeaderRequiredNamespace: "billing"}},
		{"the client's header beside the route's query (nginx auth_request passes client headers)", "/v1/auth?namespace=billing",
			map[string]string{HeaderRequiredNamespace: "payments"}},
		{"Traefik forwardAuth: the address's query, the client's URI in X-Forwarded-Uri", "/v1/auth?scope=orders:read&namespace=billing",
			map[string]string{"X-Forwarded-Uri": "/orders/7?namespace=payments", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "api.example.com"}},
		{"Istio envoyExtAuthzHttp: pathPrefix with the route's segment, the client's path and query appended",
			"/v1/auth/@namespace=billing;scope=orders:read/orders/7?namespace=payments",
			map[string]string{"X-Forwarded-Proto": "https", "X-Envoy-Expected-Rq-Timeout-Ms": "600000"}},
	}
	for _, tc := range forward {
		t.Run("forward auth: "+tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.target, nil)
			req.Header.Set("X-API-Key", tenantKey)
			for k, v := range tc.headers {
				req.Header.Add(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden || rec.Header().Get(HeaderCode) != string(verifier.CodeWrongNamespace) {
				t.Errorf("status %d code %q; the route pinned to billing must refuse a key from payments", rec.Code, rec.Header().Get(HeaderCode))
			}
		})
	}
	t.Run("forward auth: Envoy Gateway's extAuth.http.path with the route's segment, the client's path and query appended", func(t *testing.T) {
		billingKey := mintKey(t, "kw")
		srv.Index.Upsert(apiKey("billing", "reader", billingKey, t0.Add(time.Hour), nil, withScopes("orders:read")))
		for _, c := range []struct {
			key, target string
			want        int
		}{
			{tenantKey, "/v1/auth/@namespace=billing;scope=orders:read/orders/7?namespace=payments", http.StatusForbidden},
			{tenantKey, "/v1/auth/@namespace=billing;scope=orders:read/@namespace=payments/x", http.StatusForbidden},
			{billingKey, "/v1/auth/@namespace=billing;scope=orders:read/orders/7", http.StatusOK},
			{billingKey, "/v1/auth/@namespace=billing;scope=orders:write/orders/7", http.StatusForbidden},
		} {
			req := httptest.NewRequest(http.MethodGet, c.target, nil)
			req.Header.Set("Authorization", "Bearer "+c.key)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Errorf("%s: status %d (%s), want %d", c.target, rec.Code, rec.Header().Get(HeaderCode), c.want)
			}
		}
	})
	t.Run("forward auth: a route segment that does not parse is a 400, never an unpinned route", func(t *testing.T) {
		for _, target := range []string{"/v1/auth/@namespace=", "/v1/auth/@namespace", "/v1/auth/@Namespace=billing",
			"/v1/auth/@ns=billing", "/v1/auth/%40namespace=billing", "/v1/auth/@namespace=%20,%20/x", "/v1/auth/%40namespace=billing/x"} {
			req := httptest.NewRequest(http.MethodGet, target, nil)
			req.Header.Set("X-API-Key", tenantKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadRequest || rec.Header().Get(HeaderCode) != string(verifier.CodeInvalidRequest) {
				t.Errorf("%s: status %d code %q, want 400 INVALID_REQUEST", target, rec.Code, rec.Header().Get(HeaderCode))
			}
		}
		for _, target := range []string{"/v1/auth?namespace=", "/v1/auth/orders?namespaces=%20"} {
			req := httptest.NewRequest(http.MethodGet, target, nil)
			req.Header.Set("X-API-Key", tenantKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden {
				t.Errorf("%s: status %d, want 403: a blank namespace list accepts no namespace", target, rec.Code)
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/v1/auth/x", nil)
		req.Header.Set("X-API-Key", tenantKey)
		req.Header[HeaderRequiredNamespace] = []string{""}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("a blank %s header: status %d, want 403", HeaderRequiredNamespace, rec.Code)
		}
	})
	t.Run("gRPC ext_authz: a blank context extension accepts no namespace, an absent one pins nothing", func(t *testing.T) {
		for _, c := range []struct {
			ext  map[string]string
			want int
		}{
			{map[string]string{ContextExtensionNamespaces: ""}, http.StatusForbidden},
			{map[string]string{ContextExtensionNamespaces: " , "}, http.StatusForbidden},
			{nil, http.StatusOK},
		} {
			resp, err := ext.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				ContextExtensions: c.ext,
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/invoices/7",
					Headers: map[string]string{"x-api-key": tenantKey}}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			got := http.StatusOK
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != c.want {
				t.Errorf("context extensions %v: status %d, want %d", c.ext, got, c.want)
			}
		}
	})
	t.Run("gRPC ext_authz: the client's header beside the route's context extension", func(t *testing.T) {
		resp, err := ext.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{ContextExtensionNamespaces: "billing"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/invoices/7?namespace=payments",
				Headers: map[string]string{"x-api-key": tenantKey, "x-keyward-required-namespace": "payments"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.GetDeniedResponse().GetStatus().GetCode()) != http.StatusForbidden {
			t.Errorf("answer %v; the route pinned to billing must refuse a key from payments", resp.GetStatus())
		}
	})
}
