package v1alpha1_test

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// fullStatus sets every field of APIKeyStatus, so that a field OwnedBy forgets shows as zero.
func fullStatus() keywardv1alpha1.APIKeyStatus {
	now := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	return keywardv1alpha1.APIKeyStatus{ObservedGeneration: 2, Conditions: []metav1.Condition{{Type: "Ready"}}, SecretName: "s",
		KeyID: "kid_x", KeyHint: "kw_…x", KeyHash: "sha256:x", Revision: 3, IssuedAt: &now, ExpiresAt: &now, RenewalTime: &now,
		PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_y"}}, PreviousKeysInUse: []string{"kid_y"},
		LastRotationReason: keywardv1alpha1.RotationManual, LastHandledRotateToken: "t", RecordSignature: "sig",
		Webhook: &keywardv1alpha1.WebhookStatus{DeliveredSequence: 1}, Usage: &keywardv1alpha1.UsageStatus{},
		Approval: &keywardv1alpha1.ApprovalStatus{}, Leaks: []keywardv1alpha1.LeakReport{{KeyID: "kid_x"}}}
}

func TestEveryStatusFieldHasExactlyOneOwner(t *testing.T) {
	st := fullStatus()
	v := reflect.ValueOf(st)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fullStatus leaves status.%s unset", keywardv1alpha1.StatusFieldName(v.Type().Field(i)))
		}
	}
	owners := []keywardv1alpha1.StatusOwner{keywardv1alpha1.StatusOwnerKeyController, keywardv1alpha1.StatusOwnerDelivery, keywardv1alpha1.StatusOwnerVerifier,
		keywardv1alpha1.StatusOwnerApprover, keywardv1alpha1.StatusOwnerLeakReporter}
	for i := range v.NumField() {
		name := keywardv1alpha1.StatusFieldName(v.Type().Field(i))
		var kept []keywardv1alpha1.StatusOwner
		for _, o := range owners {
			if !reflect.ValueOf(st.OwnedBy(o)).Field(i).IsZero() {
				kept = append(kept, o)
			}
		}
		if len(kept) != 1 || kept[0] != keywardv1alpha1.StatusFieldOwners[name] {
			t.Errorf("status.%s is kept for %v; want its one owner %q", name, kept, keywardv1alpha1.StatusFieldOwners[name])
		}
	}
}
