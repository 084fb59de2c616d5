package serve

import (
	"strconv"
	"strings"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	"github.com/keyward-dev/keyward/internal/keys"
)

// Headers passed upstream with an accepted request.
const (
	HeaderKeyID     = "X-Keyward-Key-Id"
	HeaderName      = "X-Keyward-Name"
	HeaderNamespace = "X-Keyward-Namespace"
	HeaderScopes    = "X-Keyward-Scopes"
	// HeaderCode carries the verification code on every forward-auth answer.
	HeaderCode = "X-Keyward-Code"
	// HeaderRequiredScopes is how a proxy can pass the scopes a route requires (comma-separated).
	HeaderRequiredScopes = "X-Keyward-Required-Scopes"
	// HeaderRequiredNamespace is how a proxy can pass the namespaces a route accepts keys from
	// (comma-separated, or repeated).
	HeaderRequiredNamespace = "X-Keyward-Required-Namespace"
)

// UpstreamHeaders are the headers the verifier passes upstream with an accepted request. A proxy must remove
// any the client sent, or the upstream cannot tell them from the verifier's.
var UpstreamHeaders = []string{HeaderKeyID, HeaderName, HeaderNamespace, HeaderScopes}

// CodeMissing is the forward-auth code for a request that carries no key at all.
const CodeMissing verifier.Code = "MISSING"

// KeyFromHeaders finds the presented key: Authorization: Bearer KEY, Authorization: x-api-key KEY, or
// X-API-Key: KEY. get looks a header up by its canonical name. A candidate shaped like a Keyward key wins, so
// an unrelated Authorization: Bearer <JWT> does not hide a key in X-API-Key; when neither is shaped like
// one, the first candidate is returned (and answered MALFORMED).
func KeyFromHeaders(get func(string) string) string {
	var fromAuth string
	if auth := strings.TrimSpace(get("Authorization")); auth != "" {
		scheme, rest, ok := strings.Cut(auth, " ")
		if ok && (strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "x-api-key")) {
			fromAuth = strings.TrimSpace(rest)
		}
	}
	if keys.WellFormed(fromAuth) {
		return fromAuth
	}
	if apiKey := strings.TrimSpace(get("X-Api-Key")); apiKey != "" && (fromAuth == "" || keys.WellFormed(apiKey)) {
		return apiKey
	}
	return fromAuth
}

// Answer is how a proxy should answer for a verification: the HTTP status and the headers to add
// (upstream when allowed, to the client when denied).
type Answer struct {
	Status  int
	Headers [][2]string
}

// Allowed reports whether the request may pass.
func (a Answer) Allowed() bool { return a.Status == 200 }

// Answerer turns results into proxy answers. RateLimitedStatus is 429 unless set (some proxies turn any
// status but 401 and 403 into a 500, so 403 is the usual alternative).
type Answerer struct {
	RateLimitedStatus int
}

// Answer maps a result: 200 valid, 400 invalid request, 401 missing/malformed/unknown/ambiguous/expired/
// disabled, 403 scope or namespace, 429 (or RateLimitedStatus) rate limited with Retry-After.
func (a Answerer) Answer(r verifier.Result) Answer {
	h := [][2]string{{HeaderCode, string(r.Code)}}
	switch r.Code {
	case verifier.CodeValid:
		h = append(h, [2]string{HeaderKeyID, r.KeyID}, [2]string{HeaderName, r.Name},
			[2]string{HeaderNamespace, r.Namespace}, [2]string{HeaderScopes, r.ScopesHeader})
		return Answer{Status: 200, Headers: h}
	case verifier.CodeInsufficientScope, verifier.CodeWrongNamespace:
		return Answer{Status: 403, Headers: h}
	case verifier.CodeInvalidRequest:
		return Answer{Status: 400, Headers: h}
	case verifier.CodeRateLimited:
		status := a.RateLimitedStatus
		if status == 0 {
			status = 429
		}
		retry := time.Second
		if r.RateLimit != nil {
			retry = r.RateLimit.RetryAfter
		}
		secs := int((retry + time.Second - 1) / time.Second)
		return Answer{Status: status, Headers: append(h, [2]string{"Retry-After", strconv.Itoa(max(secs, 1))})}
	default:
		return Answer{Status: 401, Headers: append(h, [2]string{"WWW-Authenticate", `Bearer realm="keyward"`})}
	}
}
