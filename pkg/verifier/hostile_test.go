package verifier

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRequirementsAreParsedOnlyForAKnownKeyAndWithinTheCaps(t *testing.T) {
	key := mintKey(t, "ord")
	ix := NewIndex()
	ix.Upsert(apiKey("billing", "orders", key, t0.Add(time.Hour), nil, withScopes("orders:*", "*:read")))
	many := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("orders:s%d", i)
		}
		return strings.Join(s, ",")
	}
	cases := []struct {
		name string
		key  string
		req  Requirements
		want Code
	}{
		{"32 scopes are within the cap", key, Requirements{Scopes: []string{many(32)}}, CodeValid},
		{"33 scopes are over the cap", key, Requirements{Scopes: []string{many(32), "orders:x"}}, CodeInvalidRequest},
		{"an unknown key never gets its requirements read", mintKey(t, "ord"), Requirements{Scopes: []string{many(10000)}}, CodeNotFound},
		{"a garbage key never gets its requirements read", "kw_nope", Requirements{Scopes: []string{many(10000)}}, CodeMalformed},
		{"a scope longer than 128 characters", key, Requirements{Scopes: []string{"orders:" + strings.Repeat("x", 122)}}, CodeInvalidRequest},
		{"a required scope of 128 characters", key, Requirements{Scopes: []string{"orders:" + strings.Repeat("x", 121)}}, CodeValid},
		{"a trailing wildcard grant does not cover a malformed scope", key, Requirements{Scopes: []string{"orders:0:"}}, CodeInvalidRequest},
		{"an empty segment", key, Requirements{Scopes: []string{"orders::read"}}, CodeInvalidRequest},
		{"a wildcard is not a required scope", key, Requirements{Scopes: []string{"orders:*"}}, CodeInvalidRequest},
		{"blank entries require nothing", key, Requirements{Scopes: []string{"", " , ,"}, Query: "scope=&scopes="}, CodeValid},
		{"17 namespaces are over the cap", key, Requirements{Namespaces: []string{strings.Repeat("a,", 16) + "billing"}}, CodeInvalidRequest},
		{"scopes from the query", key, Requirements{Query: "scope=orders%3Aread&scopes=invoices:read,invoices:write"}, CodeInsufficientScope},
		{"namespaces from the query", key, Requirements{Query: "namespace=payments,billing"}, CodeValid},
		{"repeated namespace parameters must each hold", key, Requirements{Query: "namespace=payments&namespace=billing"}, CodeWrongNamespace},
		{"a query list narrows a header list", key, Requirements{Namespaces: []string{"billing,payments"}, Query: "namespaces=payments"}, CodeWrongNamespace},
		{"lists that agree", key, Requirements{Namespaces: []string{"billing, payments", "billing"}, Query: "namespace=billing"}, CodeValid},
		{"a present but blank header list accepts no namespace", key, Requirements{Namespaces: []string{" , ", "billing"}}, CodeWrongNamespace},
		{"a present but blank query namespace accepts no namespace", key, Requirements{Query: "namespace="}, CodeWrongNamespace},
		{"a query namespace without a value accepts no namespace", key, Requirements{Query: "namespace"}, CodeWrongNamespace},
		{"a route segment pins the namespace", key, Requirements{Route: "@namespace=billing;scope=invoices:write"}, CodeInsufficientScope},
		{"a route segment of another namespace", key, Requirements{Route: "@namespace=payments"}, CodeWrongNamespace},
		{"a namespace the route does not accept", key, Requirements{Namespaces: []string{"payments"}}, CodeWrongNamespace},
		{"a wrong namespace wins over a missing scope", key, Requirements{Namespaces: []string{"payments"}, Scopes: []string{"invoices:write"}}, CodeWrongNamespace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ix.VerifyRequest(context.Background(), tc.key, tc.req, t0); got.Code != tc.want {
				t.Errorf("VerifyRequest = %s (%s), want %s", got.Code, got.Problem, tc.want)
			}
		})
	}
}

// A route pin that a typo or an empty template mangled must fail closed: every case below answered VALID for
// a key of any namespace before the route segment had a strict grammar.
func TestAMalformedRouteSegmentIsAnInvalidRequestNeverAnUnpinnedRoute(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("attacker", "everything", key, t0.Add(time.Hour), nil, withScopes("*")))
	for _, seg := range []string{
		"@namespace=", "@namespace", "@Namespace=billing", "@ns=billing", "%40namespace=billing", "%40", "@",
		"@namespace=%20,%20", "@namespace=billing,", "@namespace=billing;", "@scope=", "@namespace=billing;scope",
		"@namespace=%zz", "@namespace=billing&namespace=attacker",
	} {
		t.Run(seg, func(t *testing.T) {
			got := ix.VerifyRequest(context.Background(), key, Requirements{Route: seg}, t0)
			if got.Code != CodeInvalidRequest || !strings.Contains(got.Problem, RouteSegmentGrammar) {
				t.Errorf("VerifyRequest = %s (%q), want INVALID_REQUEST naming the grammar", got.Code, got.Problem)
			}
		})
	}
	for _, seg := range []string{"@namespace=attacker", "@namespaces=billing,attacker;scopes=a:b,c:d", "@namespace=%61ttacker"} {
		if got := ix.VerifyRequest(context.Background(), key, Requirements{Route: seg}, t0); got.Code != CodeValid {
			t.Errorf("%s: %s (%s), want VALID", seg, got.Code, got.Problem)
		}
	}
}

func TestAnAPIKeyBeingDeletedIsRejectedAtOnce(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ak := apiKey("ns", "leaving", key, t0.Add(time.Hour), nil)
	ix.Upsert(ak)
	now := metav1.NewTime(t0)
	ak.DeletionTimestamp = &now
	ix.Upsert(ak) // foreground deletion: the object stays, with a deletion timestamp, until dependents go
	if got := ix.Verify(key, nil, t0).Code; got != CodeNotFound {
		t.Errorf("a key of an APIKey being deleted: %s", got)
	}
}

func TestTwoAPIKeysClaimingOneHashFailClosedAndNeitherDeleteRemovesTheOther(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("team-a", "one", key, t0.Add(time.Hour), nil, withScopes("*")))
	ix.Upsert(apiKey("team-b", "two", key, t0.Add(time.Hour), nil))
	if got := ix.Verify(key, nil, t0); got.Code != CodeAmbiguous || got.Name != "" || got.Scopes != nil {
		t.Fatalf("a key two APIKeys claim: %+v", got)
	}
	ix.Delete("team-b", "two")
	if got := ix.Verify(key, nil, t0); got.Code != CodeValid || got.Namespace != "team-a" {
		t.Errorf("after one claimant is deleted the other's key: %+v", got)
	}
	ix.Upsert(apiKey("team-b", "two", key, t0.Add(time.Hour), nil))
	ix.Upsert(apiKey("team-a", "one", mintKey(t, "kw"), t0.Add(time.Hour), nil)) // one rotates away
	if got := ix.Verify(key, nil, t0); got.Code != CodeValid || got.Namespace != "team-b" {
		t.Errorf("after one claimant rotated away: %+v", got)
	}
}

func TestTrustedNamespacesLimitWhichKeysCount(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("tenant", "k", key, t0.Add(time.Hour), nil, withScopes("*")))
	ix.TrustNamespaces([]string{"billing"})
	if got := ix.Verify(key, []string{"orders:read"}, t0); got.Code != CodeNotFound || got.Name != "" {
		t.Errorf("a key from an untrusted namespace: %+v", got)
	}
	ix.TrustNamespaces([]string{"billing", "tenant"})
	if got := ix.Verify(key, []string{"orders:read"}, t0).Code; got != CodeValid {
		t.Errorf("a key from a trusted namespace: %s", got)
	}
}

func TestACopyOfAKeyInAnUntrustedNamespaceDoesNotMakeTheTrustedKeyAmbiguous(t *testing.T) {
	key := mintKey(t, "kw")
	ix := NewIndex()
	ix.Upsert(apiKey("billing", "orders", key, t0.Add(time.Hour), nil, withScopes("orders:*")))
	// Someone who may write APIKey status in a namespace the verifier does not trust plants the same hash.
	ix.Upsert(apiKey("mallory", "copy", key, t0.Add(time.Hour), nil, withScopes("*")))
	ix.TrustNamespaces([]string{"billing"})
	if got := ix.Verify(key, []string{"orders:read"}, t0); got.Code != CodeValid || got.Namespace != "billing" {
		t.Errorf("the trusted key with an untrusted copy: %+v, want VALID from billing", got)
	}
	ix.TrustNamespaces([]string{"billing", "mallory"})
	if got := ix.Verify(key, nil, t0).Code; got != CodeAmbiguous {
		t.Errorf("two trusted claimants: %s, want AMBIGUOUS", got)
	}
}
