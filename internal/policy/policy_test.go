package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/period"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func spec(t *testing.T, s keywardv1alpha1.APIKeySpec) Spec {
	t.Helper()
	r, err := Resolve(s)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return r
}

func TestResolveAppliesDefaults(t *testing.T) {
	got := spec(t, keywardv1alpha1.APIKeySpec{})
	want := Spec{Prefix: "kw", Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve({}) = %+v, want %+v", got, want)
	}
	fixed := metav1.NewTime(at("2027-03-31T00:00:00Z"))
	got = spec(t, keywardv1alpha1.APIKeySpec{ExpiresAt: &fixed, Prefix: "trial"})
	if got.AutoRotate || !got.FixedExpiry.Equal(fixed.Time) || got.Prefix != "trial" {
		t.Errorf("Resolve(expiresAt) = %+v; want a fixed expiry that never rotates", got)
	}
	got = spec(t, keywardv1alpha1.APIKeySpec{Rotation: &keywardv1alpha1.RotationSpec{Policy: "Disabled", RenewBefore: "5d", GracePeriod: "0s"}})
	if got.AutoRotate || got.RenewBefore == nil || *got.RenewBefore != period.MustParse("5d") || !got.GracePeriod.IsZero() {
		t.Errorf("Resolve(rotation) = %+v", got)
	}
}

func TestResolveRejectsWhatCELWouldHave(t *testing.T) {
	fixed := metav1.NewTime(at("2027-03-31T00:00:00Z"))
	for name, s := range map[string]keywardv1alpha1.APIKeySpec{
		"validity syntax":     {Validity: "90days"},
		"validity below 1h":   {Validity: "59m"},
		"validity and expiry": {Validity: "1d", ExpiresAt: &fixed},
		"renewBefore syntax":  {Rotation: &keywardv1alpha1.RotationSpec{RenewBefore: "soon"}},
		"gracePeriod syntax":  {Rotation: &keywardv1alpha1.RotationSpec{GracePeriod: "1 hour"}},
	} {
		if _, err := Resolve(s); err == nil || !strings.Contains(err.Error(), "spec.") {
			t.Errorf("%s: Resolve error %v does not name the field", name, err)
		}
	}
}

func TestExpiryAndRenewalTimes(t *testing.T) {
	rb := func(s string) *period.Period { p := period.MustParse(s); return &p }
	cases := []struct {
		name            string
		spec            Spec
		issued          string
		expiry, renewal string // renewal "" means never
	}{
		{"default 90d renews a third before", Spec{Validity: period.MustParse("90d"), AutoRotate: true},
			"2026-11-24T10:00:00Z", "2027-02-22T10:00:00Z", "2027-01-23T10:00:00Z"},
		{"explicit renewBefore", Spec{Validity: period.MustParse("90d"), AutoRotate: true, RenewBefore: rb("7d")},
			"2026-11-24T10:00:00Z", "2027-02-22T10:00:00Z", "2027-02-15T10:00:00Z"},
		{"calendar month from 31 January", Spec{Validity: period.MustParse("1mo"), AutoRotate: true, RenewBefore: rb("1w")},
			"2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z", "2026-02-21T00:00:00Z"},
		{"calendar month in a leap year", Spec{Validity: period.MustParse("1mo"), AutoRotate: true, RenewBefore: rb("1d")},
			"2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-02-28T00:00:00Z"},
		{"one year from a leap day", Spec{Validity: period.MustParse("1y"), AutoRotate: true, RenewBefore: rb("1mo")},
			"2028-02-29T06:00:00Z", "2029-02-28T06:00:00Z", "2029-01-28T06:00:00Z"},
		{"a third of a leap year", Spec{Validity: period.MustParse("1y"), AutoRotate: true},
			"2027-06-01T00:00:00Z", "2028-06-01T00:00:00Z", "2028-01-31T00:00:00Z"},
		{"rotation disabled never renews", Spec{Validity: period.MustParse("30d")},
			"2026-11-24T10:00:00Z", "2026-12-24T10:00:00Z", ""},
		{"fixed expiry never renews", Spec{FixedExpiry: at("2027-03-31T00:00:00Z"), AutoRotate: true},
			"2026-11-24T10:00:00Z", "2027-03-31T00:00:00Z", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			issued := at(tc.issued)
			if got := tc.spec.ExpiresAt(issued); !got.Equal(at(tc.expiry)) {
				t.Errorf("expiry %s, want %s", got.Format(time.RFC3339), tc.expiry)
			}
			got := tc.spec.RenewalTime(issued)
			if tc.renewal == "" {
				if !got.IsZero() {
					t.Errorf("renewal %s, want none", got)
				}
			} else if !got.Equal(at(tc.renewal)) {
				t.Errorf("renewal %s, want %s", got.Format(time.RFC3339), tc.renewal)
			}
		})
	}
}

func TestValidateCatchesCalendarRenewalLoops(t *testing.T) {
	p := period.MustParse("4w")
	s := Spec{Validity: period.MustParse("1mo"), AutoRotate: true, RenewBefore: &p}
	if err := s.Validate(at("2026-02-01T00:00:00Z")); err == nil {
		t.Error("1mo validity from 1 February (28 days) with renewBefore 4w was accepted")
	}
	if err := s.Validate(at("2026-03-01T00:00:00Z")); err != nil {
		t.Errorf("1mo validity from 1 March (31 days) with renewBefore 4w: %v", err)
	}
}

func TestDecide(t *testing.T) {
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	noGrace := auto
	noGrace.GracePeriod = period.Period{}
	fixed := Spec{FixedExpiry: at("2027-01-01T00:00:00Z"), GracePeriod: period.MustParse("1h")}
	issued := at("2026-11-24T10:00:00Z") // with auto: renewal 2027-01-23T10:00, expiry 2027-02-22T10:00
	current := Key{Hash: "sha256:cur", Revision: 3, IssuedAt: issued, Reason: ReasonInitial, HandledToken: "t1",
		Previous: []PreviousKey{{Hash: "sha256:old", ValidUntil: at("2026-11-24T11:00:00Z")}}}

	cases := []struct {
		name   string
		in     Input
		want   Reason // "" = no mint
		prev   []PreviousKey
		handle string
		rev    int64
	}{
		{name: "first key", in: Input{Now: issued, Spec: auto, Secret: SecretMissing},
			want: ReasonInitial, rev: 1},
		{name: "first key answers a rotate token already present", in: Input{Now: issued, Spec: auto, Secret: SecretMissing, RotateToken: "t0"},
			want: ReasonInitial, rev: 1, handle: "t0"},
		{name: "secret deleted: last key kept for the grace period", in: Input{Now: at("2026-12-01T00:00:00Z"), Spec: auto, Secret: SecretMissing,
			LastKnown: current, LastKnownExpiry: at("2027-02-22T10:00:00Z")},
			want: ReasonSecretMissing, rev: 4, handle: "t1",
			prev: []PreviousKey{{Hash: "sha256:cur", ValidUntil: at("2026-12-01T01:00:00Z")}}},
		{name: "secret tampered", in: Input{Now: at("2026-11-24T10:30:00Z"), Spec: auto, Secret: SecretTampered,
			LastKnown: current, LastKnownExpiry: at("2027-02-22T10:00:00Z")},
			want: ReasonSecretTampered, rev: 4, handle: "t1",
			prev: []PreviousKey{{Hash: "sha256:old", ValidUntil: at("2026-11-24T11:00:00Z")}, {Hash: "sha256:cur", ValidUntil: at("2026-11-24T11:30:00Z")}}},
		{name: "nothing due", in: Input{Now: at("2027-01-23T09:59:59Z"), Spec: auto, Secret: SecretValid, Current: current, RotateToken: "t1"}},
		{name: "renewal time reached exactly", in: Input{Now: at("2027-01-23T10:00:00Z"), Spec: auto, Secret: SecretValid, Current: current},
			want: ReasonExpiring, rev: 4, handle: "t1",
			prev: []PreviousKey{{Hash: "sha256:cur", ValidUntil: at("2027-02-22T10:00:00Z")}}},
		{name: "renewal long overdue after downtime: expired key not kept", in: Input{Now: at("2027-06-01T00:00:00Z"), Spec: auto, Secret: SecretValid, Current: current},
			want: ReasonExpiring, rev: 4, handle: "t1"},
		{name: "manual rotation keeps the old key for the grace period", in: Input{Now: at("2026-12-01T00:00:00Z"), Spec: auto, Secret: SecretValid, Current: current, RotateToken: "t2"},
			want: ReasonManual, rev: 4, handle: "t2",
			prev: []PreviousKey{{Hash: "sha256:cur", ValidUntil: at("2026-12-01T01:00:00Z")}}},
		{name: "manual rotation with zero grace revokes at once", in: Input{Now: at("2026-12-01T00:00:00Z"), Spec: noGrace, Secret: SecretValid, Current: current, RotateToken: "t2"},
			want: ReasonManual, rev: 4, handle: "t2"},
		{name: "grace never outlives the old key", in: Input{Now: at("2027-02-22T09:30:00Z"), Spec: Spec{Validity: period.MustParse("90d"), GracePeriod: period.MustParse("1d")}, Secret: SecretValid, Current: current, RotateToken: "t2"},
			want: ReasonManual, rev: 4, handle: "t2",
			prev: []PreviousKey{{Hash: "sha256:cur", ValidUntil: at("2027-02-22T10:00:00Z")}}},
		{name: "manual rotation wins over renewal", in: Input{Now: at("2027-01-30T00:00:00Z"), Spec: auto, Secret: SecretValid, Current: current, RotateToken: "t2"},
			want: ReasonManual, rev: 4, handle: "t2",
			prev: []PreviousKey{{Hash: "sha256:cur", ValidUntil: at("2027-01-30T01:00:00Z")}}},
		{name: "handled token does not rotate again", in: Input{Now: at("2026-12-01T00:00:00Z"), Spec: auto, Secret: SecretValid, Current: current, RotateToken: "t1"}},
		{name: "removing the annotation does not rotate", in: Input{Now: at("2026-12-01T00:00:00Z"), Spec: auto, Secret: SecretValid, Current: current}},
		{name: "fixed expiry never renews, even when expired", in: Input{Now: at("2027-05-01T00:00:00Z"), Spec: fixed, Secret: SecretValid, Current: current}},
		{name: "rotation disabled never renews", in: Input{Now: at("2027-05-01T00:00:00Z"), Spec: Spec{Validity: period.MustParse("90d")}, Secret: SecretValid, Current: current}},
		{name: "manual rotation renews an expired key with rotation disabled", in: Input{Now: at("2027-05-01T00:00:00Z"), Spec: Spec{Validity: period.MustParse("90d")}, Secret: SecretValid, Current: current, RotateToken: "renew"},
			want: ReasonManual, rev: 4, handle: "renew"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if d.Reason != tc.want || d.Mint != (tc.want != "") {
				t.Fatalf("Decide = mint %v reason %q, want %q", d.Mint, d.Reason, tc.want)
			}
			if !d.Mint {
				return
			}
			if d.Next.Revision != tc.rev || d.Next.Reason != tc.want || !d.Next.IssuedAt.Equal(tc.in.Now.Truncate(time.Second)) {
				t.Errorf("next key = revision %d reason %s issued %s; want revision %d", d.Next.Revision, d.Next.Reason, d.Next.IssuedAt, tc.rev)
			}
			if d.Next.HandledToken != tc.handle {
				t.Errorf("handled token %q, want %q", d.Next.HandledToken, tc.handle)
			}
			if !reflect.DeepEqual(d.Next.Previous, tc.prev) {
				t.Errorf("previous keys %+v, want %+v", d.Next.Previous, tc.prev)
			}
		})
	}
}

func TestAssess(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	key := Key{IssuedAt: issued}
	noRotate := Spec{Validity: period.MustParse("30d")}
	disabled := noRotate
	disabled.Disabled = true
	cases := []struct {
		name    string
		spec    Spec
		now     string
		ready   bool
		reason  string
		stalled bool
	}{
		{"valid", noRotate, "2026-12-24T09:59:59Z", true, keywardv1alpha1.ReasonKeyReady, false},
		{"expired at the instant", noRotate, "2026-12-24T10:00:00Z", false, keywardv1alpha1.ReasonExpired, true},
		{"fixed expiry passed", Spec{FixedExpiry: at("2026-12-01T00:00:00Z")}, "2026-12-02T00:00:00Z", false, keywardv1alpha1.ReasonExpired, true},
		{"disabled wins over valid", disabled, "2026-11-25T00:00:00Z", false, keywardv1alpha1.ReasonDisabled, false},
		{"disabled wins over expired", disabled, "2027-01-01T00:00:00Z", false, keywardv1alpha1.ReasonDisabled, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Assess(at(tc.now), tc.spec, key, "kid_0123456789ab")
			if h.Ready != tc.ready || h.Reason != tc.reason || h.Stalled != tc.stalled {
				t.Errorf("Assess = %+v", h)
			}
			if !strings.Contains(h.Message, "kid_0123456789ab") {
				t.Errorf("message %q does not name the key ID", h.Message)
			}
		})
	}
}

func TestNextCheck(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true}
	withPrev := Key{IssuedAt: issued, Previous: []PreviousKey{{ValidUntil: at("2026-11-24T11:00:00Z")}}}
	cases := []struct {
		name string
		spec Spec
		key  Key
		now  string
		want string
	}{
		{"previous key end comes first", auto, withPrev, "2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"},
		{"then the renewal", auto, withPrev, "2026-11-24T11:00:00Z", "2027-01-23T10:00:00Z"},
		{"then the expiry", auto, withPrev, "2027-01-23T10:00:00Z", "2027-02-22T10:00:00Z"},
		{"nothing after expiry", auto, withPrev, "2027-02-22T10:00:00Z", ""},
		{"no renewal without rotation", Spec{Validity: period.MustParse("90d")}, Key{IssuedAt: issued}, "2026-11-24T10:00:00Z", "2027-02-22T10:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := NextCheck(at(tc.now), tc.spec, tc.key)
			if tc.want == "" {
				if !got.IsZero() {
					t.Errorf("NextCheck = %s, want none", got)
				}
			} else if !got.Equal(at(tc.want)) {
				t.Errorf("NextCheck = %s, want %s", got.Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestLivePreviousDropsEndedKeysAndSorts(t *testing.T) {
	now := at("2026-11-24T10:00:00Z")
	got := LivePrevious([]PreviousKey{
		{Hash: "b", ValidUntil: at("2026-11-25T00:00:00Z")},
		{Hash: "gone", ValidUntil: now},
		{Hash: "a", ValidUntil: at("2026-11-24T12:00:00Z")},
	}, now)
	if len(got) != 2 || got[0].Hash != "a" || got[1].Hash != "b" {
		t.Errorf("LivePrevious = %+v", got)
	}
}
