package verifier

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// HTTPServer serves forward auth for ingress controllers and gateways and the JSON verification API.
//
//	ANY  /v1/auth[/...]  forward auth: the key from Authorization (Bearer or x-api-key) or X-API-Key; required
//	                     scopes from ?scope=a&scope=b, ?scopes=a,b or the X-Keyward-Required-Scopes header.
//	POST /v1/verify      {"key": "...", "scopes": ["..."]} → {"valid", "code", "keyID", ...}
type HTTPServer struct {
	Index    *Index
	Clock    clock.PassiveClock
	Answerer Answerer
	Metrics  *Metrics
}

// Handler returns the routes.
func (s *HTTPServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/auth", s.forwardAuth)
	mux.HandleFunc("/v1/auth/", s.forwardAuth) // Envoy's HTTP ext_authz appends the original path
	mux.HandleFunc("POST /v1/verify", s.verifyJSON)
	return mux
}

func (s *HTTPServer) forwardAuth(w http.ResponseWriter, r *http.Request) {
	key := KeyFromHeaders(r.Header.Get)
	if key == "" {
		s.Metrics.observe(InterfaceForwardAuth, CodeMissing)
		w.Header().Set(HeaderCode, string(CodeMissing))
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	res := s.Index.Verify(key, requiredScopes(r), s.Clock.Now())
	s.Metrics.observe(InterfaceForwardAuth, res.Code)
	ans := s.Answerer.Answer(res)
	h := w.Header()
	for _, kv := range ans.Headers {
		h[kv[0]] = []string{kv[1]}
	}
	w.WriteHeader(ans.Status)
}

func requiredScopes(r *http.Request) []string {
	var scopes []string
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		scopes = append(scopes, q["scope"]...)
		for _, s := range q["scopes"] {
			scopes = append(scopes, SplitScopes(s)...)
		}
	}
	if h := r.Header.Get(HeaderRequiredScopes); h != "" {
		scopes = append(scopes, SplitScopes(h)...)
	}
	return scopes
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	Key    string   `json:"key"`
	Scopes []string `json:"scopes,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify.
type VerifyResponse struct {
	Valid     bool               `json:"valid"`
	Code      Code               `json:"code"`
	KeyID     string             `json:"keyID,omitempty"`
	Name      string             `json:"name,omitempty"`
	Namespace string             `json:"namespace,omitempty"`
	Scopes    []string           `json:"scopes,omitempty"`
	ExpiresAt *time.Time         `json:"expiresAt,omitempty"`
	RateLimit *RateLimitResponse `json:"rateLimit,omitempty"`
}

// RateLimitResponse describes the APIKey's rate limit bucket.
type RateLimitResponse struct {
	Limit     int `json:"limit"`
	Remaining int `json:"remaining"`
	// Reset is the number of seconds until the bucket is full again.
	Reset int `json:"reset"`
}

func (s *HTTPServer) verifyJSON(w http.ResponseWriter, r *http.Request) {
	var req VerifyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "the body must be JSON: {\"key\": \"...\", \"scopes\": [\"...\"]}", http.StatusBadRequest)
		return
	}
	res := s.Index.Verify(strings.TrimSpace(req.Key), req.Scopes, s.Clock.Now())
	s.Metrics.observe(InterfaceJSON, res.Code)
	out := VerifyResponse{Valid: res.Valid(), Code: res.Code, KeyID: res.KeyID, Name: res.Name, Namespace: res.Namespace, Scopes: res.Scopes}
	if !res.ExpiresAt.IsZero() {
		t := res.ExpiresAt.UTC()
		out.ExpiresAt = &t
	}
	if rl := res.RateLimit; rl != nil {
		out.RateLimit = &RateLimitResponse{Limit: rl.Limit, Remaining: rl.Remaining, Reset: int((rl.Reset + time.Second - 1) / time.Second)}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
