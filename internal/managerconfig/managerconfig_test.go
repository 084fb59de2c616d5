package managerconfig

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func TestTheCachesDropManagedFields(t *testing.T) {
	transform := CacheOptions().DefaultTransform
	if transform == nil {
		t.Fatal("the manager's cache keeps whole objects")
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "keyward"}}}}
	out, err := transform(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*corev1.Secret); got.ManagedFields != nil || got.Name != "s" {
		t.Errorf("cached %+v; want the object without managedFields", got.ObjectMeta)
	}
}

func TestTheManagersCacheKeepsOfAnAPIKeyOnlyWhatItReads(t *testing.T) {
	opts := CacheOptions()
	used := metav1.NewTime(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	var transform func(any) (any, error)
	for obj, by := range opts.ByObject {
		if _, ok := obj.(*keywardv1alpha1.APIKey); ok {
			transform = by.Transform
		}
	}
	if transform == nil {
		t.Fatal("APIKeys are cached whole")
	}
	big := strings.Repeat("x", 200<<10)
	ak := &keywardv1alpha1.APIKey{
		ObjectMeta: metav1.ObjectMeta{Name: "k", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"spec":{}}`,
				keywardv1alpha1.RotateAnnotation: "t1", "tenant.example/blob": big, "keyward.dev/unknown": big},
			Labels:          map[string]string{"team": "billing"},
			Finalizers:      []string{"tenant.example/hold", keywardv1alpha1.WebhookFinalizer},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Thing", Name: "t", UID: "u"}}},
		Spec: keywardv1alpha1.APIKeySpec{Description: big[:1024], DisplayName: "d", Scopes: []keywardv1alpha1.Scope{"a:b"},
			RateLimit:      &keywardv1alpha1.RateLimit{Requests: 1, Period: "1s"},
			Webhook:        &keywardv1alpha1.WebhookSpec{URL: "https://h.example", CABundle: big[:60000]},
			SecretTemplate: &keywardv1alpha1.SecretTemplate{Labels: map[string]string{"team": "billing"}}},
		Status: keywardv1alpha1.APIKeyStatus{KeyID: "kid_1", Usage: &keywardv1alpha1.UsageStatus{Requests: 7, Keys: []keywardv1alpha1.KeyUsage{
			{KeyID: "kid_1", Valid: 7, LastUsedAt: &used, Rejected: map[string]int64{"EXPIRED": 1}}, {KeyID: "kid_0", RateLimited: 2}}}},
	}
	out, err := transform(ak)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*keywardv1alpha1.APIKey)
	if got.ManagedFields != nil || len(got.Annotations) != 1 || got.Labels != nil || got.OwnerReferences != nil {
		t.Errorf("cached managedFields %v, annotations %d, labels %v, owners %v; want the rotate annotation alone",
			got.ManagedFields, len(got.Annotations), got.Labels, got.OwnerReferences)
	}
	if !reflect.DeepEqual(got.Finalizers, []string{keywardv1alpha1.WebhookFinalizer}) {
		t.Errorf("cached finalizers %v; want Keyward's alone", got.Finalizers)
	}
	if s := got.Spec; s.Description != "" || s.DisplayName != "" || s.Scopes != nil || s.RateLimit != nil || s.Webhook.CABundle != "" ||
		s.Webhook.URL != "https://h.example" || s.SecretTemplate.Labels["team"] != "billing" {
		t.Errorf("cached spec %+v; want it without what only the verifier and the delivery read", s)
	}
	if ak.Spec.Webhook.CABundle == "" || len(ak.Annotations) != 4 {
		t.Error("the transform changed the object it was given (an informer's copy)")
	}
	// Of the usage report, only each key's last use (whether a previous key is still used).
	if u := got.Status.Usage; u == nil || u.Requests != 0 || len(u.Keys) != 1 ||
		!reflect.DeepEqual(u.Keys[0], keywardv1alpha1.KeyUsage{KeyID: "kid_1", LastUsedAt: &used}) {
		t.Errorf("cached usage %+v; want kid_1's last use alone", u)
	}
	// Every status field the manager owns stays whole.
	ak.Status.Conditions, ak.Status.PreviousKeysInUse = []metav1.Condition{{Type: "Ready"}}, []string{"kid_0"}
	ak.Status.Webhook = &keywardv1alpha1.WebhookStatus{DeliveredSequence: 3}
	out, err = transform(ak)
	if err != nil {
		t.Fatal(err)
	}
	managers := []keywardv1alpha1.StatusOwner{keywardv1alpha1.StatusOwnerKeyController, keywardv1alpha1.StatusOwnerDelivery}
	if kept := out.(*keywardv1alpha1.APIKey).Status; !reflect.DeepEqual(kept.OwnedBy(managers...), ak.Status.OwnedBy(managers...)) {
		t.Errorf("the cache changed status fields the manager owns: %+v", kept)
	}
	// Of an approval, who decided, when and why, not the (up to 256) scopes it covers.
	ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob", At: used, Reason: "ok",
		Covers: keywardv1alpha1.ApprovedSpec{Scopes: []keywardv1alpha1.Scope{"a:b"}}}}
	out, err = transform(ak)
	if err != nil {
		t.Fatal(err)
	}
	if a := out.(*keywardv1alpha1.APIKey).Status.Approval; a == nil || a.Denied != nil ||
		!reflect.DeepEqual(*a.Approved, keywardv1alpha1.ApprovalDecision{By: "bob", At: used, Reason: "ok"}) || len(ak.Status.Approval.Approved.Covers.Scopes) != 1 {
		t.Errorf("cached approval %+v; want who, when and why alone (and the informer's copy untouched)", a)
	}
	if got.Annotations[keywardv1alpha1.RotateAnnotation] != "t1" || got.Status.KeyID != "kid_1" || got.Name != "k" {
		t.Errorf("the transform dropped what the manager reads: %+v", got)
	}
}
