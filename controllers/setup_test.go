package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSecretWriterRecognisesOnlyTheContentItWrote(t *testing.T) {
	written := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Labels: map[string]string{"a": "1"},
			Annotations: map[string]string{"b": "2"}, OwnerReferences: []metav1.OwnerReference{{Kind: "APIKey", Name: "k", UID: "u1"}}},
		Data: map[string][]byte{"api-key": []byte("kw_x")},
	}
	var w SecretWriter
	w.record(written)

	echo := written.DeepCopy()
	echo.ResourceVersion, echo.UID = "42", "server-set"
	echo.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "keyward"}}
	if !w.IsEcho(echo) {
		t.Error("the Secret as written, with server-set fields, is not recognised as the echo")
	}
	for name, change := range map[string]func(*corev1.Secret){
		"made immutable":    func(s *corev1.Secret) { s.Immutable = ptr.To(true) },
		"data edited":       func(s *corev1.Secret) { s.Data["api-key"] = []byte("kw_y") },
		"label added":       func(s *corev1.Secret) { s.Labels["c"] = "3" },
		"annotation edited": func(s *corev1.Secret) { s.Annotations["b"] = "x" },
		"owner changed":     func(s *corev1.Secret) { s.OwnerReferences[0].UID = "u2" },
		"another Secret":    func(s *corev1.Secret) { s.Name = "t" },
	} {
		other := written.DeepCopy()
		change(other)
		if w.IsEcho(other) {
			t.Errorf("%s: treated as our own echo", name)
		}
	}
	// Once the write has returned, only its version is the echo: the same content put back later is not.
	w.wrote(echo)
	if !w.IsEcho(echo) {
		t.Error("the returned write is not recognised as the echo")
	}
	later := echo.DeepCopy()
	later.ResourceVersion = "57"
	if w.IsEcho(later) {
		t.Error("what Keyward wrote, put back by someone else in a later version, is treated as the echo")
	}
	w.Forget(written)
	if w.IsEcho(written) {
		t.Error("a forgotten Secret is still recognised")
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
