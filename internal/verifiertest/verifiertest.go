// Package verifiertest builds the keys and APIKeys that the tests of pkg/verifier and its servers feed to an
// index, without a cluster.
package verifiertest

import (
	"crypto/rand"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
)

// T0 is the instant the tests verify at.
var T0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// MintKey returns a new key with prefix.
func MintKey(t testing.TB, prefix string) string {
	t.Helper()
	k, err := keys.Generate(prefix, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// APIKey builds an APIKey whose status names current as its key until expires, with previous keys.
func APIKey(ns, name, current string, expires time.Time, previous map[string]time.Time, mutate ...func(*keywardv1alpha1.APIKey)) *keywardv1alpha1.APIKey {
	exp := metav1.NewTime(expires)
	ak := &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status:     keywardv1alpha1.APIKeyStatus{KeyHash: keys.Hash(current), ExpiresAt: &exp},
	}
	for k, until := range previous {
		ak.Status.PreviousKeys = append(ak.Status.PreviousKeys, keywardv1alpha1.PreviousKey{
			KeyID: keys.Sum(k).ID(), KeyHash: keys.Hash(k), ValidUntil: metav1.NewTime(until)})
	}
	for _, m := range mutate {
		m(ak)
	}
	return ak
}

// WithScopes sets the APIKey's scopes.
func WithScopes(s ...keywardv1alpha1.Scope) func(*keywardv1alpha1.APIKey) {
	return func(ak *keywardv1alpha1.APIKey) { ak.Spec.Scopes = s }
}
