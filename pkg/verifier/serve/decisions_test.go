package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// stuckSink is a log sink that takes nothing until released, as a full pipe or a stalled collector.
type stuckSink struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (s *stuckSink) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func TestADecisionLogWhoseSinkIsStuckNeverHoldsUpADecision(t *testing.T) {
	sink := &stuckSink{release: make(chan struct{})}
	l := NewDecisionLog(sink, DecisionLogOptions{ValidSample: 1, Buffer: 16})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Start(ctx) }()

	// Far more decisions than the queue and the writer's buffer hold. Were Record to wait for the sink, this
	// loop would never end: the sink is released only after it.
	const total = 5000
	for i := range total {
		l.Record(Decision{Interface: InterfaceForwardAuth, Code: verifier.CodeValid, Path: "/orders/" + string(rune('a'+i%26))})
	}
	if full, _ := l.Dropped(); full == 0 {
		t.Fatal("no decision was dropped although the sink took nothing")
	}
	close(sink.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	full, _ := l.Dropped()
	lines := 0
	sc := bufio.NewScanner(&sink.buf)
	for sc.Scan() {
		var d Decision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("line %d is not a decision: %v", lines+1, err)
		}
		lines++
	}
	if int64(lines)+full != total {
		t.Errorf("%d lines written and %d dropped for %d decisions", lines, full, total)
	}
}

func TestTheDecisionLogCapsRejectionsAndSamplesValidDecisions(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	l := NewDecisionLog(nil, DecisionLogOptions{ValidSample: 0, RejectionsPerSecond: 10, UnknownPerSecond: 10})
	logged := func(code verifier.Code, ns string, n int, at time.Time) int {
		c := 0
		for range n {
			if l.Sampled(code, ns, at) {
				c++
			}
		}
		return c
	}
	if got := logged(verifier.CodeNotFound, "", 50, now); got != 10 {
		t.Errorf("a burst of 50 unknown keys logged %d; want the cap of 10", got)
	}
	if got := logged(verifier.CodeMalformed, "", 50, now.Add(500*time.Millisecond)); got != 5 {
		t.Errorf("half a second later %d more; want 5", got)
	}
	if _, over := l.DroppedOf(CategoryUnknownKey); over != 85 {
		t.Errorf("%d unknown keys counted over the budget; want 85", over)
	}
	if got := logged(verifier.CodeExpired, "billing", 50, now); got != 10 {
		t.Errorf("a burst of 50 rejections of billing's keys logged %d; want billing's budget of 10", got)
	}
	if got := logged(verifier.CodeWrongNamespace, "orders", 5, now); got != 5 {
		t.Errorf("orders' rejections after billing spent its budget: %d of 5 logged", got)
	}
	if _, over := l.DroppedOf(CategoryKnownKey); over != 40 {
		t.Errorf("%d known-key rejections counted over the budget; want 40", over)
	}
	if got := logged(verifier.CodeValid, "billing", 100, now); got != 0 {
		t.Errorf("%d valid decisions logged with sampling 0", got)
	}
	all := NewDecisionLog(nil, DecisionLogOptions{ValidSample: DefaultDecisionLogValidSample})
	for range 100 {
		if !all.Sampled(verifier.CodeValid, "billing", now) {
			t.Fatal("a valid decision was not logged by default: the log must be complete")
		}
	}
	var off *DecisionLog
	if off.Sampled(verifier.CodeNotFound, "", now) {
		t.Error("a nil log samples")
	}
}

// A flood of made-up keys spends the unknown keys' budget only: the lines an investigator needs, about a
// tenant's real keys (an expired key, a probe from the wrong namespace), are still written.
func TestAFloodOfUnknownKeysCannotBlindTheDecisionLogToKnownKeys(t *testing.T) {
	srv, _, _, _ := serverFixture(t)
	expiredKey, liveKey := mintKey(t, "kw"), mintKey(t, "kw")
	srv.Index.Upsert(apiKey("billing", "old", expiredKey, t0.Add(-time.Minute), nil))
	srv.Index.Upsert(apiKey("billing", "live", liveKey, t0.Add(time.Hour), nil))
	var out bytes.Buffer
	srv.Decisions = NewDecisionLog(&out, DecisionLogOptions{ValidSample: DefaultDecisionLogValidSample,
		RejectionsPerSecond: DefaultDecisionLogRejectionsPerSecond, UnknownPerSecond: DefaultDecisionLogUnknownPerSecond, Buffer: 10000})
	h := srv.Handler()
	send := func(target, key string) {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("X-API-Key", key)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	for range 2000 {
		send("/v1/auth", mintKey(t, "kw"))
	}
	send("/v1/auth/files", expiredKey)
	send("/v1/auth/files?namespace=payments", liveKey)
	send("/v1/auth/files", liveKey)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Decisions.Start(ctx); err != nil { // writes what is queued, then returns
		t.Fatal(err)
	}
	codes := map[verifier.Code]int{}
	for line := range strings.Lines(out.String()) {
		var d Decision
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatal(err)
		}
		if d.Namespace == "billing" {
			codes[d.Code]++
		}
	}
	if codes[verifier.CodeExpired] != 1 || codes[verifier.CodeWrongNamespace] != 1 || codes[verifier.CodeValid] != 1 {
		t.Errorf("lines about billing's keys: %v; want the expired key, the wrong-namespace probe and the valid use", codes)
	}
	if _, over := srv.Decisions.DroppedOf(CategoryUnknownKey); over == 0 {
		t.Errorf("%d unknown keys counted over their budget", over)
	}
	if full, over := srv.Decisions.DroppedOf(CategoryKnownKey); full+over != 0 {
		t.Errorf("known-key lines dropped: %d queue full, %d over budget", full, over)
	}
}

func TestARecordedDecisionHoldsNoKeyAndIsBounded(t *testing.T) {
	key := "kw_" + strings.Repeat("A", 38)
	l := NewDecisionLog(nil, DecisionLogOptions{ClientHeader: "X-Forwarded-For"})
	headers := map[string]string{"X-Forwarded-For": "203.0.113.9, 10.0.0.1,  198.51.100.7 "}
	rt := route{method: strings.Repeat("M", 100), host: "shop.example", path: "/orders/" + key + "/items?api_key=" + key + "&x=1",
		header: func(n string) string { return headers[n] }}
	unknown := verifier.Result{Code: verifier.CodeNotFound, KeyID: "kid_derived_from_the_unknown_key"}
	d := l.decisionOf(InterfaceForwardAuth, unknown, verifier.Requirements{Query: "scope=orders:read"}, rt, key, time.Now(), time.Now())
	if d.KeyID != "" || d.APIKey != "" || d.Namespace != "" {
		t.Errorf("an unknown key's decision names %q %q %q", d.KeyID, d.Namespace, d.APIKey)
	}
	if d.Path != "/orders/[key]/items" || len(d.Method) != maxLoggedMethod || d.Client != "198.51.100.7" {
		t.Errorf("path %q, method %q, client %q", d.Path, d.Method, d.Client)
	}
	if strings.Join(d.RequiredScopes, ",") != "orders:read" {
		t.Errorf("required scopes %v", d.RequiredScopes)
	}
	known := verifier.Result{Code: verifier.CodeInsufficientScope, KeyID: "kid_1", Namespace: "billing", Name: "orders"}
	if d := l.decisionOf(InterfaceJSON, known, verifier.Requirements{}, route{}, "", time.Now(), time.Now()); d.KeyID != "kid_1" || d.APIKey != "orders" {
		t.Errorf("a known key's decision: %+v", d)
	}
	if got := bounded("ab€", 4); got != "ab" {
		t.Errorf("bounded cut a rune: %q", got)
	}
}

// A key reaches the route in many shapes: percent-encoded in the path, in a request that presented no key
// (MISSING), in the Host. None of them is written: every checksum-valid key shape is redacted, presented or
// not.
func TestEveryKeyInTheLoggedRouteIsRedactedPresentedOrNot(t *testing.T) {
	leaked, other := mintKey(t, "kw"), mintKey(t, "ord")
	encoded := strings.Replace(leaked, "_", "%5F", 1)
	l := NewDecisionLog(nil, DecisionLogOptions{})
	for _, tc := range []struct {
		name      string
		rt        route
		presented string
	}{
		{"percent-encoded in the path", route{path: "/download/" + encoded}, leaked},
		{"in the path of a request that presented none", route{path: "/share/" + leaked + "/x"}, ""},
		{"another key in the path beside the presented one", route{path: "/a/" + leaked + "/b/" + other}, leaked},
		{"in the host", route{host: leaked + ".files.example", path: "/"}, ""},
		{"encoded twice over the bound", route{path: strings.Repeat("/x", 505) + "/" + encoded}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := l.decisionOf(InterfaceForwardAuth, verifier.Result{Code: CodeMissing}, verifier.Requirements{}, tc.rt, tc.presented, time.Now(), time.Now())
			line, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{leaked, other, encoded, leaked[3:], other[4:]} {
				if strings.Contains(string(line), k) {
					t.Errorf("the logged line holds a key: %s", line)
				}
			}
			if !strings.Contains(string(line), "[key]") && !strings.HasPrefix(tc.name, "encoded twice") {
				t.Errorf("nothing redacted: %s", line)
			}
		})
	}
}

func TestMergeKeyUsageAddsPerKeyAndKeepsOnlyKeysStillAccepted(t *testing.T) {
	at := func(s int) *metav1.Time { v := metav1.NewTime(time.Unix(int64(s), 0).UTC()); return &v }
	st := keywardv1alpha1.APIKeyStatus{KeyID: "kid_new", PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_old"}}}
	reported := []keywardv1alpha1.KeyUsage{
		{KeyID: "kid_old", Valid: 5, LastUsedAt: at(100), Rejected: map[string]int64{"INSUFFICIENT_SCOPE": 1}},
		{KeyID: "kid_revoked", Valid: 9},
	}
	drained := []verifier.KeyUse{
		{KeyID: "kid_old", Valid: 2, LastUsed: time.Unix(200, 0), Rejected: map[verifier.Code]int64{verifier.CodeInsufficientScope: 2, verifier.CodeWrongNamespace: 1}},
		{KeyID: "kid_new", RateLimited: 3},
		{KeyID: "kid_gone", Valid: 7},
	}
	got := MergeKeyUsage(reported, drained, st)
	if len(got) != 2 || got[0].KeyID != "kid_new" || got[1].KeyID != "kid_old" {
		t.Fatalf("keys %+v; want kid_new then kid_old", got)
	}
	if n := got[0]; n.RateLimited != 3 || n.Valid != 0 || n.LastUsedAt != nil {
		t.Errorf("kid_new: %+v", n)
	}
	if o := got[1]; o.Valid != 7 || !o.LastUsedAt.Equal(at(200)) || o.Rejected["INSUFFICIENT_SCOPE"] != 3 || o.Rejected["WRONG_NAMESPACE"] != 1 {
		t.Errorf("kid_old: %+v", o)
	}
	if reported[0].Rejected["INSUFFICIENT_SCOPE"] != 1 {
		t.Error("the merge changed the status it read")
	}
}
