package controllers

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
