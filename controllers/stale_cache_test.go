package controllers

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// TestADeletedAPIKeyStillInTheCacheDoesNotRecreateItsSecret reconciles an APIKey whose Secret is gone, as
// the manager does when the Secret's deletion reaches its cache before the APIKey's: with the API server
// saying the APIKey is gone (or replaced by one of the same name), nothing is written; with it still there,
// the Secret is recreated. The two clients stand for the cache and the API server.
func TestADeletedAPIKeyStillInTheCacheDoesNotRecreateItsSecret(t *testing.T) {
	signer, err := keyrecord.NewSigner([]byte("a signing key for this test, thirty-two bytes or more"))
	if err != nil {
		t.Fatal(err)
	}
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders", UID: "uid-old",
		CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))}}
	key, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec := keyrecord.Record{Hash: keys.Hash(key), Revision: 1, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(89 * 24 * time.Hour),
		Reason: keywardv1alpha1.RotationInitial}
	keyrecord.WriteStatus(&ak.Status, rec, keys.Hint(key), time.Time{}, t0, signer, SubjectOf(ak))

	successor := ak.DeepCopy()
	successor.UID, successor.Status = "uid-new", keywardv1alpha1.APIKeyStatus{}
	for _, tc := range []struct {
		name      string
		apiServer []client.Object
		recreates bool
	}{
		{"gone from the API server", nil, false},
		{"replaced by an APIKey of the same name", []client.Object{successor}, false},
		{"still there", []client.Object{ak.DeepCopy()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(ak.DeepCopy()).
				WithStatusSubresource(&keywardv1alpha1.APIKey{}).Build()
			apiServer := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(tc.apiServer...).Build()
			r := &APIKeyReconciler{Client: cache, APIReader: apiServer, Clock: clocktesting.NewFakeClock(t0), Random: rand.Reader, Signer: signer}
			r.secrets = &SecretWriter{Client: cache, APIReader: apiServer, Signer: signer}
			r.status = &StatusWriter{Client: cache}
			r.mints = &MintAnnouncer{Client: cache, Clock: r.Clock, Signer: signer}
			if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(ak)}); err != nil {
				t.Fatal(err)
			}
			var secrets corev1.SecretList
			if err := cache.List(context.Background(), &secrets); err != nil {
				t.Fatal(err)
			}
			if got := len(secrets.Items) == 1; got != tc.recreates {
				t.Errorf("%d Secrets written; want the Secret recreated: %v", len(secrets.Items), tc.recreates)
			}
		})
	}
}
