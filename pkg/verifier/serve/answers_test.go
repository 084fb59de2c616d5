package serve

import (
	"testing"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"
)

func TestKeyFromHeaders(t *testing.T) {
	cases := []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"Authorization": "Bearer kw_abc"}, "kw_abc"},
		{map[string]string{"Authorization": "bearer kw_abc"}, "kw_abc"},
		{map[string]string{"Authorization": "x-api-key kw_abc"}, "kw_abc"},
		{map[string]string{"X-Api-Key": " kw_abc "}, "kw_abc"},
		{map[string]string{"Authorization": "Basic dXNlcg==", "X-Api-Key": "kw_abc"}, "kw_abc"},
		{map[string]string{"Authorization": "Basic dXNlcg=="}, ""},
		{map[string]string{}, ""},
	}
	for _, tc := range cases {
		if got := KeyFromHeaders(func(k string) string { return tc.headers[k] }); got != tc.want {
			t.Errorf("%v → %q, want %q", tc.headers, got, tc.want)
		}
	}
}

func TestAnswers(t *testing.T) {
	a := Answerer{}
	cases := []struct {
		res  verifier.Result
		want int
	}{
		{verifier.Result{Code: verifier.CodeValid, KeyID: "kid_1", Name: "n", Namespace: "ns", ScopesHeader: "a,b"}, 200},
		{verifier.Result{Code: verifier.CodeMalformed}, 401},
		{verifier.Result{Code: verifier.CodeNotFound}, 401},
		{verifier.Result{Code: verifier.CodeExpired}, 401},
		{verifier.Result{Code: verifier.CodeDisabled}, 401},
		{verifier.Result{Code: verifier.CodeInsufficientScope}, 403},
		{verifier.Result{Code: verifier.CodeRateLimited, RateLimit: &verifier.RateLimitState{RetryAfter: 1500 * time.Millisecond}}, 429},
	}
	for _, tc := range cases {
		ans := a.Answer(tc.res)
		if ans.Status != tc.want {
			t.Errorf("%s → %d, want %d", tc.res.Code, ans.Status, tc.want)
		}
		h := map[string]string{}
		for _, kv := range ans.Headers {
			h[kv[0]] = kv[1]
		}
		if h[HeaderCode] != string(tc.res.Code) {
			t.Errorf("%s: code header %q", tc.res.Code, h[HeaderCode])
		}
		switch tc.res.Code {
		case verifier.CodeValid:
			if h[HeaderKeyID] != "kid_1" || h[HeaderName] != "n" || h[HeaderNamespace] != "ns" || h[HeaderScopes] != "a,b" {
				t.Errorf("upstream headers %v", h)
			}
		case verifier.CodeRateLimited:
			if h["Retry-After"] != "2" {
				t.Errorf("Retry-After %q, want 2 (rounded up)", h["Retry-After"])
			}
		}
	}
	if got := (Answerer{RateLimitedStatus: 403}).Answer(verifier.Result{Code: verifier.CodeRateLimited}).Status; got != 403 {
		t.Errorf("rate limited with the 403 mapping: %d", got)
	}
}

func TestReadinessWaitsForTheInitialList(t *testing.T) {
	synced := false
	check := SyncedCheck(func() bool { return synced })
	if check(nil) == nil {
		t.Error("ready before the initial list was indexed")
	}
	synced = true
	if err := check(nil); err != nil {
		t.Errorf("not ready after the initial list was indexed: %v", err)
	}
}
