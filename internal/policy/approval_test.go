package policy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/period"
)

func TestNothingIsMintedThatNoApprovalCoversAndAKeyInPlaceKeepsWorking(t *testing.T) {
	auto := Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")}
	issued := at("2026-11-24T10:00:00Z") // renewal 2027-01-23T10:00, expiry 2027-02-22T10:00
	current := keyrecord.Record{Hash: hash("c"), Revision: 3, IssuedAt: issued, ExpiresAt: at("2027-02-22T10:00:00Z"), Reason: keywardv1alpha1.RotationInitial}
	waiting := Approval{Scopes: []keywardv1alpha1.Scope{"payments:refund"}, Policies: []string{"payments"}, RequestedBy: "alice"}
	granted := waiting
	granted.Granted = true
	denied := waiting
	denied.Denied = &keywardv1alpha1.ApprovalDecision{By: "bob", At: metav1.NewTime(issued), Reason: "use a narrower scope"}
	approved := waiting
	approved.Approved = true
	genuine := func(now string, a Approval) Observation {
		return Observation{Now: at(now), Spec: auto, Secret: SecretGenuine, Current: current, LastKnown: current, Approval: a}
	}
	for _, tc := range []struct {
		name      string
		in        Observation
		mint      bool
		reason    keywardv1alpha1.ConditionReason
		stalled   bool
		withdrawn bool
		message   string
	}{
		{name: "a new APIKey waits, and says who may not approve", in: Observation{Now: issued, Spec: auto, Secret: SecretMissing, Approval: waiting},
			reason: keywardv1alpha1.ReasonAwaitingApproval, message: "Scopes payments:refund need an approval (APIKeyPolicy payments)"},
		{name: "a denied new APIKey stalls, saying who and why", in: Observation{Now: issued, Spec: auto, Secret: SecretMissing, Approval: denied},
			reason: keywardv1alpha1.ReasonApprovalDenied, stalled: true, message: "bob denied the spec at 2026-11-24T10:00:00Z (use a narrower scope)"},
		{name: "an approved new APIKey gets its first key", in: Observation{Now: issued, Spec: auto, Secret: SecretMissing, Approval: approved},
			mint: true, reason: keywardv1alpha1.ReasonKeyReady},
		{name: "a key minted before the policy keeps working until its renewal", in: genuine("2026-12-01T00:00:00Z", waiting),
			reason: keywardv1alpha1.ReasonAwaitingApproval, message: "minted before an approval was required, keeps working until 2027-02-22T10:00:00Z"},
		{name: "and is not renewed without an approval", in: genuine("2027-01-24T00:00:00Z", waiting),
			reason: keywardv1alpha1.ReasonAwaitingApproval},
		{name: "a change waiting under an earlier approval is renewed as approved", in: genuine("2027-01-24T00:00:00Z", granted),
			mint: true, reason: keywardv1alpha1.ReasonAwaitingApproval, message: "keeps working with what was approved"},
		{name: "a revocation lands while the approval waits: the key is withdrawn", in: func() Observation {
			o := genuine("2026-12-01T00:00:00Z", waiting)
			o.Revoke = []string{id("c")}
			return o
		}(), reason: keywardv1alpha1.ReasonAwaitingApproval, withdrawn: true, message: "No key is accepted until then"},
		{name: "a key that expired waiting says so", in: genuine("2027-03-01T00:00:00Z", waiting),
			reason: keywardv1alpha1.ReasonAwaitingApproval, message: "expired at 2027-02-22T10:00:00Z; no key replaces it until then"},
		{name: "a disabled key says so, not the wait", in: func() Observation {
			o := genuine("2026-12-01T00:00:00Z", granted)
			o.Spec.Disabled = true
			return o
		}(), reason: keywardv1alpha1.ReasonDisabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(tc.in)
			if (p.Mint != nil) != tc.mint {
				t.Errorf("mint %+v; want a mint: %v", p.Mint, tc.mint)
			}
			if p.WriteSecret != tc.mint && tc.in.Secret == SecretMissing {
				t.Errorf("WriteSecret %v for a Secret that is missing", p.WriteSecret)
			}
			if p.Health == nil || p.Health.Reason != tc.reason || p.Health.Stalled != tc.stalled {
				t.Fatalf("health %+v; want %s (stalled %v)", p.Health, tc.reason, tc.stalled)
			}
			if msg := p.Health.Message("kid_x"); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q; want it to contain %q", msg, tc.message)
			}
			if tc.withdrawn != p.Withheld.Withdrawn() {
				t.Errorf("withheld %+v; want withdrawn: %v", p.Withheld, tc.withdrawn)
			}
			if !tc.mint && !p.NextCheck.IsZero() && !p.NextCheck.After(tc.in.Now) {
				t.Errorf("next check %v is not after now %v: a loop", p.NextCheck, tc.in.Now)
			}
		})
	}
}

func TestApprovalTransitionsAreDerivedFromReadyBeforeAndAfter(t *testing.T) {
	ready := func(reason keywardv1alpha1.ConditionReason) keywardv1alpha1.APIKeyStatus {
		return keywardv1alpha1.APIKeyStatus{Conditions: []metav1.Condition{{Type: keywardv1alpha1.ConditionReady, Reason: string(reason)}}}
	}
	decided := ready(keywardv1alpha1.ReasonKeyReady)
	decided.Approval = &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob", Reason: "ok"}}
	deniedStatus := ready(keywardv1alpha1.ReasonApprovalDenied)
	deniedStatus.Approval = &keywardv1alpha1.ApprovalStatus{Denied: &keywardv1alpha1.ApprovalDecision{By: "carol", Reason: "no"}}
	scopes := []keywardv1alpha1.Scope{"payments:refund"}
	for _, tc := range []struct {
		name   string
		c      Change
		want   TransitionKind
		decide string
	}{
		{name: "asked", c: Change{Before: ready(""), After: ready(keywardv1alpha1.ReasonAwaitingApproval), AfterReady: keywardv1alpha1.ReasonAwaitingApproval, ApprovalScopes: scopes},
			want: TransitionApprovalRequested},
		{name: "approved", c: Change{Before: ready(keywardv1alpha1.ReasonAwaitingApproval), After: decided, BeforeReady: keywardv1alpha1.ReasonAwaitingApproval,
			AfterReady: keywardv1alpha1.ReasonKeyReady, Approved: true, ApprovalScopes: scopes}, want: TransitionApproved, decide: "bob"},
		{name: "denied", c: Change{Before: ready(keywardv1alpha1.ReasonAwaitingApproval), After: deniedStatus, BeforeReady: keywardv1alpha1.ReasonAwaitingApproval,
			AfterReady: keywardv1alpha1.ReasonApprovalDenied, ApprovalScopes: scopes}, want: TransitionApprovalDenied, decide: "carol"},
		{name: "no longer asked (the policy went): no approval is announced", c: Change{Before: ready(keywardv1alpha1.ReasonAwaitingApproval),
			After: ready(keywardv1alpha1.ReasonKeyReady), BeforeReady: keywardv1alpha1.ReasonAwaitingApproval, AfterReady: keywardv1alpha1.ReasonKeyReady}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Transition
			for _, tr := range Transitions(tc.c) {
				if tr.Kind == TransitionApprovalRequested || tr.Kind == TransitionApproved || tr.Kind == TransitionApprovalDenied {
					got = append(got, tr)
				}
			}
			if tc.want == "" {
				if len(got) > 0 {
					t.Errorf("transitions %+v; want none about approval", got)
				}
				return
			}
			if len(got) != 1 || got[0].Kind != tc.want || got[0].DecidedBy != tc.decide || len(got[0].Scopes) != 1 {
				t.Errorf("transitions %+v; want one %s decided by %q naming the scopes", got, tc.want, tc.decide)
			}
		})
	}
}

func TestSettleDropsAnObsoleteApprovalRecord(t *testing.T) {
	st := keywardv1alpha1.APIKeyStatus{Approval: &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{By: "bob"}}}
	keep := Settle(Observation{Now: at("2026-12-01T00:00:00Z"), Status: st, Approval: Approval{Approved: true, Scopes: []keywardv1alpha1.Scope{"a:b"}}}, Plan{}, WriteResult{})
	if keep.Status.Approval == nil {
		t.Error("an approval still asked for was dropped")
	}
	drop := Settle(Observation{Now: at("2026-12-01T00:00:00Z"), Status: st, Approval: Approval{Obsolete: true}}, Plan{}, WriteResult{})
	if drop.Status.Approval != nil {
		t.Error("an approval no policy asks for was kept")
	}
}
