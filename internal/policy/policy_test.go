package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
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
	got = spec(t, keywardv1alpha1.APIKeySpec{Webhook: &keywardv1alpha1.WebhookSpec{URL: "https://h.example"}})
	if got.ExpiringBefore != DefaultExpiringBefore {
		t.Errorf("Resolve(webhook) = %+v; want key.expiring %s ahead", got, DefaultExpiringBefore)
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
		"expiringBefore":      {Webhook: &keywardv1alpha1.WebhookSpec{URL: "https://h.example", ExpiringBefore: "a week"}},
	} {
		if _, err := Resolve(s); err == nil || !strings.Contains(err.Error(), "spec.") {
			t.Errorf("%s: Resolve error %v does not name the field", name, err)
		}
	}
}

func TestExpiryAndRenewalTimes(t *testing.T) {
	rb := ptrPeriod
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

func TestValidateCatchesCalendarRenewalLoopsAndFarExpiries(t *testing.T) {
	p := period.MustParse("4w")
	s := Spec{Validity: period.MustParse("1mo"), AutoRotate: true, RenewBefore: &p}
	if err := s.Validate(at("2026-02-01T00:00:00Z")); err == nil || !strings.Contains(err.Error(), "spec.rotation.renewBefore") {
		t.Errorf("1mo validity from 1 February (28 days) with renewBefore 4w: %v", err)
	}
	if err := s.Validate(at("2026-03-01T00:00:00Z")); err != nil {
		t.Errorf("1mo validity from 1 March (31 days) with renewBefore 4w: %v", err)
	}
	far := Spec{FixedExpiry: at("2036-11-25T00:00:00Z")}
	if err := far.Validate(at("2026-11-24T00:00:00Z")); err == nil || !strings.Contains(err.Error(), "spec.expiresAt") {
		t.Errorf("an expiry 10 years and a day ahead: %v", err)
	}
	if err := far.Validate(at("2026-11-25T00:00:00Z")); err != nil {
		t.Errorf("an expiry exactly 10 years ahead: %v", err)
	}
}

// hash is a well-formed key hash whose ID is kid_<c repeated 12 times>.
func hash(c string) string { return "sha256:" + strings.Repeat(c, 64) }

func id(c string) string { return keys.IDFromHash(hash(c)) }

func TestPlanMints(t *testing.T) {
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	noGrace := auto
	noGrace.GracePeriod = period.Period{}
	issued := at("2026-11-24T10:00:00Z") // with auto: renewal 2027-01-23T10:00, expiry 2027-02-22T10:00
	current := keyrecord.Record{Hash: hash("c"), Revision: 3, IssuedAt: issued, ExpiresAt: at("2027-02-22T10:00:00Z"),
		Reason: keywardv1alpha1.RotationInitial, HandledToken: "t1",
		Previous: []keyrecord.PreviousKey{{Hash: hash("a"), ValidUntil: at("2026-12-24T11:00:00Z")}}}
	genuine := func(now string, s Spec) Observation {
		return Observation{Now: at(now), Spec: s, Secret: SecretGenuine, Current: current, LastKnown: current}
	}
	with := func(o Observation, f func(*Observation)) Observation { f(&o); return o }

	cases := []struct {
		name   string
		in     Observation
		want   keywardv1alpha1.RotationReason // "" = no mint
		prev   []keyrecord.PreviousKey
		handle string
		rev    int64
		// revoked are the IDs the plan reports as revoked.
		revoked []string
	}{
		{name: "first key", in: Observation{Now: issued, Spec: auto, Secret: SecretMissing},
			want: keywardv1alpha1.RotationInitial, rev: 1},
		{name: "first key answers a rotate token already present", in: Observation{Now: issued, Spec: auto, Secret: SecretMissing, RotateToken: "t0"},
			want: keywardv1alpha1.RotationInitial, rev: 1, handle: "t0"},
		{name: "secret deleted: the last signed key is kept for the grace period",
			in:   with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.Secret, o.Current = SecretMissing, keyrecord.Record{} }),
			want: keywardv1alpha1.RotationSecretMissing, rev: 4, handle: "t1",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2026-12-01T01:00:00Z")}, current.Previous[0]}},
		{name: "secret tampered: the last signed key and its previous keys, never the Secret's",
			in:   with(genuine("2026-11-24T10:30:00Z", auto), func(o *Observation) { o.Secret, o.Current = SecretTampered, keyrecord.Record{} }),
			want: keywardv1alpha1.RotationSecretTampered, rev: 4, handle: "t1",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2026-11-24T11:30:00Z")}, current.Previous[0]}},
		{name: "secret tampered and status forged: no key survives",
			in:   Observation{Now: at("2026-11-24T10:30:00Z"), Spec: auto, Secret: SecretTampered},
			want: keywardv1alpha1.RotationSecretTampered, rev: 1},
		{name: "nothing due", in: with(genuine("2027-01-23T09:59:59Z", auto), func(o *Observation) { o.RotateToken = "t1" })},
		{name: "renewal time reached exactly", in: genuine("2027-01-23T10:00:00Z", auto),
			want: keywardv1alpha1.RotationExpiring, rev: 4, handle: "t1",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2027-02-22T10:00:00Z")}}},
		{name: "renewal long overdue after downtime: the expired key is not kept", in: genuine("2027-06-01T00:00:00Z", auto),
			want: keywardv1alpha1.RotationExpiring, rev: 4, handle: "t1"},
		{name: "manual rotation keeps the old key for the grace period",
			in:   with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.RotateToken = "t2" }),
			want: keywardv1alpha1.RotationManual, rev: 4, handle: "t2",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2026-12-01T01:00:00Z")}, current.Previous[0]}},
		{name: "manual rotation with zero grace revokes every earlier key",
			in:   with(genuine("2026-12-01T00:00:00Z", noGrace), func(o *Observation) { o.RotateToken = "t2" }),
			want: keywardv1alpha1.RotationManual, rev: 4, handle: "t2"},
		{name: "grace never outlives the old key",
			in: with(genuine("2027-02-22T09:30:00Z", Spec{Validity: period.MustParse("90d"), GracePeriod: period.MustParse("1d")}),
				func(o *Observation) { o.RotateToken = "t2" }),
			want: keywardv1alpha1.RotationManual, rev: 4, handle: "t2",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2027-02-22T10:00:00Z")}}},
		{name: "manual rotation wins over renewal",
			in:   with(genuine("2027-01-30T00:00:00Z", auto), func(o *Observation) { o.RotateToken = "t2" }),
			want: keywardv1alpha1.RotationManual, rev: 4, handle: "t2",
			prev: []keyrecord.PreviousKey{{Hash: hash("c"), ValidUntil: at("2027-01-30T01:00:00Z")}}},
		{name: "revoking the current key mints without grace and wins over a rotate token",
			in:   with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.Revoke, o.RotateToken = []string{id("c")}, "t2" }),
			want: keywardv1alpha1.RotationRevoked, rev: 4, handle: "t2", prev: current.Previous, revoked: []string{id("c")}},
		{name: "revoking a previous key drops it without a new key",
			in:      with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.Revoke = []string{id("a")} }),
			revoked: []string{id("a")}},
		{name: "revoking both", in: with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.Revoke = []string{id("a"), id("c")} }),
			want: keywardv1alpha1.RotationRevoked, rev: 4, handle: "t1", revoked: []string{id("a"), id("c")}},
		{name: "a revoke annotation naming no live key does nothing",
			in: with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.Revoke = []string{id("f")} })},
		{name: "revoking the last known key of a deleted Secret keeps it out",
			in: with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) {
				o.Secret, o.Current, o.Revoke = SecretMissing, keyrecord.Record{}, []string{id("c")}
			}),
			want: keywardv1alpha1.RotationSecretMissing, rev: 4, handle: "t1", prev: current.Previous, revoked: []string{id("c")}},
		{name: "handled token does not rotate again", in: with(genuine("2026-12-01T00:00:00Z", auto), func(o *Observation) { o.RotateToken = "t1" })},
		{name: "removing the annotation does not rotate", in: genuine("2026-12-01T00:00:00Z", auto)},
		{name: "fixed expiry never renews, even when expired",
			in: genuine("2027-05-01T00:00:00Z", Spec{FixedExpiry: at("2027-01-01T00:00:00Z"), GracePeriod: period.MustParse("1h")})},
		{name: "rotation disabled never renews", in: genuine("2027-05-01T00:00:00Z", Spec{Validity: period.MustParse("90d")})},
		{name: "manual rotation renews an expired key with rotation disabled",
			in:   with(genuine("2027-05-01T00:00:00Z", Spec{Validity: period.MustParse("90d")}), func(o *Observation) { o.RotateToken = "renew" }),
			want: keywardv1alpha1.RotationManual, rev: 4, handle: "renew"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(tc.in)
			if !reflect.DeepEqual(p.Revoked, tc.revoked) {
				t.Errorf("revoked %q, want %q", p.Revoked, tc.revoked)
			}
			if (p.Mint != nil) != (tc.want != "") || (p.Mint != nil && p.Mint.Reason != tc.want) {
				t.Fatalf("PlanFor = mint %+v, want %q", p.Mint, tc.want)
			}
			if !p.WriteSecret {
				t.Error("a plan that judged the key does not write the Secret")
			}
			if p.Mint == nil {
				if p.Record.Hash != current.Hash || p.Record.Revision != current.Revision {
					t.Errorf("without a mint the record changed: %+v", p.Record)
				}
				return
			}
			r := p.Record
			if r.Hash != "" || r.Revision != tc.rev || r.Reason != tc.want || !r.IssuedAt.Equal(tc.in.Now.Truncate(time.Second)) ||
				!r.ExpiresAt.Equal(tc.in.Spec.ExpiresAt(r.IssuedAt)) {
				t.Errorf("record = %+v; want revision %d, issued now, no hash yet", r, tc.rev)
			}
			if r.HandledToken != tc.handle {
				t.Errorf("handled token %q, want %q", r.HandledToken, tc.handle)
			}
			if !reflect.DeepEqual(r.Previous, tc.prev) {
				t.Errorf("previous keys %+v, want %+v", r.Previous, tc.prev)
			}
		})
	}
}

// A longer validity applies to the next key: the current one keeps its recorded expiry and is renewed
// before it, by the renewal lead the spec now gives.
func TestALongerValidityRenewsBeforeTheRecordedExpiryNotTheSpecs(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	rec := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: issued, ExpiresAt: at("2026-12-24T10:00:00Z")} // minted for 30d
	spec := Spec{Validity: period.MustParse("90d"), AutoRotate: true, RenewBefore: ptrPeriod("7d")}
	p := PlanFor(Observation{Now: at("2026-12-01T00:00:00Z"), Spec: spec, Secret: SecretGenuine, Current: rec, LastKnown: rec})
	if p.Mint != nil || !p.Record.ExpiresAt.Equal(rec.ExpiresAt) || !p.RenewalTime.Equal(at("2026-12-17T10:00:00Z")) {
		t.Errorf("mint %v expiry %v renewal %v; want the recorded expiry and a renewal 7d before it", p.Mint, p.Record.ExpiresAt, p.RenewalTime)
	}
	p = PlanFor(Observation{Now: at("2026-12-17T10:00:00Z"), Spec: spec, Secret: SecretGenuine, Current: rec, LastKnown: rec})
	if p.Mint == nil || p.Mint.Reason != keywardv1alpha1.RotationExpiring || !p.Record.ExpiresAt.Equal(at("2027-03-17T10:00:00Z")) {
		t.Errorf("mint %+v expiry %v; want the renewal, whose new key has the longer validity", p.Mint, p.Record.ExpiresAt)
	}
}

func ptrPeriod(s string) *period.Period {
	p := period.MustParse(s)
	return &p
}

func TestPlanJudgesTheKey(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	noRotate := Spec{Validity: period.MustParse("30d")}
	disabled := noRotate
	disabled.Disabled = true
	current := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: issued, ExpiresAt: at("2026-12-24T10:00:00Z")}
	expiredRecord := current
	expiredRecord.ExpiresAt = at("2026-11-25T10:00:00Z") // recorded when validity was 1d
	cases := []struct {
		name    string
		spec    Spec
		record  keyrecord.Record
		now     string
		reason  keywardv1alpha1.ConditionReason
		stalled bool
		expiry  string
		next    string
	}{
		{"valid", noRotate, current, "2026-12-24T09:59:59Z", keywardv1alpha1.ReasonKeyReady, false, "2026-12-24T10:00:00Z", "2026-12-24T10:00:00Z"},
		{"expired at the instant", noRotate, current, "2026-12-24T10:00:00Z", keywardv1alpha1.ReasonExpired, true, "2026-12-24T10:00:00Z", ""},
		{"fixed expiry passed", Spec{FixedExpiry: at("2026-12-01T00:00:00Z")}, current, "2026-12-02T00:00:00Z", keywardv1alpha1.ReasonExpired, true, "2026-12-01T00:00:00Z", ""},
		{"a longer validity does not revive an expired key", noRotate, expiredRecord, "2026-11-26T00:00:00Z", keywardv1alpha1.ReasonExpired, true, "2026-11-25T10:00:00Z", ""},
		{"a longer validity never extends a key already minted", noRotate, expiredRecord, "2026-11-25T09:00:00Z", keywardv1alpha1.ReasonKeyReady, false, "2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z"},
		{"disabled wins over valid", disabled, current, "2026-11-25T00:00:00Z", keywardv1alpha1.ReasonDisabled, false, "2026-12-24T10:00:00Z", "2026-12-24T10:00:00Z"},
		{"disabled wins over expired", disabled, current, "2027-01-01T00:00:00Z", keywardv1alpha1.ReasonDisabled, false, "2026-12-24T10:00:00Z", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(Observation{Now: at(tc.now), Spec: tc.spec, Secret: SecretGenuine, Current: tc.record})
			h := p.Health
			if h == nil || h.Ready != (tc.reason == keywardv1alpha1.ReasonKeyReady) || h.Reason != tc.reason || h.Stalled != tc.stalled {
				t.Fatalf("Health = %+v", h)
			}
			if !p.Record.ExpiresAt.Equal(at(tc.expiry)) {
				t.Errorf("expiry %s, want %s", p.Record.ExpiresAt, tc.expiry)
			}
			if (tc.next == "" && !p.NextCheck.IsZero()) || (tc.next != "" && !p.NextCheck.Equal(at(tc.next))) {
				t.Errorf("next check %s, want %q", p.NextCheck, tc.next)
			}
			if msg := h.Message("kid_0123456789ab"); !strings.Contains(msg, "kid_0123456789ab") {
				t.Errorf("message %q does not name the key ID", msg)
			}
		})
	}
}

func TestPlanNextCheck(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true}
	withPrev := keyrecord.Record{Hash: hash("c"), IssuedAt: issued, ExpiresAt: at("2027-02-22T10:00:00Z"),
		Previous: []keyrecord.PreviousKey{{Hash: hash("a"), ValidUntil: at("2026-11-24T11:00:00Z")}}}
	cases := []struct {
		name string
		spec Spec
		now  string
		want string
	}{
		{"the previous key's notice comes first (a quarter of its hour)", auto, "2026-11-24T10:00:00Z", "2026-11-24T10:45:00Z"},
		{"within the notice, the end of the key", auto, "2026-11-24T10:57:00Z", "2026-11-24T11:00:00Z"},
		{"then the renewal", auto, "2026-11-24T11:00:00Z", "2027-01-23T10:00:00Z"},
		{"no renewal without rotation", Spec{Validity: period.MustParse("90d")}, "2026-11-24T11:00:00Z", "2027-02-22T10:00:00Z"},
		{"nothing after expiry", Spec{Validity: period.MustParse("90d")}, "2027-02-22T10:00:00Z", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanFor(Observation{Now: at(tc.now), Spec: tc.spec, Secret: SecretGenuine, Current: withPrev}).NextCheck
			if (tc.want == "" && !got.IsZero()) || (tc.want != "" && !got.Equal(at(tc.want))) {
				t.Errorf("NextCheck = %s, want %q", got, tc.want)
			}
		})
	}
}

func TestPlanStalls(t *testing.T) {
	rb := period.MustParse("4w")
	loops := Spec{Validity: period.MustParse("1mo"), AutoRotate: true, RenewBefore: &rb, GracePeriod: DefaultGracePeriod}
	issued := at("2026-01-03T00:00:00Z") // 1mo = 31 days: renewal on 31 January
	current := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: issued, ExpiresAt: at("2026-02-03T00:00:00Z")}
	cases := []struct {
		name   string
		in     Observation
		reason keywardv1alpha1.ConditionReason
		next   string
		// keeps is true when the current key stays the record (and status) while stalled.
		keeps bool
	}{
		{"an unresolvable spec", Observation{Now: issued, SpecError: errors.New("spec.validity: nonsense")},
			keywardv1alpha1.ReasonInvalidSpec, "", false},
		{"a conflict looks again after the recheck interval",
			Observation{Now: issued, Secret: SecretConflict, Conflict: "not ours", ConflictRecheck: 30 * time.Second},
			keywardv1alpha1.ReasonSecretConflict, "2026-01-03T00:00:30Z", false},
		{"a first key the calendar makes loop is not minted and is looked at again at midnight",
			Observation{Now: at("2026-02-01T09:00:00Z"), Spec: loops, Secret: SecretMissing},
			keywardv1alpha1.ReasonInvalidSpec, "2026-02-02T00:00:00Z", false},
		{"a renewal the calendar makes loop keeps the current key until its expiry",
			Observation{Now: at("2026-01-31T00:00:00Z"), Spec: loops, Secret: SecretGenuine, Current: current, LastKnown: current},
			keywardv1alpha1.ReasonInvalidSpec, "2026-02-01T00:00:00Z", true},
		{"an expiresAt edited to beyond 10 years is not written",
			Observation{Now: issued, Spec: Spec{FixedExpiry: at("9999-12-31T00:00:00Z")}, Secret: SecretGenuine, Current: current},
			keywardv1alpha1.ReasonInvalidSpec, "2026-01-04T00:00:00Z", true},
		{"a first key whose fixed expiry has passed is not minted expired",
			Observation{Now: issued, Spec: Spec{FixedExpiry: at("2026-01-02T00:00:00Z")}, Secret: SecretMissing},
			keywardv1alpha1.ReasonInvalidSpec, "2026-01-04T00:00:00Z", false},
		{"rotating a key whose fixed expiry has passed mints no other expired key: no loop",
			Observation{Now: at("2026-03-01T00:00:00Z"), Spec: Spec{FixedExpiry: current.ExpiresAt}, Secret: SecretGenuine, Current: current,
				LastKnown: current, RotateToken: "again"},
			keywardv1alpha1.ReasonInvalidSpec, "2026-03-02T00:00:00Z", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(tc.in)
			if p.Health != nil && p.Health.Reason == keywardv1alpha1.ReasonInvalidSpec && !tc.in.Spec.FixedExpiry.IsZero() &&
				tc.in.Spec.FixedExpiry.Before(tc.in.Now) && !strings.Contains(p.Health.Message(""), "set a later spec.expiresAt") {
				t.Errorf("the message %q does not say how to fix a past expiresAt", p.Health.Message(""))
			}
			if p.Health == nil || p.Health.Reason != tc.reason || !p.Health.Stalled || p.Health.Ready {
				t.Fatalf("Health = %+v, want stalled %s", p.Health, tc.reason)
			}
			if p.Mint != nil || p.WriteSecret {
				t.Errorf("a stalled plan mints (%v) or writes the Secret (%v)", p.Mint, p.WriteSecret)
			}
			if (tc.next == "" && !p.NextCheck.IsZero()) || (tc.next != "" && !p.NextCheck.Equal(at(tc.next))) {
				t.Errorf("NextCheck = %s, want %q", p.NextCheck, tc.next)
			}
			if tc.keeps != (p.Record.Hash == current.Hash) || (tc.keeps && !p.Record.ExpiresAt.Equal(current.ExpiresAt)) {
				t.Errorf("record while stalled: %+v", p.Record)
			}
		})
	}
}

func TestParseKeyIDs(t *testing.T) {
	got := ParseKeyIDs(" kid_0123456789ab, ,not-an-id,kid_ba9876543210 ")
	if !reflect.DeepEqual(got, []string{"kid_0123456789ab", "kid_ba9876543210"}) {
		t.Errorf("ParseKeyIDs = %q", got)
	}
}

func TestLivePreviousDropsEndedKeysAndSorts(t *testing.T) {
	now := at("2026-11-24T10:00:00Z")
	got := keyrecord.LivePrevious([]keyrecord.PreviousKey{
		{Hash: "b", ValidUntil: at("2026-11-25T00:00:00Z")},
		{Hash: "gone", ValidUntil: now},
		{Hash: "a", ValidUntil: at("2026-11-24T12:00:00Z")},
	}, now)
	if len(got) != 2 || got[0].Hash != "a" || got[1].Hash != "b" {
		t.Errorf("LivePrevious = %+v", got)
	}
}

func TestPlanSaysWhenKeyExpiringIsDue(t *testing.T) {
	issued := at("2026-11-24T10:00:00Z")
	current := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: issued, ExpiresAt: at("2026-12-24T10:00:00Z")}
	week := period.MustParse("7d")
	cases := []struct {
		name      string
		spec      Spec
		before    period.Period
		notice    string
		nextCheck string
	}{
		{"a key that is not renewed: a week before its expiry", Spec{Validity: period.MustParse("30d")}, week, "2026-12-17T10:00:00Z", "2026-12-17T10:00:00Z"},
		{"a key a renewal replaces first: never", Spec{Validity: period.MustParse("30d"), AutoRotate: true}, week, "", "2026-12-14T10:00:00Z"},
		{"no webhook: never", Spec{Validity: period.MustParse("30d")}, period.Period{}, "", "2026-12-24T10:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.ExpiringBefore = tc.before
			p := PlanFor(Observation{Now: issued, Spec: tc.spec, Secret: SecretGenuine, Current: current})
			if (tc.notice == "") != p.ExpiringNotice.IsZero() || (tc.notice != "" && !p.ExpiringNotice.Equal(at(tc.notice))) {
				t.Errorf("ExpiringNotice = %v, want %q", p.ExpiringNotice, tc.notice)
			}
			if !p.NextCheck.Equal(at(tc.nextCheck)) {
				t.Errorf("NextCheck = %v, want %s", p.NextCheck, tc.nextCheck)
			}
		})
	}
}

func TestPlanWithholdsWhatItStopsWhateverStateTheSecretIsIn(t *testing.T) {
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	noGrace := auto
	noGrace.GracePeriod = period.Period{}
	now := at("2026-12-01T00:00:00Z")
	prevA := keyrecord.PreviousKey{Hash: hash("a"), ValidUntil: at("2026-12-24T11:00:00Z")}
	current := keyrecord.Record{Hash: hash("c"), Revision: 3, IssuedAt: at("2026-11-24T10:00:00Z"), ExpiresAt: at("2027-02-22T10:00:00Z"),
		Reason: keywardv1alpha1.RotationInitial, HandledToken: "t1", Previous: []keyrecord.PreviousKey{prevA}}
	withdrawn := keyrecord.Record{Revision: 4, Reason: keywardv1alpha1.RotationRevoked, HandledToken: "t1", Previous: []keyrecord.PreviousKey{prevA}}
	immutable := "Secret orders is immutable"
	obs := func(f func(*Observation)) Observation {
		o := Observation{Now: now, Spec: auto, Secret: SecretGenuine, Current: current, LastKnown: current, ConflictRecheck: time.Minute}
		f(&o)
		return o
	}
	withPrevious := func(r keyrecord.Record, prev ...keyrecord.PreviousKey) keyrecord.Record { r.Previous = prev; return r }
	cases := []struct {
		name string
		in   Observation
		// write: the plan writes the Secret; mint: the reason of its mint ("" none).
		write bool
		mint  keywardv1alpha1.RotationReason
		// withheld is what status shows if the Secret does not take the plan's record.
		withheld keyrecord.Record
		reason   keywardv1alpha1.ConditionReason
		revoked  []string
	}{
		{name: "immutable: revoking the current key withdraws it, keeping the previous keys",
			in:       obs(func(o *Observation) { o.Unwritable, o.Revoke = immutable, []string{id("c")} }),
			mint:     keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonSecretUnwritable, revoked: []string{id("c")}},
		{name: "immutable: a zero-grace rotation withdraws the current key and every earlier one",
			in:       obs(func(o *Observation) { o.Unwritable, o.Spec, o.RotateToken = immutable, noGrace, "t2" }),
			mint:     keywardv1alpha1.RotationManual,
			withheld: keyrecord.Record{Revision: 4, Reason: keywardv1alpha1.RotationManual, HandledToken: "t2"}, reason: keywardv1alpha1.ReasonSecretUnwritable},
		{name: "immutable: revoking a previous key drops it from status",
			in:       obs(func(o *Observation) { o.Unwritable, o.Revoke = immutable, []string{id("a")} }),
			withheld: withPrevious(current), reason: keywardv1alpha1.ReasonSecretUnwritable, revoked: []string{id("a")}},
		{name: "immutable: a rotation with grace keeps the current key until the new one can be written",
			in:       obs(func(o *Observation) { o.Unwritable, o.RotateToken = immutable, "t2" }),
			mint:     keywardv1alpha1.RotationManual,
			withheld: current, reason: keywardv1alpha1.ReasonSecretUnwritable},
		{name: "immutable and nothing due: the key stays valid, and Ready says the Secret is stuck",
			in:       obs(func(o *Observation) { o.Unwritable = immutable }),
			withheld: current, reason: keywardv1alpha1.ReasonSecretUnwritable},
		{name: "relabelled to another APIKey: revoking the current key withdraws what status showed",
			in: obs(func(o *Observation) {
				o.Secret, o.Current, o.Conflict, o.Revoke = SecretConflict, keyrecord.Record{}, "Secret orders belongs to APIKey other", []string{id("c")}
			}),
			mint:     keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonSecretConflict, revoked: []string{id("c")}},
		{name: "a conflict with nothing recorded has nothing to withhold",
			in:     Observation{Now: now, Spec: auto, Secret: SecretConflict, Conflict: "not ours", Revoke: []string{id("c")}},
			reason: keywardv1alpha1.ReasonSecretConflict},
		{name: "the Secret still holds the withdrawn key and can be written: the new key is minted at the withdrawal's revision",
			in: obs(func(o *Observation) {
				o.Secret, o.Current, o.LastKnown = SecretSuperseded, keyrecord.Record{}, withdrawn
			}),
			write: true, mint: keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonKeyReady},
		{name: "the Secret still holds the withdrawn key and stays immutable: nothing changes, so nothing loops",
			in: obs(func(o *Observation) {
				o.Secret, o.Current, o.LastKnown, o.Unwritable = SecretSuperseded, keyrecord.Record{}, withdrawn, immutable
			}),
			mint:     keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonSecretUnwritable},
		{name: "the withdrawn key's Secret deleted: the new key completes the withdrawal",
			in:    obs(func(o *Observation) { o.Secret, o.Current, o.LastKnown = SecretMissing, keyrecord.Record{}, withdrawn }),
			write: true, mint: keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonKeyReady},
		{name: "a previous key that status stopped stays stopped when the annotation is removed",
			in:       obs(func(o *Observation) { o.LastKnown = withPrevious(current) }),
			write:    true,
			withheld: withPrevious(current), reason: keywardv1alpha1.ReasonKeyReady},
		{name: "a writable Secret: what status shows if the write fails",
			in:    obs(func(o *Observation) { o.Revoke = []string{id("c")} }),
			write: true, mint: keywardv1alpha1.RotationRevoked,
			withheld: withdrawn, reason: keywardv1alpha1.ReasonKeyReady, revoked: []string{id("c")}},
		{name: "an invalid spec still revokes",
			in:       obs(func(o *Observation) { o.SpecError, o.Revoke = errors.New("spec.validity: bad"), []string{id("c")} }),
			withheld: withdrawn, reason: keywardv1alpha1.ReasonInvalidSpec, revoked: []string{id("c")}},
		{name: "a rotate token longer than MaxTokenLength is an invalid spec",
			in:       obs(func(o *Observation) { o.RotateToken = strings.Repeat("x", keywardv1alpha1.MaxTokenLength+1) }),
			withheld: current, reason: keywardv1alpha1.ReasonInvalidSpec},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(tc.in)
			if p.WriteSecret != tc.write {
				t.Errorf("WriteSecret %v, want %v", p.WriteSecret, tc.write)
			}
			if p.Mint != nil && p.Mint.Reason != tc.mint || p.Mint == nil && tc.mint != "" {
				t.Errorf("mint %+v, want %q", p.Mint, tc.mint)
			}
			if !reflect.DeepEqual(p.Withheld, tc.withheld) {
				t.Errorf("withheld\n%+v, want\n%+v", p.Withheld, tc.withheld)
			}
			if p.Health == nil || p.Health.Reason != tc.reason {
				t.Errorf("health %+v, want reason %s", p.Health, tc.reason)
			}
			if !reflect.DeepEqual(p.Revoked, tc.revoked) {
				t.Errorf("revoked %q, want %q", p.Revoked, tc.revoked)
			}
			if tc.mint != "" && tc.withheld.Withdrawn() && p.Record.Revision != tc.withheld.Revision {
				t.Errorf("the new key's revision %d, want the withdrawal's %d", p.Record.Revision, tc.withheld.Revision)
			}
			if p.Health != nil && p.Health.Stalled != (tc.reason == keywardv1alpha1.ReasonSecretUnwritable ||
				tc.reason == keywardv1alpha1.ReasonSecretConflict || tc.reason == keywardv1alpha1.ReasonInvalidSpec) {
				t.Errorf("stalled %v for reason %s", p.Health.Stalled, tc.reason)
			}
		})
	}
}

func TestAMintKeepsAtMostMaxPreviousKeysDroppingTheOldest(t *testing.T) {
	now := at("2026-12-01T00:00:00Z")
	spec := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	current := keyrecord.Record{Hash: hash("c"), Revision: 40, IssuedAt: now.Add(-time.Minute), ExpiresAt: spec.ExpiresAt(now.Add(-time.Minute))}
	var want []string
	for i := range MaxPreviousKeys {
		h := "sha256:" + strings.Repeat("0", 62) + fmt.Sprintf("%02x", i)
		current.Previous = append(current.Previous, keyrecord.PreviousKey{Hash: h, ValidUntil: now.Add(time.Duration(i+1) * time.Minute)})
		if i == 0 {
			want = []string{keys.IDFromHash(h)}
		}
	}
	p := PlanFor(Observation{Now: now, Spec: spec, Secret: SecretGenuine, Current: current, LastKnown: current, RotateToken: "again"})
	if p.Mint == nil || len(p.Record.Previous) != MaxPreviousKeys {
		t.Fatalf("mint %+v with %d previous keys, want %d", p.Mint, len(p.Record.Previous), MaxPreviousKeys)
	}
	if !reflect.DeepEqual(p.DroppedByCap, want) {
		t.Errorf("dropped %q, want the one that ends first, %q", p.DroppedByCap, want)
	}
	if last := p.Record.Previous[len(p.Record.Previous)-1]; last.Hash != current.Hash {
		t.Errorf("the newest previous key is %s, want the replaced key", last.Hash)
	}
}

func TestJudgeSecretSaysWhoseASecretIs(t *testing.T) {
	ours := &metav1.OwnerReference{Kind: "APIKey", Name: "orders", UID: "uid-2"}
	earlier := &metav1.OwnerReference{Kind: "APIKey", Name: "orders", UID: "uid-1"}
	other := &metav1.OwnerReference{Kind: "ExternalSecret", Name: "db", UID: "uid-9"}
	cases := []struct {
		name  string
		claim SecretClaim
		want  Ownership
		says  string
	}{
		{"labelled and controlled by this APIKey", SecretClaim{Label: "orders", Controller: ours}, Ours, ""},
		{"label removed from a Secret this APIKey controls", SecretClaim{Controller: ours}, OursUnlabelled, ""},
		{"an application's Secret", SecretClaim{}, Foreign, "no keyward.dev/apikey label"},
		{"an unlabelled Secret another APIKey controlled", SecretClaim{Controller: earlier}, Foreign, "never overwrites"},
		{"labelled for another APIKey", SecretClaim{Label: "payments", Controller: ours}, OtherAPIKey, "belongs to APIKey payments"},
		{"an orphan, not adopted", SecretClaim{Label: "orders"}, Orphaned, keywardv1alpha1.AdoptOrphanAnnotation},
		{"an orphan, adopted", SecretClaim{Label: "orders", Adopt: true}, Ours, ""},
		{"left by an earlier APIKey of the same name", SecretClaim{Label: "orders", Controller: earlier}, EarlierAPIKey, "earlier APIKey"},
		{"an adopt annotation does not take a controlled Secret", SecretClaim{Label: "orders", Controller: earlier, Adopt: true}, EarlierAPIKey, "uid-1"},
		{"controlled by another controller", SecretClaim{Label: "orders", Controller: other}, OtherController, `"ExternalSecret" "db"`},
		{"an owner reference written to forge a line and drive a terminal", SecretClaim{Label: "orders", Controller: &metav1.OwnerReference{
			Kind: "X\r\nReady=True KeyReady", Name: "n\x1b]52;c;ZXZpbA==\x07\u202e", UID: "u"}}, OtherController,
			`"X\r\nReady=True KeyReady" "n\x1b]52;c;ZXZpbA==\x07\u202e"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.claim.APIKey, tc.claim.UID, tc.claim.Secret = "orders", "uid-2", "orders"
			got, msg := JudgeSecret(tc.claim)
			if strings.ContainsAny(msg, "\r\n\x1b\x07\u202e") {
				t.Errorf("the message carries control characters: %q", msg)
			}
			if got != tc.want || !strings.Contains(msg, tc.says) || (tc.says == "") != (msg == "") {
				t.Errorf("JudgeSecret = %v, %q; want %v saying %q", got, msg, tc.want, tc.says)
			}
		})
	}
}

func TestPreviousKeysInUseWarnsInTheLastQuarterOfTheGraceWhenTheKeyWasUsedWithinIt(t *testing.T) {
	issued := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	hour, month := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	hourID, monthID := keys.IDFromHash(hour), keys.IDFromHash(month)
	rec := keyrecord.Record{IssuedAt: issued, Previous: []keyrecord.PreviousKey{
		{Hash: hour, ValidUntil: issued.Add(time.Hour)},            // a manual rotation's 1h grace: 15 min notice
		{Hash: month, ValidUntil: issued.Add(30 * 24 * time.Hour)}, // a renewal's overlap: notice capped at 24h
	}}
	at := issued.Add
	cases := []struct {
		name     string
		now      time.Time
		lastUsed map[string]time.Time
		inUse    []string
		next     time.Time
	}{
		{"before any notice: look again when the first starts", at(10 * time.Minute), map[string]time.Time{hourID: at(9 * time.Minute)},
			nil, at(45 * time.Minute)},
		{"in the notice, used within it", at(50 * time.Minute), map[string]time.Time{hourID: at(49 * time.Minute)},
			[]string{hourID}, at(55 * time.Minute)},
		{"in the notice, used only before it", at(50 * time.Minute), map[string]time.Time{hourID: at(30 * time.Minute)},
			nil, at(55 * time.Minute)},
		{"in the notice, never used", at(50 * time.Minute), nil, nil, at(55 * time.Minute)},
		{"the recheck stops at the key's end", at(58 * time.Minute), map[string]time.Time{hourID: at(57 * time.Minute)},
			[]string{hourID}, at(time.Hour)},
		{"an ended key is no concern; the next notice is a day before the month ends", at(2 * time.Hour), map[string]time.Time{hourID: at(59 * time.Minute)},
			nil, at(29 * 24 * time.Hour)},
		{"a day before the month ends, used an hour ago", at(29*24*time.Hour + 12*time.Hour), map[string]time.Time{monthID: at(29*24*time.Hour + 11*time.Hour)},
			[]string{monthID}, at(29*24*time.Hour + 12*time.Hour + 5*time.Minute)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inUse, next := PreviousKeysInUse(rec, tc.lastUsed, tc.now)
			var ids []string
			for _, u := range inUse {
				ids = append(ids, u.KeyID)
				if !u.LastUsed.Equal(tc.lastUsed[u.KeyID]) {
					t.Errorf("%s: last used %v", u.KeyID, u.LastUsed)
				}
			}
			if strings.Join(ids, ",") != strings.Join(tc.inUse, ",") || !next.Equal(tc.next) {
				t.Errorf("in use %v, next %v; want %v, %v", ids, next, tc.inUse, tc.next)
			}
		})
	}
	// The plan carries it, and looks again when the notice starts.
	p := PlanFor(Observation{Now: at(50 * time.Minute), Secret: SecretGenuine, Spec: spec(t, keywardv1alpha1.APIKeySpec{}),
		Current: keyrecord.Record{Hash: "sha256:" + strings.Repeat("c", 64), Revision: 2, IssuedAt: issued, ExpiresAt: issued.Add(90 * 24 * time.Hour),
			Reason: keywardv1alpha1.RotationManual, Previous: rec.Previous[:1]},
		LastUsed: map[string]time.Time{hourID: at(49 * time.Minute)}})
	if len(p.PreviousInUse) != 1 || p.PreviousInUse[0].KeyID != hourID || !p.NextCheck.Equal(at(55*time.Minute)) {
		t.Errorf("plan: in use %+v, next check %v", p.PreviousInUse, p.NextCheck)
	}
}

// The Expired message tells the fix that works: for a fixed expiry, a new rotate value alone would mint
// another key expired at the same instant, so it asks for a later expiresAt first.
func TestTheExpiredMessageTellsTheFixThatWorks(t *testing.T) {
	current := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: at("2026-01-01T00:00:00Z"), ExpiresAt: at("2026-02-01T00:00:00Z")}
	for _, tc := range []struct {
		name string
		spec Spec
		says string
	}{
		{"fixed expiresAt", Spec{FixedExpiry: current.ExpiresAt}, "set a later spec.expiresAt (or validity instead of it), then a new value of the keyward.dev/rotate"},
		{"rotation disabled", Spec{Validity: period.MustParse("31d")}, "rotation policy is Disabled; set a new value of the keyward.dev/rotate"},
	} {
		p := PlanFor(Observation{Now: at("2026-03-01T00:00:00Z"), Spec: tc.spec, Secret: SecretGenuine, Current: current, LastKnown: current})
		if p.Health == nil || p.Health.Reason != keywardv1alpha1.ReasonExpired || !strings.Contains(p.Health.Message(id("c")), tc.says) {
			t.Errorf("%s: %+v says %q, want %q", tc.name, p.Health, p.Health.Message(id("c")), tc.says)
		}
	}
}

func TestAPolicysMaxValidityCapsTheNextKeyAndNeverTheCurrentOne(t *testing.T) {
	now := at("2026-12-01T00:00:00Z")
	yearly := Spec{Validity: period.MustParse("1y"), AutoRotate: true, GracePeriod: period.MustParse("1h"), MaxValidity: period.MustParse("90d")}
	longRenew := yearly
	rb := period.MustParse("100d")
	longRenew.RenewBefore = &rb

	t.Run("a first key lives no longer than the cap", func(t *testing.T) {
		p := PlanFor(Observation{Now: now, Spec: yearly, Secret: SecretMissing})
		if p.Mint == nil || !p.Record.ExpiresAt.Equal(at("2027-03-01T00:00:00Z")) || !p.RenewalTime.Equal(at("2027-01-30T00:00:00Z")) {
			t.Errorf("mint %v expiry %v renewal %v; want a 90-day key renewed 30 days before", p.Mint, p.Record.ExpiresAt, p.RenewalTime)
		}
	})
	t.Run("a renewBefore longer than the capped life renews a third before expiry, not at once", func(t *testing.T) {
		p := PlanFor(Observation{Now: now, Spec: longRenew, Secret: SecretMissing})
		if p.Mint == nil || !p.RenewalTime.After(now) || !p.RenewalTime.Equal(at("2027-01-30T00:00:00Z")) {
			t.Fatalf("renewal %v; want 2027-01-30, a third of the 90 days before expiry", p.RenewalTime)
		}
		// The next look, with that key in the Secret, mints nothing.
		rec := p.Record
		rec.Hash = hash("n")
		again := PlanFor(Observation{Now: now.Add(time.Minute), Spec: longRenew, Secret: SecretGenuine, Current: rec, LastKnown: rec})
		if again.Mint != nil {
			t.Errorf("the capped key was renewed at once: %+v", again.Mint)
		}
	})
	t.Run("the current key keeps its recorded expiry", func(t *testing.T) {
		issued := at("2026-06-01T00:00:00Z")
		cur := keyrecord.Record{Hash: hash("c"), Revision: 1, IssuedAt: issued, ExpiresAt: at("2027-06-01T00:00:00Z"), Reason: keywardv1alpha1.RotationInitial}
		p := PlanFor(Observation{Now: now, Spec: yearly, Secret: SecretGenuine, Current: cur, LastKnown: cur})
		if p.Mint != nil || !p.Record.ExpiresAt.Equal(cur.ExpiresAt) {
			t.Errorf("mint %v expiry %v; want the key predating the policy untouched until its renewal", p.Mint, p.Record.ExpiresAt)
		}
	})
}
