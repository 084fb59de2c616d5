package keyrecord

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func TestNewSignerRefusesShortKeys(t *testing.T) {
	if _, err := NewSigner(make([]byte, MinSigningKeyLength-1)); err == nil {
		t.Error("a 31-byte signing key was accepted")
	}
}

func TestSignatureCoversEveryFieldAndTheSubject(t *testing.T) {
	s := testSigner(t)
	base := contents(t, nil).Record
	sig := s.Sign(subject, base)
	if !s.Verify(subject, base, sig) {
		t.Fatal("a record does not verify with its own signature")
	}
	changes := map[string]func(*Record, *Subject){
		"hash":                 func(r *Record, _ *Subject) { r.Hash = "sha256:" + strings.Repeat("0", 64) },
		"revision":             func(r *Record, _ *Subject) { r.Revision++ },
		"issue time":           func(r *Record, _ *Subject) { r.IssuedAt = r.IssuedAt.Add(time.Second) },
		"expiry":               func(r *Record, _ *Subject) { r.ExpiresAt = r.ExpiresAt.Add(time.Second) },
		"reason":               func(r *Record, _ *Subject) { r.Reason = keywardv1alpha1.RotationInitial },
		"handled token":        func(r *Record, _ *Subject) { r.HandledToken = "t3" },
		"a previous key added": func(r *Record, _ *Subject) { r.Previous = append(r.Previous, PreviousKey{Hash: "sha256:x"}) },
		"a previous key ends later": func(r *Record, _ *Subject) {
			r.Previous = []PreviousKey{{Hash: r.Previous[0].Hash, ValidUntil: r.Previous[0].ValidUntil.Add(time.Hour)}}
		},
		"previous keys removed": func(r *Record, _ *Subject) { r.Previous = nil },
		"namespace":             func(_ *Record, sub *Subject) { sub.Namespace = "other" },
		"APIKey name":           func(_ *Record, sub *Subject) { sub.APIKey = "other" },
		"Secret name":           func(_ *Record, sub *Subject) { sub.Secret = "other" },
		"APIKey UID (a re-created APIKey of the same name)": func(_ *Record, sub *Subject) { sub.UID = "0a9b-uid-two" },
		// Field boundaries are length-prefixed: moving characters between fields changes the signature.
		"characters moved between fields": func(r *Record, _ *Subject) { r.Reason, r.HandledToken = "Manualt", "2" },
	}
	for name, change := range changes {
		r, sub := base, subject
		r.Previous = append([]PreviousKey(nil), base.Previous...)
		change(&r, &sub)
		if s.Verify(sub, r, sig) {
			t.Errorf("changing the %s keeps the signature valid", name)
		}
	}
	for _, bad := range []string{"", "v2:", "v1:" + sig[3:], "v3:" + sig[3:], sig[:len(sig)-2], "v2:!!!"} {
		if s.Verify(subject, base, bad) {
			t.Errorf("signature %q verified", bad)
		}
	}
}

func TestStatusRoundTripsAndOnlyVerifiesWhatKeywardSigned(t *testing.T) {
	s := testSigner(t)
	rec := contents(t, nil).Record
	rec.Previous = append(rec.Previous, PreviousKey{Hash: "sha256:ended", ValidUntil: issued})
	var st keywardv1alpha1.APIKeyStatus
	WriteStatus(&st, rec, "ord_…abcd", issued.Add(60*24*time.Hour), issued, s, subject)
	got, ok := GenuineStatus(st, s, subject)
	want := rec
	want.Previous = rec.Previous[:1] // the ended one is not shown
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("GenuineStatus = %+v, %v; want %+v", got, ok, want)
	}
	if st.KeyID == "" || st.KeyHint != "ord_…abcd" || st.RenewalTime == nil || len(st.PreviousKeys) != 1 || st.PreviousKeys[0].KeyID == "" {
		t.Errorf("derived status fields missing: %+v", st)
	}

	forged := st
	forged.PreviousKeys = append([]keywardv1alpha1.PreviousKey(nil), st.PreviousKeys...)
	forged.PreviousKeys[0].ValidUntil.Time = forged.PreviousKeys[0].ValidUntil.Add(24 * time.Hour)
	if _, ok := GenuineStatus(forged, s, subject); ok {
		t.Error("a status with a longer-lived previous key verified")
	}
	if names := Changed(FromStatus(forged), FromStatus(st), StatusFields); !reflect.DeepEqual(names, []string{"status.previousKeys"}) {
		t.Errorf("Changed = %q", names)
	}
	if _, ok := GenuineStatus(keywardv1alpha1.APIKeyStatus{}, s, subject); ok {
		t.Error("an empty status verified")
	}
}

func TestJoinNames(t *testing.T) {
	for in, want := range map[string]string{"a": "a", "a,b": "a and b", "a,b,c": "a, b and c"} {
		if got := JoinNames(strings.Split(in, ",")); got != want {
			t.Errorf("JoinNames(%s) = %q, want %q", in, got, want)
		}
	}
}

// legacySign is how signature version 1 signed: the subject without the APIKey's UID.
func legacySign(s *Signer, sub Subject, r Record) string {
	return legacySignatureVersion + base64.RawURLEncoding.EncodeToString(s.mac(sub, r, false))
}

func TestAVersionOneSignatureVerifiesOnlyForRecordsIssuedSinceTheAPIKeyWasCreated(t *testing.T) {
	s := testSigner(t)
	rec := contents(t, nil).Record // issued an hour after subject.Created
	sig := legacySign(s, subject, rec)
	if !s.Verify(subject, rec, sig) {
		t.Fatal("a record signed before the upgrade no longer verifies: the upgrade would rotate every key")
	}
	successor := subject
	successor.UID, successor.Created = "0a9b-uid-two", issued.Add(time.Minute)
	if s.Verify(successor, rec, sig) {
		t.Error("a version-1 record of a deleted APIKey verifies for its successor of the same name")
	}
	if got := s.Sign(subject, rec); !strings.HasPrefix(got, signatureVersion) || got == sig {
		t.Errorf("Sign wrote %q; records are re-signed as version 2", got)
	}
}
