package policy

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/period"
)

func TestALeakReportStopsWhatItsResponseSays(t *testing.T) {
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	now := at("2026-12-01T00:00:00Z")
	current := keyrecord.Record{Hash: hash("c"), Revision: 3, IssuedAt: at("2026-11-24T10:00:00Z"), ExpiresAt: at("2027-02-22T10:00:00Z"),
		Reason: keywardv1alpha1.RotationManual, HandledToken: "t1",
		Previous: []keyrecord.PreviousKey{{Hash: hash("a"), ValidUntil: at("2026-12-01T01:00:00Z")}}}
	leak := func(c string) []keywardv1alpha1.LeakReport {
		return []keywardv1alpha1.LeakReport{{KeyID: id(c), ReportedAt: metav1.NewTime(now)}}
	}
	genuine := func(r keywardv1alpha1.LeakResponse, leaks []keywardv1alpha1.LeakReport) Observation {
		return Observation{Now: now, Spec: auto, Secret: SecretGenuine, Current: current, LastKnown: current, RotateToken: "t1",
			Leaks: leaks, LeakResponse: r}
	}
	for _, tc := range []struct {
		name     string
		in       Observation
		mint     bool
		revoked  []string
		withdraw bool
		reason   keywardv1alpha1.ConditionReason
	}{
		{name: "Rotate: the leaked current key is replaced at once", in: genuine(keywardv1alpha1.LeakResponseRotate, leak("c")),
			mint: true, revoked: []string{id("c")}, reason: keywardv1alpha1.ReasonKeyReady},
		{name: "Rotate: a leaked previous key is dropped, the current key stays", in: genuine(keywardv1alpha1.LeakResponseRotate, leak("a")),
			revoked: []string{id("a")}, reason: keywardv1alpha1.ReasonKeyReady},
		{name: "Rotate: a report of a key already gone stops nothing", in: genuine(keywardv1alpha1.LeakResponseRotate, leak("z")),
			reason: keywardv1alpha1.ReasonKeyReady},
		{name: "Notify: nothing stops", in: genuine(keywardv1alpha1.LeakResponseNotify, leak("c")), reason: keywardv1alpha1.ReasonKeyReady},
		{name: "Disable: every key stops and none is minted", in: genuine(keywardv1alpha1.LeakResponseDisable, leak("a")),
			revoked: []string{id("a"), id("c")}, withdraw: true, reason: keywardv1alpha1.ReasonKeyLeaked},
		{name: "Disable: a new rotate token mints the next key", in: func() Observation {
			o := genuine(keywardv1alpha1.LeakResponseDisable, leak("c"))
			o.RotateToken = "t2"
			return o
		}(), mint: true, revoked: []string{id("c")}, reason: keywardv1alpha1.ReasonKeyReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(tc.in)
			if (p.Mint != nil) != tc.mint {
				t.Errorf("mint %+v; want a mint: %v", p.Mint, tc.mint)
			}
			got := slices.Sorted(slices.Values(p.Revoked))
			if !slices.Equal(got, slices.Sorted(slices.Values(tc.revoked))) {
				t.Errorf("revoked %v; want %v", got, tc.revoked)
			}
			if p.Health == nil || p.Health.Reason != tc.reason {
				t.Fatalf("health %+v; want %s", p.Health, tc.reason)
			}
			if !tc.mint && tc.withdraw != p.Withheld.Withdrawn() || (tc.withdraw && (p.Withheld.Reason != keywardv1alpha1.RotationLeaked || len(p.Withheld.Previous) != 0)) {
				t.Errorf("withheld %+v; want a withdrawal for a leak with no previous key: %v", p.Withheld, tc.withdraw)
			}
		})
	}

	// Held: the next look, with status showing the withdrawal and the Secret still holding the leaked key,
	// mints nothing until the rotate token changes.
	held := PlanFor(genuine(keywardv1alpha1.LeakResponseDisable, leak("a")))
	again := genuine(keywardv1alpha1.LeakResponseDisable, leak("a"))
	again.LastKnown, again.Secret, again.Current = held.Withheld, SecretSuperseded, keyrecord.Record{}
	if p := PlanFor(again); p.Mint != nil || p.WriteSecret || p.Health.Reason != keywardv1alpha1.ReasonKeyLeaked || !p.Withheld.Withdrawn() {
		t.Errorf("the held APIKey on the next look: mint %+v, write %v, health %+v", p.Mint, p.WriteSecret, p.Health)
	}
	again.RotateToken = "t2"
	if p := PlanFor(again); p.Mint == nil || p.Mint.Reason != keywardv1alpha1.RotationLeaked || !p.WriteSecret {
		t.Errorf("after a new rotate token: mint %+v, write %v", p.Mint, p.WriteSecret)
	}
}
