package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestAMintIsAnnouncedAndCountedOnceWhoeverAnnouncesIt(t *testing.T) {
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders", UID: "uid-1"}}
	a := mintAnnouncement{revision: 3, reason: keywardv1alpha1.RotationManual, eventType: corev1.EventTypeNormal,
		eventReason: keywardv1alpha1.EventKeyRotated, action: "Rotate", note: strings.Repeat("n", 2000)}
	counted := func() float64 {
		return testutil.ToFloat64(rotationsTotal.WithLabelValues(string(keywardv1alpha1.RotationManual)))
	}

	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).Build()
	signer := mintSigner(t)
	first := &MintAnnouncer{Client: c, Clock: clocktesting.NewFakeClock(t0), Instance: "a", Signer: signer}
	second := &MintAnnouncer{Client: c, Clock: clocktesting.NewFakeClock(t0), Instance: "b", Signer: signer} // a new leader
	before := counted()
	for i, m := range []*MintAnnouncer{first, first, second} {
		created, err := m.Announce(context.Background(), ak, a)
		if err != nil || created != (i == 0) {
			t.Errorf("announcement %d: created %v, %v; want only the first to create the event", i+1, created, err)
		}
	}
	if got := counted() - before; got != 1 {
		t.Errorf("counted %v mints for one", got)
	}
	var evs eventsv1.EventList
	if err := c.List(context.Background(), &evs); err != nil || len(evs.Items) != 1 {
		t.Fatalf("%d events (%v); want 1", len(evs.Items), err)
	}
	if ev := evs.Items[0]; len(ev.Note) != maxEventNote || ev.Regarding.UID != ak.UID || ev.Reason != string(keywardv1alpha1.EventKeyRotated) {
		t.Errorf("the event: note of %d bytes, regarding %+v, reason %s", len(ev.Note), ev.Regarding, ev.Reason)
	}

	// The same name and revision for an APIKey recreated under that name is another event.
	again := ak.DeepCopy()
	again.UID = "uid-2"
	if MintEventName(again, 3, signer) == MintEventName(ak, 3, signer) {
		t.Error("a recreated APIKey's mint has the name of its predecessor's")
	}
	if name := MintEventName(&keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a.", 126) + "b", UID: "u"}}, 1, signer); len(validation.IsDNS1123Subdomain(name)) > 0 {
		t.Errorf("the event name of a 253-character APIKey is no DNS subdomain: %q", name)
	}

	for _, tc := range []struct {
		name  string
		err   error
		count float64
	}{
		{"refused by a quota on events: nobody will announce it, so it counts", apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "x", errors.New("exceeded quota")), 1},
		{"no answer: it may have landed, or a retry will count it", errors.New("connection reset"), 0},
	} {
		failing := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithInterceptorFuncs(interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return tc.err },
		}).Build()
		before := counted()
		if _, err := (&MintAnnouncer{Client: failing, Clock: clocktesting.NewFakeClock(t0), Signer: signer}).Announce(context.Background(), ak, a); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
		if got := counted() - before; got != tc.count {
			t.Errorf("%s: counted %v", tc.name, got)
		}
	}
}

func mintSigner(t testing.TB) *keyrecord.Signer {
	t.Helper()
	s, err := keyrecord.NewSigner([]byte("the mint events test's record signing key, long enough"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Anyone who may create events in the namespace knows an APIKey's UID and can guess its next revision. An
// event they create first, under any name they can compute (the UID and revision digest main used), does
// not stand for the announcement: the real one is created and the mint counted.
func TestAnEventCreatedAheadByATenantDoesNotSuppressTheAnnouncement(t *testing.T) {
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders", UID: "uid-1"}}
	a := mintAnnouncement{revision: 2, reason: keywardv1alpha1.RotationExpiring, eventType: corev1.EventTypeNormal,
		eventReason: keywardv1alpha1.EventKeyRotated, action: "Rotate", note: "n"}
	guessable := sha256.Sum256([]byte(string(ak.UID) + "/2"))
	planted := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders.r2." + hex.EncodeToString(guessable[:8])},
		EventTime: metav1.NewMicroTime(t0), ReportingController: "keyward", ReportingInstance: "keyward-x", Action: "Rotate",
		Reason: string(keywardv1alpha1.EventKeyRotated), Type: corev1.EventTypeNormal}
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(planted).Build()
	counted := func() float64 {
		return testutil.ToFloat64(rotationsTotal.WithLabelValues(string(keywardv1alpha1.RotationExpiring)))
	}
	before := counted()
	created, err := (&MintAnnouncer{Client: c, Clock: clocktesting.NewFakeClock(t0), Signer: mintSigner(t)}).Announce(context.Background(), ak, a)
	if err != nil || !created || counted()-before != 1 {
		t.Errorf("created %v (%v), counted %v; a planted event must not stand for the announcement", created, err, counted()-before)
	}
	other, err := keyrecord.NewSigner([]byte("another manager's record signing key, long enough!"))
	if err != nil {
		t.Fatal(err)
	}
	if MintEventName(ak, 2, other) == MintEventName(ak, 2, mintSigner(t)) {
		t.Error("the event name does not depend on the manager's key")
	}
}
