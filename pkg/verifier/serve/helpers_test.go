package serve

import "github.com/keyward-dev/keyward/internal/verifiertest"

// The fixtures of internal/verifiertest, by the names these tests use.
var (
	t0         = verifiertest.T0
	mintKey    = verifiertest.MintKey
	apiKey     = verifiertest.APIKey
	withScopes = verifiertest.WithScopes
)
