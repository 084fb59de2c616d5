package controllers

import (
	"fmt"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"reflect"
	"runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
)

func TestSecretWriterRecognisesOnlyTheContentItWroteAndOnlyOnce(t *testing.T) {
	written := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Labels: map[string]string{keywardv1alpha1.APIKeyNameLabel: "k"},
			Annotations: map[string]string{keyrecord.AnnotationRevision: "2"}, OwnerReferences: []metav1.OwnerReference{{Kind: "APIKey", Name: "k", UID: "u1"}}},
		Data: map[string][]byte{"api-key": []byte("kw_x")},
	}
	var w SecretWriter
	w.record(written)
	for name, change := range map[string]func(*corev1.Secret){
		"made immutable":    func(s *corev1.Secret) { s.Immutable = ptr.To(true) },
		"data edited":       func(s *corev1.Secret) { s.Data["api-key"] = []byte("kw_y") },
		"label added":       func(s *corev1.Secret) { s.Labels[keywardv1alpha1.ManagedByLabel] = "someone" },
		"annotation edited": func(s *corev1.Secret) { s.Annotations[keyrecord.AnnotationRevision] = "3" },
		"owner changed":     func(s *corev1.Secret) { s.OwnerReferences[0].UID = "u2" },
		"another Secret":    func(s *corev1.Secret) { s.Name = "t" },
	} {
		other := written.DeepCopy()
		change(other)
		if w.IsEcho(other) {
			t.Errorf("%s: treated as our own echo", name)
		}
	}
	// Before the write returns, the content alone identifies its echo, once.
	echo := written.DeepCopy()
	echo.ResourceVersion, echo.UID = "42", "server-set"
	echo.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "keyward"}}
	if !w.IsEcho(echo) {
		t.Error("the Secret as written, with server-set fields, is not recognised as the echo")
	}
	if w.IsEcho(echo) {
		t.Error("the echo is recognised twice: the same content seen again (a resync, someone putting it back) would be skipped")
	}

	// Once the write has returned, only its version is the echo: the same content put back later is not.
	w.record(written)
	w.wrote(echo)
	later := echo.DeepCopy()
	later.ResourceVersion = "57"
	if w.IsEcho(later) {
		t.Error("what Keyward wrote, put back by someone else in a later version, is treated as the echo")
	}
	if !w.IsEcho(echo) {
		t.Error("the returned write is not recognised as the echo")
	}
	w.record(written)
	w.Forget(written)
	if w.IsEcho(written) {
		t.Error("a forgotten Secret is still recognised")
	}
	if len(w.written) != 0 {
		t.Errorf("the writer still remembers %d Secrets after their echoes", len(w.written))
	}
}

func TestStatusWriterRecognisesTheStatusItSentAsTheServerReturnsItOnce(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	sent := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "k", UID: "u1"}}
	sent.Status = keywardv1alpha1.APIKeyStatus{KeyID: "kid_1", Revision: 1, IssuedAt: ptr.To(metav1.NewTime(now)),
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "KeyReady", LastTransitionTime: metav1.NewTime(now)}}}
	w := StatusWriter{pending: map[types.UID][32]byte{sent.UID: keyStatusFingerprint(sent.Status)}}

	// The API server stores times in whole seconds, and others write usage and status.webhook beside it.
	echo := sent.DeepCopy()
	echo.ResourceVersion = "42"
	echo.Status.IssuedAt = ptr.To(metav1.NewTime(now.Truncate(time.Second)))
	echo.Status.Conditions[0].LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	echo.Status.Usage = &keywardv1alpha1.UsageStatus{Requests: 3}
	echo.Status.Webhook = &keywardv1alpha1.WebhookStatus{ConsecutiveFailures: 1}
	forged := echo.DeepCopy()
	forged.Status.KeyID = "kid_attacker"
	if w.IsEcho(forged) {
		t.Error("a status Keyward did not send is treated as its echo")
	}
	other := echo.DeepCopy()
	other.UID = "u2"
	if w.IsEcho(other) {
		t.Error("another APIKey's status is treated as the echo")
	}
	if !w.IsEcho(echo) {
		t.Error("the status as the API server returns it is not recognised as the echo")
	}
	if w.IsEcho(echo) {
		t.Error("the echo is recognised twice: the same status put back later by someone else would be skipped")
	}
}

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
	if got.Annotations[keywardv1alpha1.RotateAnnotation] != "t1" || got.Status.KeyID != "kid_1" || got.Name != "k" {
		t.Errorf("the transform dropped what the manager reads: %+v", got)
	}
}

// One namespace's 20,000 APIKeys in conflict or churn (requeued after their back-off, retried after
// errors, re-added by events) delay another namespace's revocation by one reconcile, not by 20,000: the key
// controller's queue, as built for production on a fake clock, takes turns between namespaces.
func TestOneNamespacesBacklogDelaysAnotherNamespacesRevocationByOneReconcile(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	q := NewFairQueue("apikey", workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, time.Minute), clk)
	defer q.ShutDown()
	churn := func(i int) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "crowded", Name: fmt.Sprintf("key-%05d", i)}}
	}
	for i := range 20000 {
		switch i % 3 {
		case 0:
			q.Add(churn(i))
		case 1:
			q.AddAfter(churn(i), 30*time.Second) // conflicts looking again
		default:
			q.AddRateLimited(churn(i)) // failed reconciles retrying
		}
	}
	clk.Step(time.Minute)
	for q.Len() < 20000 { // the delayed adds reach the queue on the clock's goroutine
		runtime.Gosched()
	}
	gets := 0
	take := func() reconcile.Request {
		item, _ := q.Get()
		gets++
		q.Done(item)
		q.Add(item) // churn: every one comes back
		return item
	}
	for range 500 {
		take()
	}
	revocation := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "quiet", Name: "leaked"}}
	q.Add(revocation)
	before := gets
	for take() != revocation {
		if gets-before > 20000 {
			t.Fatal("the revocation was never served")
		}
	}
	if waited := gets - before - 1; waited > 1 {
		t.Errorf("the revocation waited for %d reconciles of the crowded namespace; want at most 1", waited)
	}
}
