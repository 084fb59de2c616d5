package keyrecord

import (
	"crypto/rand"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
)

var (
	issued  = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	subject = Subject{Namespace: "billing", APIKey: "orders", Secret: "orders-key", UID: "7d1c2b9e-uid-one", Created: issued.Add(-time.Hour)}
)

func testSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mint(t testing.TB) string {
	t.Helper()
	key, err := keys.Generate("ord", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func contents(t testing.TB, tmpl *keywardv1alpha1.SecretTemplate) Contents {
	t.Helper()
	key := mint(t)
	return Contents{
		APIKeyName: "orders", Template: tmpl, Key: key,
		Record: Record{Hash: keys.Hash(key), Revision: 4, IssuedAt: issued, ExpiresAt: issued.Add(90 * 24 * time.Hour),
			Reason: keywardv1alpha1.RotationManual, HandledToken: "t2",
			Previous: []PreviousKey{{Hash: "sha256:" + strings.Repeat("ab", 32), ValidUntil: issued.Add(time.Hour)}}},
	}
}

func TestWriteThenReadSecretRoundTripsAndVerifies(t *testing.T) {
	c := contents(t, nil)
	s := &corev1.Secret{}
	WriteSecret(s, c, testSigner(t), subject)
	claim := ReadSecret(s)
	if claim.Key != c.Key || !reflect.DeepEqual(claim.Record, c.Record) {
		t.Errorf("ReadSecret = %+v, want %+v", claim.Record, c.Record)
	}
	if err := claim.Check(testSigner(t), subject, Record{}, issued); err != nil {
		t.Errorf("Check of what Keyward wrote: %v", err)
	}
	if SecretOwner(s) != "orders" || s.Labels[keywardv1alpha1.ManagedByLabel] != "keyward" || s.Type != corev1.SecretTypeOpaque {
		t.Errorf("labels %v type %s", s.Labels, s.Type)
	}
	if got := string(s.Data[DataKeyID]); got != keys.Sum(c.Key).ID() {
		t.Errorf("key-id = %q", got)
	}
	if got := string(s.Data[DataExpiresAt]); got != "2027-02-22T10:00:00Z" {
		t.Errorf("expires-at = %q", got)
	}
	for k, v := range s.Annotations {
		if strings.Contains(v, c.Key) || strings.Contains(v, c.Key[4:36]) {
			t.Errorf("annotation %s holds key material", k)
		}
	}
}

func TestCheckNamesEveryChangeSomeoneElseMade(t *testing.T) {
	other := mint(t)
	otherSigner, _ := NewSigner([]byte("another key, another manager....."))
	cases := []struct {
		name   string
		mutate func(*corev1.Secret, Contents)
		// sub and genuine default to subject and the written record.
		sub     *Subject
		genuine *Record
		want    []string
	}{
		{name: "key removed", mutate: func(s *corev1.Secret, _ Contents) { delete(s.Data, DataAPIKey) },
			want: []string{"data api-key"}},
		{name: "key edited by hand", mutate: func(s *corev1.Secret, _ Contents) { s.Data[DataAPIKey] = []byte("hunter2") },
			want: []string{"data api-key"}},
		{name: "key and hash replaced by a key of the editor's choice", mutate: func(s *corev1.Secret, _ Contents) {
			s.Data[DataAPIKey] = []byte(other)
			s.Annotations[AnnotationKeyHash] = keys.Hash(other)
		}, want: []string{AnnotationKeyHash}},
		{name: "planted previous key", mutate: func(s *corev1.Secret, _ Contents) {
			s.Annotations[AnnotationPreviousKeys] = `[{"keyHash":"` + keys.Hash(other) + `","validUntil":"2099-01-01T00:00:00Z"}]`
		}, want: []string{AnnotationPreviousKeys}},
		{name: "previous keys garbled", mutate: func(s *corev1.Secret, _ Contents) { s.Annotations[AnnotationPreviousKeys] = "[{" },
			want: []string{AnnotationPreviousKeys}},
		{name: "revision raised", mutate: func(s *corev1.Secret, _ Contents) { s.Annotations[AnnotationRevision] = "9" },
			want: []string{AnnotationRevision}},
		{name: "issue time moved", mutate: func(s *corev1.Secret, _ Contents) { s.Annotations[AnnotationIssuedAt] = "2030-01-01T00:00:00Z" },
			want: []string{AnnotationIssuedAt}},
		{name: "expiry moved", mutate: func(s *corev1.Secret, _ Contents) { s.Annotations[AnnotationExpiresAt] = "2099-01-01T00:00:00Z" },
			want: []string{AnnotationExpiresAt}},
		{name: "signature removed", mutate: func(s *corev1.Secret, _ Contents) { delete(s.Annotations, AnnotationSignature) },
			want: []string{AnnotationSignature}},
		{name: "no genuine record to compare with", mutate: func(s *corev1.Secret, _ Contents) { s.Annotations[AnnotationRevision] = "9" },
			genuine: &Record{}, want: []string{AnnotationSignature}},
		{name: "record signed by another manager", mutate: func(s *corev1.Secret, c Contents) {
			WriteSecret(s, c, otherSigner, subject)
		}, want: []string{AnnotationSignature}},
		{name: "genuine record copied from another APIKey", mutate: func(*corev1.Secret, Contents) {},
			sub: &Subject{Namespace: "billing", APIKey: "invoices", Secret: "orders-key"}, genuine: &Record{}, want: []string{AnnotationSignature}},
		{name: "older genuine record put back", mutate: func(*corev1.Secret, Contents) {},
			genuine: &Record{Hash: "sha256:newer", Revision: 5}, want: []string{AnnotationRevision + " (an older record, revision 4, was put back over revision 5)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := contents(t, nil)
			s := &corev1.Secret{}
			WriteSecret(s, c, testSigner(t), subject)
			tc.mutate(s, c)
			sub, genuine := subject, c.Record
			if tc.sub != nil {
				sub = *tc.sub
			}
			if tc.genuine != nil {
				genuine = *tc.genuine
			}
			err := ReadSecret(s).Check(testSigner(t), sub, genuine, issued)
			var te *TamperedError
			if !errors.As(err, &te) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Check = %v, want a TamperedError", err)
			}
			if !reflect.DeepEqual(te.Changed, tc.want) {
				t.Errorf("Changed = %q, want %q", te.Changed, tc.want)
			}
			if strings.Contains(err.Error(), c.Key) || strings.Contains(err.Error(), other) {
				t.Error("the error contains key material")
			}
		})
	}
}

func TestCheckAcceptsANewerRecordThanStatusShows(t *testing.T) {
	// A crash between the Secret write and the status write leaves status one revision behind.
	c := contents(t, nil)
	s := &corev1.Secret{}
	WriteSecret(s, c, testSigner(t), subject)
	if err := ReadSecret(s).Check(testSigner(t), subject, Record{Hash: "sha256:older", Revision: 3}, issued); err != nil {
		t.Errorf("Check = %v; a newer record Keyward signed is the current one", err)
	}
}

func TestCheckIgnoresEditsOfDerivedData(t *testing.T) {
	c := contents(t, nil)
	s := &corev1.Secret{}
	WriteSecret(s, c, testSigner(t), subject)
	s.Data[DataExpiresAt] = []byte("never")
	s.Data[DataKeyID] = []byte("kid_x")
	if err := ReadSecret(s).Check(testSigner(t), subject, c.Record, issued); err != nil {
		t.Errorf("Check = %v; derived data is rewritten, not a reason to rotate", err)
	}
}

func TestWriteSecretManagesTemplateKeysAndKeepsOthers(t *testing.T) {
	c := contents(t, &keywardv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "billing", "tier": "gold"},
		Annotations: map[string]string{"reloader.stakater.com/match": "true"},
	})
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"added-by-someone": "x"},
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"},
	}}
	WriteSecret(s, c, testSigner(t), subject)
	if s.Labels["team"] != "billing" || s.Labels["tier"] != "gold" || s.Annotations["reloader.stakater.com/match"] != "true" {
		t.Fatalf("template not applied: %v %v", s.Labels, s.Annotations)
	}
	c.Template = &keywardv1alpha1.SecretTemplate{Labels: map[string]string{"team": "payments"}}
	WriteSecret(s, c, testSigner(t), subject)
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

func TestCheckSaysAGenuineRecordOlderThanAWithdrawalIsSuperseded(t *testing.T) {
	signer := testSigner(t)
	c := contents(t, nil)
	s := &corev1.Secret{}
	WriteSecret(s, c, signer, subject)
	withdrawal := Record{Revision: c.Record.Revision + 1, Reason: keywardv1alpha1.RotationRevoked}
	if !withdrawal.Withdrawn() || withdrawal.IsZero() {
		t.Fatalf("a record with a revision and no key must be a withdrawal, not zero")
	}
	if err := ReadSecret(s).Check(signer, subject, withdrawal, issued); !errors.Is(err, ErrSuperseded) {
		t.Errorf("the withdrawn key's Secret: %v, want ErrSuperseded", err)
	}
	// Written by a manager that crashed before recording it: newer than the withdrawal, so genuine.
	next := contents(t, nil)
	next.Record.Revision = withdrawal.Revision
	WriteSecret(s, next, signer, subject)
	if err := ReadSecret(s).Check(signer, subject, withdrawal, issued); err != nil {
		t.Errorf("the withdrawal's own key: %v, want genuine", err)
	}
	// A Secret someone edited is tampered, withdrawal or not.
	s.Data[DataAPIKey] = []byte(mint(t))
	var tampered *TamperedError
	if err := ReadSecret(s).Check(signer, subject, withdrawal, issued); !errors.As(err, &tampered) {
		t.Errorf("an edited key under a withdrawal: %v, want a TamperedError", err)
	}
}

// A key's expiry only ever moves earlier: its own genuine record from before a shorter expiry, put back over
// the one status shows, is tampering, named by the expiry it would bring back.
func TestCheckSaysAGenuineRecordWithALaterExpiryThanStatusIsTampering(t *testing.T) {
	c := contents(t, nil)
	s := &corev1.Secret{}
	WriteSecret(s, c, testSigner(t), subject)
	shortened := c.Record
	shortened.ExpiresAt = issued.Add(time.Hour)
	err := ReadSecret(s).Check(testSigner(t), subject, shortened, issued)
	var te *TamperedError
	if !errors.As(err, &te) {
		t.Fatalf("Check = %v, want a TamperedError", err)
	}
	want := []string{AnnotationExpiresAt + " (a later expiry, " + formatTime(c.Record.ExpiresAt) + ", was put back over " +
		formatTime(shortened.ExpiresAt) + ")"}
	if !reflect.DeepEqual(te.Changed, want) {
		t.Errorf("Changed = %q, want %q", te.Changed, want)
	}
	lengthened := c.Record
	lengthened.ExpiresAt = c.Record.ExpiresAt.Add(time.Hour)
	if err := ReadSecret(s).Check(testSigner(t), subject, lengthened, issued); err != nil {
		t.Errorf("a Secret whose expiry is earlier than status shows (a shortening written before its status): %v", err)
	}
}

// Whoever may write Secrets can label one as Keyward's: the cache keeps only what Keyward reads and
// writes, each bounded, whatever else the Secret holds.
func TestTrimSecretKeepsWhatKeywardWritesAndBoundsIt(t *testing.T) {
	c := contents(t, &keywardv1alpha1.SecretTemplate{Labels: map[string]string{"team": "billing"},
		Annotations: map[string]string{"reloader.stakater.com/match": "true"}})
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "billing",
		Labels:      map[string]string{"someone": "else"},
		Annotations: map[string]string{"bulk.example/blob": strings.Repeat("b", 200<<10), "keyward.dev/planted": strings.Repeat("p", 100<<10)}},
		Data: map[string][]byte{"other": make([]byte, 500<<10)}}
	WriteSecret(s, c, testSigner(t), subject)
	for range 20 {
		s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{Name: strings.Repeat("o", 200), UID: "u"})
	}
	s.OwnerReferences[3].Controller = ptr.To(true)
	kept := TrimSecret(s)
	if _, ok := kept.Data["other"]; ok || kept.Annotations["bulk.example/blob"] != "" || kept.Annotations["keyward.dev/planted"] != "" ||
		kept.Labels["someone"] != "" {
		t.Errorf("the cache keeps what Keyward neither reads nor writes: %v %v %v", kept.Labels, len(kept.Annotations), len(kept.Data))
	}
	if err := ReadSecret(kept).Check(testSigner(t), subject, c.Record, issued); err != nil {
		t.Errorf("the trimmed Secret's record no longer verifies: %v", err)
	}
	if kept.Labels["team"] != "billing" || kept.Annotations["reloader.stakater.com/match"] != "true" {
		t.Errorf("the template's keys are gone: %v %v", kept.Labels, kept.Annotations)
	}
	if len(kept.OwnerReferences) != 1 || kept.OwnerReferences[0].Controller == nil {
		t.Errorf("owner references %d; want the controller alone", len(kept.OwnerReferences))
	}
	s.Data[DataAPIKey] = make([]byte, 1<<20)
	if got := len(TrimSecret(s).Data[DataAPIKey]); got > maxKeptSecretValue {
		t.Errorf("a 1 MiB api-key kept as %d bytes", got)
	}
	if again := TrimSecret(kept); !reflect.DeepEqual(again, kept) {
		t.Error("trimming a trimmed Secret changes it")
	}
}
