package notify

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/policy"
)

func TestEventsAreDerivedFromWhatStatusSaysBeforeAndAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	until := metav1.NewTime(now.Add(time.Hour))
	first := keywardv1alpha1.APIKeyStatus{KeyID: "kid_a", KeyHash: "sha256:a", Revision: 1, LastRotationReason: keywardv1alpha1.RotationInitial}
	rotated := keywardv1alpha1.APIKeyStatus{KeyID: "kid_b", KeyHash: "sha256:b", Revision: 2, LastRotationReason: keywardv1alpha1.RotationManual,
		PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_a", KeyHash: "sha256:a", ValidUntil: until}}}
	revoked := rotated
	revoked.LastRotationReason, revoked.PreviousKeys = keywardv1alpha1.RotationRevoked, nil
	ready, disabled, expired := keywardv1alpha1.ReasonKeyReady, keywardv1alpha1.ReasonDisabled, keywardv1alpha1.ReasonExpired
	cases := []struct {
		name  string
		c     policy.Change
		types []keywardv1alpha1.WebhookEvent
		check func(t *testing.T, m []keywardv1alpha1.WebhookMessage)
	}{
		{"the first key", policy.Change{After: first, AfterReady: ready}, []keywardv1alpha1.WebhookEvent{"key.created"}, nil},
		{"a rotation names the previous key and until when it works", policy.Change{Before: first, After: rotated, BeforeReady: ready, AfterReady: ready},
			[]keywardv1alpha1.WebhookEvent{"key.rotated"}, func(t *testing.T, m []keywardv1alpha1.WebhookMessage) {
				if m[0].PreviousKeyID != "kid_a" || m[0].PreviousValidUntil == nil || !m[0].PreviousValidUntil.Equal(&until) || m[0].KeyID != "kid_b" {
					t.Errorf("rotation message %+v", m[0])
				}
			}},
		{"a key found after a crash is announced", policy.Change{Before: keywardv1alpha1.APIKeyStatus{}, After: first, AfterReady: ready},
			[]keywardv1alpha1.WebhookEvent{"key.created"}, nil},
		{"revoking the current key", policy.Change{Before: first, After: revoked, Revoked: []string{"kid_a"}, BeforeReady: ready, AfterReady: ready},
			[]keywardv1alpha1.WebhookEvent{"key.revoked"}, func(t *testing.T, m []keywardv1alpha1.WebhookMessage) {
				if !reflect.DeepEqual(m[0].RevokedKeyIDs, []string{"kid_a"}) {
					t.Errorf("revoked %v", m[0].RevokedKeyIDs)
				}
			}},
		{"revoking a previous key", policy.Change{Before: rotated, After: rotated, Revoked: []string{"kid_a"}, BeforeReady: ready, AfterReady: ready},
			[]keywardv1alpha1.WebhookEvent{"key.revoked"}, nil},
		{"disabling", policy.Change{Before: first, After: first, BeforeReady: ready, AfterReady: disabled}, []keywardv1alpha1.WebhookEvent{"key.disabled"}, nil},
		{"enabling", policy.Change{Before: first, After: first, BeforeReady: disabled, AfterReady: ready}, []keywardv1alpha1.WebhookEvent{"key.enabled"}, nil},
		{"expiring, then nothing else", policy.Change{Before: first, After: first, BeforeReady: ready, AfterReady: ready, Expiring: true}, []keywardv1alpha1.WebhookEvent{"key.expiring"}, nil},
		{"expiry", policy.Change{Before: first, After: first, BeforeReady: ready, AfterReady: expired}, []keywardv1alpha1.WebhookEvent{"key.expired"}, nil},
		{"an idle reconcile announces nothing", policy.Change{Before: first, After: first, BeforeReady: ready, AfterReady: ready}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Now = now
			got := Events(tc.c)
			var types []keywardv1alpha1.WebhookEvent
			for _, m := range got {
				types = append(types, m.Type)
			}
			if !reflect.DeepEqual(types, tc.types) {
				t.Fatalf("events %v, want %v", types, tc.types)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func TestEnqueueFiltersNumbersAndPrunes(t *testing.T) {
	st := &keywardv1alpha1.WebhookStatus{DeliveredSequence: 4, Outbox: []keywardv1alpha1.WebhookMessage{{Sequence: 4, ID: "done"}, {Sequence: 5, ID: "pending"}}}
	Enqueue(st, "uid", []keywardv1alpha1.WebhookEvent{"key.rotated"}, []keywardv1alpha1.WebhookMessage{{Type: "key.created"}, {Type: "key.rotated"}})
	if len(st.Outbox) != 2 || st.Outbox[0].ID != "pending" || st.Outbox[1].Sequence != 6 || st.Outbox[1].ID != "msg_uid_6" {
		t.Errorf("outbox %+v; want the pending message and key.rotated as 6 (key.created filtered out)", st.Outbox)
	}
	var many []keywardv1alpha1.WebhookMessage
	for range MaxOutbox + 3 {
		many = append(many, keywardv1alpha1.WebhookMessage{Type: "key.rotated"})
	}
	if dropped := Enqueue(st, "uid", nil, many); dropped != 5 || len(st.Outbox) != MaxOutbox || st.Outbox[MaxOutbox-1].Sequence != 6+MaxOutbox+3 {
		t.Errorf("dropped %d, outbox %d, last %d", dropped, len(st.Outbox), st.Outbox[len(st.Outbox)-1].Sequence)
	}
}

func TestBodyOfWritesTheDocumentedJSON(t *testing.T) {
	exp := metav1.NewTime(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	b := string(BodyOf("billing", "orders", keywardv1alpha1.WebhookMessage{Type: "key.created", KeyID: "kid_a", Revision: 1, ExpiresAt: &exp,
		Timestamp: metav1.NewTime(exp.Time)}).Marshal())
	want := `{"type":"key.created","timestamp":"2027-01-01T00:00:00Z","data":{"namespace":"billing","name":"orders","keyID":"kid_a","revision":1,"expiresAt":"2027-01-01T00:00:00Z"}}`
	if b != want {
		t.Errorf("body %s\nwant %s", b, want)
	}
}

// A body can carry only what its type has fields for: this proves that no field of a webhook body, nor of
// the outbox message it is built from, is meant for a key, its random part or its hash. (The envtest suite
// also scans every delivered body for the keys it minted.)
func TestNoWebhookBodyFieldCanCarryAKeyOrItsHash(t *testing.T) {
	allowed := map[string]bool{"keyID": true, "previousKeyID": true, "revokedKeyIDs": true, "leakedKeyID": true}
	for _, typ := range []reflect.Type{reflect.TypeFor[Body](), reflect.TypeFor[keywardv1alpha1.WebhookMessage]()} {
		for _, name := range jsonFieldNames(typ) {
			lower := strings.ToLower(name)
			if !allowed[name] && (strings.Contains(lower, "key") || strings.Contains(lower, "hash") || strings.Contains(lower, "secret") ||
				strings.Contains(lower, "hint") || strings.Contains(lower, "token") && name != "token") {
				t.Errorf("%s has a field %q that could carry key material", typ, name)
			}
		}
	}
	if names := jsonFieldNames(reflect.TypeFor[Body]()); !slices.Contains(names, "keyID") {
		t.Errorf("the walk found %v; it misses the body's fields", names)
	}
}

// jsonFieldNames lists the JSON names of typ's fields, nested structs included.
func jsonFieldNames(typ reflect.Type) []string {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() == "k8s.io/apimachinery/pkg/apis/meta/v1" {
		return nil
	}
	var names []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		names = append(names, jsonFieldNames(f.Type)...)
	}
	return names
}

func TestPendingIsWhatTheDeliveryControllerIsNotDoneWith(t *testing.T) {
	ws := &keywardv1alpha1.WebhookStatus{Outbox: []keywardv1alpha1.WebhookMessage{{Sequence: 1}, {Sequence: 2}, {Sequence: 3}}, DeliveredSequence: 1}
	if got := Pending(ws); len(got) != 2 || got[0].Sequence != 2 {
		t.Errorf("Pending = %+v", got)
	}
	if Pending(nil) != nil {
		t.Error("Pending(nil) is not empty")
	}
	Prune(ws)
	if len(ws.Outbox) != 2 || ws.Outbox[0].Sequence != 2 {
		t.Errorf("Prune kept %+v; want what Pending returns", ws.Outbox)
	}
}

func TestASecretConflictOrAnInvalidSpecIsNotAnnouncedToReceivers(t *testing.T) {
	for _, reason := range []keywardv1alpha1.ConditionReason{keywardv1alpha1.ReasonSecretConflict, keywardv1alpha1.ReasonInvalidSpec} {
		if got := Events(policy.Change{BeforeReady: keywardv1alpha1.ReasonKeyReady, AfterReady: reason}); len(got) != 0 {
			t.Errorf("%s announces %+v", reason, got)
		}
	}
}
