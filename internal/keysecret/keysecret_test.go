package keysecret

import (
	"crypto/rand"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/policy"
)

func desired(t *testing.T, tmpl *keywardv1alpha1.SecretTemplate) Desired {
	t.Helper()
	key, err := keys.Generate("ord", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	return Desired{
		APIKey: &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "billing"},
			Spec: keywardv1alpha1.APIKeySpec{SecretTemplate: tmpl}},
		Key: key,
		Record: policy.Key{Hash: keys.Hash(key), Revision: 4, IssuedAt: issued, Reason: policy.ReasonManual, HandledToken: "t2",
			Previous: []policy.PreviousKey{{Hash: "sha256:" + strings.Repeat("ab", 32), ValidUntil: issued.Add(time.Hour)}}},
		ExpiresAt: issued.Add(90 * 24 * time.Hour),
	}
}

func TestApplyThenReadRoundTrips(t *testing.T) {
	d := desired(t, nil)
	s := &corev1.Secret{}
	Apply(s, d)
	key, rec, err := Read(s)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if key != d.Key || !reflect.DeepEqual(rec, d.Record) {
		t.Errorf("Read = %+v, want %+v", rec, d.Record)
	}
	if Owner(s) != "orders" || s.Labels[keywardv1alpha1.ManagedByLabel] != "keyward" {
		t.Errorf("labels = %v", s.Labels)
	}
	if got := string(s.Data[DataKeyID]); got != keys.Sum(d.Key).ID() {
		t.Errorf("key-id = %q", got)
	}
	if got := string(s.Data[DataExpiresAt]); got != "2027-02-22T10:00:00Z" {
		t.Errorf("expires-at = %q", got)
	}
	for k, v := range s.Annotations {
		if strings.Contains(v, d.Key) {
			t.Errorf("annotation %s holds the key", k)
		}
	}
}

func TestReadDetectsTampering(t *testing.T) {
	other, _ := keys.Generate("ord", rand.Reader)
	cases := []struct {
		name   string
		mutate func(*corev1.Secret)
	}{
		{"key removed", func(s *corev1.Secret) { delete(s.Data, DataAPIKey) }},
		{"key replaced by another valid key", func(s *corev1.Secret) { s.Data[DataAPIKey] = []byte(other) }},
		{"key edited by hand", func(s *corev1.Secret) { s.Data[DataAPIKey] = []byte("my-own-password") }},
		{"hash annotation removed", func(s *corev1.Secret) { delete(s.Annotations, AnnotationKeyHash) }},
		{"revision garbled", func(s *corev1.Secret) { s.Annotations[AnnotationRevision] = "four" }},
		{"issue time garbled", func(s *corev1.Secret) { s.Annotations[AnnotationIssuedAt] = "yesterday" }},
		{"previous keys garbled", func(s *corev1.Secret) { s.Annotations[AnnotationPreviousKeys] = "[{" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := desired(t, nil)
			s := &corev1.Secret{}
			Apply(s, d)
			tc.mutate(s)
			_, _, err := Read(s)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Read = %v, want ErrTampered", err)
			}
			if strings.Contains(err.Error(), d.Key) || strings.Contains(err.Error(), other) {
				t.Error("the error contains key material")
			}
		})
	}
}

func TestReadIgnoresEditsOfDerivedData(t *testing.T) {
	d := desired(t, nil)
	s := &corev1.Secret{}
	Apply(s, d)
	s.Data[DataExpiresAt] = []byte("never")
	s.Data[DataKeyID] = []byte("kid_x")
	if _, _, err := Read(s); err != nil {
		t.Errorf("Read = %v; derived data is rewritten, not a reason to rotate", err)
	}
}

func TestApplyManagesTemplateKeysAndKeepsOthers(t *testing.T) {
	d := desired(t, &keywardv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "billing", "tier": "gold"},
		Annotations: map[string]string{"reloader.stakater.com/match": "true"},
	})
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"added-by-someone": "x"},
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"},
	}}
	Apply(s, d)
	if s.Labels["team"] != "billing" || s.Labels["tier"] != "gold" || s.Annotations["reloader.stakater.com/match"] != "true" {
		t.Fatalf("template not applied: %v %v", s.Labels, s.Annotations)
	}
	d.APIKey.Spec.SecretTemplate = &keywardv1alpha1.SecretTemplate{Labels: map[string]string{"team": "payments"}}
	Apply(s, d)
	if s.Labels["team"] != "payments" {
		t.Errorf("changed template label not updated: %v", s.Labels)
	}
	if _, ok := s.Labels["tier"]; ok {
		t.Errorf("label removed from the template is still on the Secret: %v", s.Labels)
	}
	if _, ok := s.Annotations["reloader.stakater.com/match"]; ok {
		t.Errorf("annotation removed from the template is still on the Secret: %v", s.Annotations)
	}
	if s.Labels["added-by-someone"] != "x" || s.Annotations["kubectl.kubernetes.io/last-applied-configuration"] != "{}" {
		t.Errorf("metadata others set was removed: %v %v", s.Labels, s.Annotations)
	}
}
