package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

// createWithScopes creates an APIKey granting scopes.
func (c *cluster) createWithScopes(name string, scopes ...keywardv1alpha1.Scope) {
	c.t.Helper()
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.ns}, Spec: keywardv1alpha1.APIKeySpec{Scopes: scopes},
	}); err != nil {
		c.t.Fatal(err)
	}
}

// lockedBuffer is a log sink the test reads after the log has stopped.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// TestTheDecisionLogRecordsEachDecisionWithItsRouteAndNoKeyMaterial runs a verifier fed by the real API
// server, with every decision logged, and sends it what gateways send: a valid key through forward auth
// (the route in X-Forwarded-* headers, the key also in the query), an unknown key, no key, a key short of
// a scope through ext_authz, and a JSON verification. Each decision is one JSON line with the documented
// fields; neither key, nor anything derived from the unknown key, appears anywhere in the log.
func TestTheDecisionLogRecordsEachDecisionWithItsRouteAndNoKeyMaterial(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	c.createWithScopes("orders", "orders:read")
	key := c.waitReadyRevision("orders", 1)
	unknown, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.waitCode(key, nil, verifier.CodeValid, c.get("orders").CreationTimestamp.Time)
	keyID := c.get("orders").Status.KeyID

	sink := &lockedBuffer{}
	log := serve.NewDecisionLog(sink, serve.DecisionLogOptions{ValidSample: 1, RejectionsPerSecond: 100, UnknownPerSecond: 100, ClientHeader: "X-Forwarded-For"})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- log.Start(ctx) }()
	httpSrv := &serve.HTTPServer{Index: c.index, Clock: clock.RealClock{}, Metrics: serve.NewMetrics(nil), Decisions: log}
	ts := httptest.NewServer(httpSrv.Handler())
	defer ts.Close()

	send := func(path, presented string, headers map[string]string) int {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		if presented != "" {
			req.Header.Set("Authorization", "Bearer "+presented)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	route := map[string]string{"X-Forwarded-Method": http.MethodPost, "X-Forwarded-Host": "shop.example",
		"X-Forwarded-Uri": "/api/orders?api_key=" + key, "X-Forwarded-For": "203.0.113.9, 10.0.0.3"}
	if got := send("/v1/auth/@namespace="+c.ns+";scope=orders:read", key, route); got != http.StatusOK {
		t.Fatalf("valid key: %d", got)
	}
	if got := send("/v1/auth/"+unknown+"/x", unknown, nil); got != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d", got)
	}
	if got := send("/v1/auth", "", nil); got != http.StatusUnauthorized {
		t.Fatalf("no key: %d", got)
	}
	grpcSrv := &serve.ExtAuthzServer{Index: c.index, Clock: clock.RealClock{}, Metrics: serve.NewMetrics(nil), Decisions: log}
	if _, err := grpcSrv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: http.MethodDelete, Host: "shop.example", Path: "/api/orders/7",
			Headers: map[string]string{"authorization": "Bearer " + key, "x-keyward-required-scopes": "orders:delete"}}}}}); err != nil {
		t.Fatal(err)
	}
	body := strings.NewReader(`{"key":"` + unknown + `"}`)
	resp, err := http.Post(ts.URL+"/v1/verify", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}

	raw := sink.buf.String()
	for what, secret := range map[string]string{"the valid key": key, "the unknown key": unknown,
		"the unknown key's hash": keys.Hash(unknown), "the unknown key's ID": keys.IDFromHash(keys.Hash(unknown))} {
		if strings.Contains(raw, secret) || strings.Contains(raw, strings.TrimPrefix(secret, "sha256:")) {
			t.Errorf("the decision log holds %s", what)
		}
	}
	var got []serve.Decision
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		var d serve.Decision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		got = append(got, d)
	}
	if len(got) != 5 {
		t.Fatalf("%d decisions logged, want 5:\n%s", len(got), raw)
	}
	valid := got[0]
	if valid.Interface != serve.InterfaceForwardAuth || valid.Code != verifier.CodeValid || valid.Namespace != c.ns ||
		valid.APIKey != "orders" || valid.KeyID != keyID || valid.Method != http.MethodPost || valid.Host != "shop.example" ||
		valid.Path != "/api/orders" || valid.Client != "10.0.0.3" || valid.Time.IsZero() ||
		strings.Join(valid.RequiredScopes, ",") != "orders:read" || strings.Join(valid.RequiredNamespaces, ",") != c.ns {
		t.Errorf("the valid decision: %+v", valid)
	}
	if u := got[1]; u.Code != verifier.CodeNotFound || u.KeyID != "" || u.APIKey != "" || u.Path != "/[key]/x" || u.Method != http.MethodGet {
		t.Errorf("the unknown key's decision: %+v", u)
	}
	if m := got[2]; m.Code != serve.CodeMissing {
		t.Errorf("the decision without a key: %+v", m)
	}
	if s := got[3]; s.Interface != serve.InterfaceExtAuthz || s.Code != verifier.CodeInsufficientScope || s.KeyID != keyID ||
		s.Method != http.MethodDelete || s.Path != "/api/orders/7" || strings.Join(s.RequiredScopes, ",") != "orders:delete" {
		t.Errorf("the ext_authz decision: %+v", s)
	}
	if j := got[4]; j.Interface != serve.InterfaceJSON || j.Code != verifier.CodeNotFound || j.KeyID != "" {
		t.Errorf("the JSON decision: %+v", j)
	}
}

// TestUsageIsReportedPerKeyIDAndOutcome verifies a rotated APIKey's previous and current keys through a
// verifier fed by the real API server, with outcomes of several kinds, and proves that one flush, written
// as the verifier's identity under the shipped admission policy, reports each key's counts and last use
// in status.usage.keys, current key first.
func TestUsageIsReportedPerKeyIDAndOutcome(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	c.createWithScopes("orders", "orders:read")
	old := c.waitReadyRevision("orders", 1)
	c.update("orders", func(ak *keywardv1alpha1.APIKey) {
		ak.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: "now"}
	})
	current := c.waitReadyRevision("orders", 2)
	c.waitCode(current, nil, verifier.CodeValid, time.Now())
	c.waitCode(old, nil, verifier.CodeValid, time.Now()) // the previous key, within its grace period
	c.index.DrainUsage()                                 // what the waiting above counted

	now := time.Now()
	c.index.Verify(old, nil, now)
	for range 2 {
		if got := c.index.Verify(old, []string{"orders:write"}, now).Code; got != verifier.CodeInsufficientScope {
			t.Fatalf("a scope the key lacks: %s", got)
		}
	}
	for range 3 {
		c.index.Verify(current, nil, now)
	}
	reporter := &serve.UsageReporter{Index: c.index, Client: c.client}
	eventually.Succeeds(t, "usage is flushed", func() error {
		_, err := reporter.Flush(context.Background())
		return err
	})

	ak := c.get("orders")
	u := ak.Status.Usage
	if u == nil || u.Requests != 4 || len(u.Keys) != 2 {
		t.Fatalf("status.usage = %+v; want 4 requests over 2 keys", u)
	}
	if k := u.Keys[0]; k.KeyID != ak.Status.KeyID || k.Valid != 3 || k.LastUsedAt == nil || len(k.Rejected) != 0 {
		t.Errorf("the current key's usage: %+v", k)
	}
	if k := u.Keys[1]; k.KeyID != ak.Status.PreviousKeys[0].KeyID || k.Valid != 1 || k.LastUsedAt == nil ||
		k.Rejected[string(verifier.CodeInsufficientScope)] != 2 {
		t.Errorf("the previous key's usage: %+v", k)
	}
}
