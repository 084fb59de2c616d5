package controllers

import (
	"context"
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
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestAMintIsAnnouncedAndCountedOnceWhoeverAnnouncesIt(t *testing.T) {
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders", UID: "uid-1"}}
	a := mintAnnouncement{revision: 3, reason: keywardv1alpha1.RotationManual, eventType: corev1.EventTypeNormal,
		eventReason: EventKeyRotated, action: "Rotate", note: strings.Repeat("n", 2000)}
	counted := func() float64 {
		return testutil.ToFloat64(rotationsTotal.WithLabelValues(string(keywardv1alpha1.RotationManual)))
	}

	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).Build()
	first := &MintAnnouncer{Client: c, Clock: clocktesting.NewFakeClock(t0), Instance: "a"}
	second := &MintAnnouncer{Client: c, Clock: clocktesting.NewFakeClock(t0), Instance: "b"} // a new leader
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
	if ev := evs.Items[0]; len(ev.Note) != maxEventNote || ev.Regarding.UID != ak.UID || ev.Reason != string(EventKeyRotated) {
		t.Errorf("the event: note of %d bytes, regarding %+v, reason %s", len(ev.Note), ev.Regarding, ev.Reason)
	}

	// The same name and revision for an APIKey recreated under that name is another event.
	again := ak.DeepCopy()
	again.UID = "uid-2"
	if MintEventName(again, 3) == MintEventName(ak, 3) {
		t.Error("a recreated APIKey's mint has the name of its predecessor's")
	}
	if name := MintEventName(&keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a.", 126) + "b", UID: "u"}}, 1); len(validation.IsDNS1123Subdomain(name)) > 0 {
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
		if _, err := (&MintAnnouncer{Client: failing, Clock: clocktesting.NewFakeClock(t0)}).Announce(context.Background(), ak, a); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
		if got := counted() - before; got != tc.count {
			t.Errorf("%s: counted %v", tc.name, got)
		}
	}
}
