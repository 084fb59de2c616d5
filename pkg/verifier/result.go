package verifier

import "time"

// Code is the outcome of a verification.
type Code string

// The verification codes, in the order Verify checks them.
const (
	CodeValid     Code = "VALID"
	CodeMalformed Code = "MALFORMED"
	CodeNotFound  Code = "NOT_FOUND"
	// CodeAmbiguous: two APIKeys claim the presented key; the verifier fails closed until one lets go.
	CodeAmbiguous Code = "AMBIGUOUS"
	CodeDisabled  Code = "DISABLED"
	CodeExpired   Code = "EXPIRED"
	// CodeInvalidRequest: what the route requires (scopes, namespaces) is malformed or over the caps.
	CodeInvalidRequest Code = "INVALID_REQUEST"
	// CodeWrongNamespace: the key's APIKey is not in a namespace the route accepts.
	CodeWrongNamespace    Code = "WRONG_NAMESPACE"
	CodeInsufficientScope Code = "INSUFFICIENT_SCOPE"
	CodeRateLimited       Code = "RATE_LIMITED"
)

// Codes lists every code, for metrics and documentation.
var Codes = []Code{CodeValid, CodeMalformed, CodeNotFound, CodeAmbiguous, CodeDisabled, CodeExpired,
	CodeInvalidRequest, CodeWrongNamespace, CodeInsufficientScope, CodeRateLimited}

// Result is the answer for one presented key. Everything in it is public: no key material.
type Result struct {
	Code Code
	// KeyID, Namespace and Name identify the key and its APIKey once the key is known.
	KeyID     string
	Namespace string
	Name      string
	// Scopes are the APIKey's scopes (shared; do not modify) and ScopesHeader the same joined with commas.
	Scopes       []string
	ScopesHeader string
	// ExpiresAt is when the presented key stops being accepted (its validUntil for a previous key).
	ExpiresAt time.Time
	// RateLimit is set when the APIKey has a rate limit and the key got that far.
	RateLimit *RateLimitState
	// Problem explains CodeInvalidRequest; it never holds key material.
	Problem string
}

// Valid reports whether the key is accepted.
func (r Result) Valid() bool { return r.Code == CodeValid }

// Identified reports whether the result describes a live key of a known APIKey (valid, or refused for the
// route's requirements or its rate limit). Disabled, expired and unknown keys are not described.
func (r Result) Identified() bool {
	switch r.Code {
	case CodeValid, CodeWrongNamespace, CodeInsufficientScope, CodeRateLimited:
		return true
	}
	return false
}
