package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/period"
)

// settleFixture is an APIKey at generation 2 whose Secret holds key "c" (revision 3), which status shows as
// Ready: what a reconcile observes before something happens to it.
type settleFixture struct {
	now     time.Time
	current keyrecord.Record
	obs     Observation
}

func newSettleFixture() settleFixture {
	now := at("2026-12-01T00:00:00Z")
	current := keyrecord.Record{Hash: hash("c"), Revision: 3, IssuedAt: at("2026-11-24T10:00:00Z"), ExpiresAt: at("2027-02-22T10:00:00Z"),
		Reason: keywardv1alpha1.RotationInitial, HandledToken: "t1",
		Previous: []keyrecord.PreviousKey{{Hash: hash("a"), ValidUntil: at("2026-12-24T11:00:00Z")}}}
	var st keywardv1alpha1.APIKeyStatus
	keyrecord.ShowRecord(&st, current, "kw_…cccc", time.Time{}, now)
	st.RecordSignature, st.SecretName, st.ObservedGeneration = "signed", "orders", 1
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: keywardv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: string(keywardv1alpha1.ReasonKeyReady), Message: "Key " + id("c") + " is valid", ObservedGeneration: 1,
		LastTransitionTime: metav1.NewTime(at("2026-11-24T10:00:00Z"))})
	return settleFixture{now: now, current: current, obs: Observation{
		Now: now, Spec: Spec{Validity: period.MustParse("90d"), AutoRotate: true, GracePeriod: period.MustParse("1h")},
		Secret: SecretGenuine, Current: current, LastKnown: current, ConflictRecheck: time.Minute,
		Status: st, Generation: 2, SecretName: "orders", SecretKeyHint: "kw_…cccc",
	}}
}

// written is the WriteResult of a write that put the plan's record in place: the Secret's key is c (a
// minted key's hash is filled in).
func written(p Plan, c string) WriteResult {
	rec := p.Record
	if p.Mint != nil {
		rec.Hash = hash(c)
	}
	return WriteResult{Outcome: Written, Record: rec, KeyHint: "kw_…" + strings.Repeat(c, 4)}
}

func kinds(ts []Transition) []TransitionKind {
	var out []TransitionKind
	for _, t := range ts {
		out = append(out, t.Kind)
	}
	return out
}

func condition(st keywardv1alpha1.APIKeyStatus, t string) *metav1.Condition {
	return meta.FindStatusCondition(st.Conditions, t)
}

// What each outcome of the Secret write makes of the plan: which record status shows, the health and its
// messages, whether the generation was judged, when to look again, and the transitions.
func TestSettleReportsEachOutcomeOfTheSecretWrite(t *testing.T) {
	type want struct {
		// shownHash and shownRevision: the record status shows ("" and 0: none).
		shownHash     string
		shownRevision int64
		hint          string
		ready         metav1.ConditionStatus
		reason        keywardv1alpha1.ConditionReason
		message       []string // the Ready message contains each
		stalled       bool
		reconciling   string // "" when the condition must be absent
		judged        bool
		requeue       time.Duration
		transitions   []TransitionKind
	}
	cases := []struct {
		name  string
		edit  func(*Observation)
		write func(Plan) WriteResult
		want  want
	}{
		{name: "written: a manual rotation shows the new key, Ready, and the rotation",
			edit:  func(o *Observation) { o.RotateToken = "t2" },
			write: func(p Plan) WriteResult { return written(p, "d") },
			want: want{shownHash: hash("d"), shownRevision: 4, hint: "kw_…dddd", ready: metav1.ConditionTrue, reason: keywardv1alpha1.ReasonKeyReady,
				// The next look: the last quarter (15 minutes) of the replaced key's hour of grace begins.
				message: []string{id("d"), "valid until"}, judged: true, requeue: 45 * time.Minute, transitions: []TransitionKind{TransitionKeyRotated}}},
		{name: "written: nothing to mint keeps the key and says when the previous key ends",
			edit:  func(o *Observation) {},
			write: func(p Plan) WriteResult { return written(p, "c") },
			want: want{shownHash: hash("c"), shownRevision: 3, hint: "kw_…cccc", ready: metav1.ConditionTrue, reason: keywardv1alpha1.ReasonKeyReady,
				// The next look: previous key a's last day of grace (24 h before 2026-12-24T11:00) begins.
				judged: true, requeue: at("2026-12-23T11:00:00Z").Sub(at("2026-12-01T00:00:00Z"))}},
		{name: "failed while revoking the current key: the withdrawal shows, Ready says the Secret is unwritable, and it retries",
			edit:  func(o *Observation) { o.Revoke = []string{id("c")} },
			write: func(Plan) WriteResult { return WriteResult{Outcome: WriteFailed, Detail: "the API server said no"} },
			want: want{shownRevision: 4, ready: metav1.ConditionFalse, reason: keywardv1alpha1.ReasonSecretUnwritable,
				message:     []string{"Writing Secret orders failed (the API server said no)", "withdrawn"},
				reconciling: "Retrying after an error: the API server said no", judged: true, transitions: []TransitionKind{TransitionKeyWithdrawn, TransitionSecretUnwritable}}},
		{name: "failed with nothing withdrawn: Ready keeps its judgement of the generation before, and it retries",
			edit:  func(o *Observation) { o.RotateToken = "t2" },
			write: func(Plan) WriteResult { return WriteResult{Outcome: WriteFailed, Detail: "timeout"} },
			want: want{shownHash: hash("c"), shownRevision: 3, hint: "kw_…cccc", ready: metav1.ConditionTrue, reason: keywardv1alpha1.ReasonKeyReady,
				message: []string{"is valid"}, reconciling: "Retrying after an error: timeout"}},
		{name: "the cache lags: nothing is judged, and it looks again in a second",
			edit: func(o *Observation) { o.Secret, o.Current = SecretMissing, keyrecord.Record{} },
			write: func(Plan) WriteResult {
				return WriteResult{Outcome: WriteCacheLag, Detail: "Waiting for the cache to show Secret orders"}
			},
			want: want{shownHash: hash("c"), shownRevision: 3, hint: "kw_…cccc", ready: metav1.ConditionTrue, reason: keywardv1alpha1.ReasonKeyReady,
				message: []string{"is valid"}, reconciling: "Waiting for the cache to show Secret orders", requeue: time.Second}},
		{name: "a conflict found on write stalls with the reason, and looks again after the back-off",
			edit: func(o *Observation) { o.Secret, o.Current = SecretMissing, keyrecord.Record{} },
			write: func(Plan) WriteResult {
				return WriteResult{Outcome: WriteConflict, Detail: "Secret orders belongs to APIKey other"}
			},
			want: want{shownHash: hash("c"), shownRevision: 3, hint: "kw_…cccc", ready: metav1.ConditionFalse, reason: keywardv1alpha1.ReasonSecretConflict,
				message: []string{"belongs to APIKey other"}, stalled: true, judged: true, requeue: time.Minute, transitions: []TransitionKind{TransitionSecretConflict}}},
		{name: "a forged status with nothing Keyward signed is cleared",
			edit: func(o *Observation) {
				o.LastKnown, o.Secret, o.Current, o.Conflict = keyrecord.Record{}, SecretConflict, keyrecord.Record{}, "not ours"
				o.ForgedStatus = []string{"status.recordSignature"}
			},
			write: func(Plan) WriteResult { return WriteResult{Outcome: WriteNotAttempted} },
			want: want{ready: metav1.ConditionFalse, reason: keywardv1alpha1.ReasonSecretConflict, message: []string{"not ours"}, stalled: true,
				judged: true, requeue: time.Minute, transitions: []TransitionKind{TransitionStatusRestored, TransitionSecretConflict}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSettleFixture()
			o := f.obs
			tc.edit(&o)
			before := *o.Status.DeepCopy()
			plan := PlanFor(o)
			got := Settle(o, plan, tc.write(plan))
			st := got.Status
			if st.KeyHash != tc.want.shownHash || st.Revision != tc.want.shownRevision || st.KeyHint != tc.want.hint {
				t.Errorf("status shows key %q revision %d hint %q; want %q, %d, %q", st.KeyHash, st.Revision, st.KeyHint,
					tc.want.shownHash, tc.want.shownRevision, tc.want.hint)
			}
			if got.Shown.Hash != st.KeyHash || got.Shown.Revision != st.Revision {
				t.Errorf("Shown %+v is not the record status shows", got.Shown)
			}
			ready := condition(st, keywardv1alpha1.ConditionReady)
			if ready == nil || ready.Status != tc.want.ready || ready.Reason != string(tc.want.reason) {
				t.Fatalf("Ready %+v, want %s %s", ready, tc.want.ready, tc.want.reason)
			}
			for _, m := range tc.want.message {
				if !strings.Contains(ready.Message, m) {
					t.Errorf("Ready's message %q does not say %q", ready.Message, m)
				}
			}
			if s := condition(st, keywardv1alpha1.ConditionStalled); (s != nil) != tc.want.stalled {
				t.Errorf("Stalled %+v, want present: %v", s, tc.want.stalled)
			}
			r := condition(st, keywardv1alpha1.ConditionReconciling)
			switch {
			case tc.want.reconciling == "" && r != nil:
				t.Errorf("Reconciling %+v present", r)
			case tc.want.reconciling != "" && (r == nil || r.Message != tc.want.reconciling):
				t.Errorf("Reconciling %+v, want %q", r, tc.want.reconciling)
			}
			wantGeneration := before.ObservedGeneration
			if tc.want.judged {
				wantGeneration = o.Generation
			}
			if got.Judged() != tc.want.judged || st.ObservedGeneration != wantGeneration {
				t.Errorf("judged %v, observedGeneration %d; want %v, %d", got.Judged(), st.ObservedGeneration, tc.want.judged, wantGeneration)
			}
			if !tc.want.judged && ready.ObservedGeneration != before.ObservedGeneration {
				t.Errorf("an unjudged Ready moved to generation %d", ready.ObservedGeneration)
			}
			if got.Requeue != tc.want.requeue {
				t.Errorf("requeue %v, want %v", got.Requeue, tc.want.requeue)
			}
			if k := kinds(got.Transitions); !slices.Equal(k, tc.want.transitions) {
				t.Errorf("transitions %v, want %v", k, tc.want.transitions)
			}
			if got.SignRecord != (st.KeyHash != "" || st.Revision > 0) {
				t.Errorf("SignRecord %v for a status showing revision %d", got.SignRecord, st.Revision)
			}
			if st.SecretName != "orders" {
				t.Errorf("status.secretName %q", st.SecretName)
			}
			if !equalStatus(o.Status, before) {
				t.Error("Settle changed the observed status")
			}
		})
	}
}

func equalStatus(a, b keywardv1alpha1.APIKeyStatus) bool {
	return a.KeyHash == b.KeyHash && a.Revision == b.Revision && len(a.Conditions) == len(b.Conditions) &&
		slices.EqualFunc(a.Conditions, b.Conditions, func(x, y metav1.Condition) bool { return x == y })
}

// The matrix of revocation_test.go, as unit cases: whatever state the Secret is in (immutable, or relabelled
// to another APIKey), revoking the current key or rotating it with a zero grace period withdraws it in status
// at once, and disabling keeps it shown (the verifier refuses it by spec.disabled); Ready says what is wrong
// with the Secret, and the withdrawal is a transition naming the key.
func TestSettleLandsARevocationInStatusWhateverStateTheSecretIsIn(t *testing.T) {
	breakages := []struct {
		name   string
		edit   func(*Observation)
		reason keywardv1alpha1.ConditionReason
		names  string
	}{
		{name: "immutable", reason: keywardv1alpha1.ReasonSecretUnwritable, names: "immutable",
			edit: func(o *Observation) { o.Unwritable = "Secret orders is immutable (immutable: true)" }},
		{name: "relabelled to another APIKey", reason: keywardv1alpha1.ReasonSecretConflict, names: "belongs to APIKey payments",
			edit: func(o *Observation) {
				o.Secret, o.Current, o.Conflict = SecretConflict, keyrecord.Record{}, "Secret orders belongs to APIKey payments"
			}},
	}
	actions := []struct {
		name      string
		do        func(*Observation)
		withdrawn bool
	}{
		{name: "revoked by ID", withdrawn: true, do: func(o *Observation) { o.Revoke = []string{id("c")} }},
		{name: "rotated with a zero grace period", withdrawn: true, do: func(o *Observation) {
			o.Spec.GracePeriod, o.RotateToken = period.Period{}, "leaked"
		}},
		{name: "disabled", do: func(o *Observation) { o.Spec.Disabled = true }},
	}
	for _, b := range breakages {
		for _, a := range actions {
			t.Run(b.name+"/"+a.name, func(t *testing.T) {
				f := newSettleFixture()
				o := f.obs
				b.edit(&o)
				// The breakage was reported before the action: Ready already says it.
				broken := Settle(o, PlanFor(o), WriteResult{Outcome: WriteNotAttempted})
				o.Status = broken.Status
				if r := condition(o.Status, keywardv1alpha1.ConditionReady); r.Reason != string(b.reason) {
					t.Fatalf("the breakage reports Ready %+v", r)
				}

				a.do(&o)
				plan := PlanFor(o)
				if plan.WriteSecret {
					t.Fatal("the plan writes a Secret it may not")
				}
				got := Settle(o, plan, WriteResult{Outcome: WriteNotAttempted})
				st := got.Status
				ready := condition(st, keywardv1alpha1.ConditionReady)
				if ready.Status != metav1.ConditionFalse || ready.Reason != string(b.reason) || !strings.Contains(ready.Message, b.names) {
					t.Errorf("Ready %+v does not say that the Secret is %s", ready, b.names)
				}
				if !got.Judged() || st.ObservedGeneration != o.Generation {
					t.Errorf("the stalled key was not judged: observedGeneration %d", st.ObservedGeneration)
				}
				accepts := st.KeyHash == hash("c") || slices.ContainsFunc(st.PreviousKeys, func(p keywardv1alpha1.PreviousKey) bool { return p.KeyHash == hash("c") })
				if a.withdrawn {
					if st.KeyHash != "" || st.Revision != f.current.Revision+1 || accepts {
						t.Errorf("status shows key %q at revision %d (accepting c: %v); want no key at revision %d", st.KeyID, st.Revision, accepts, f.current.Revision+1)
					}
					if !got.SignRecord {
						t.Error("the withdrawal is not signed")
					}
					i := slices.IndexFunc(got.Transitions, func(t Transition) bool { return t.Kind == TransitionKeyWithdrawn })
					if i < 0 || got.Transitions[i].PreviousKeyID != id("c") {
						t.Errorf("transitions %+v do not withdraw %s", got.Transitions, id("c"))
					}
					if !strings.Contains(ready.Message, "withdrawn") {
						t.Errorf("Ready %q does not say the key was withdrawn", ready.Message)
					}
				} else if st.KeyHash != hash("c") || len(got.Transitions) != 0 {
					t.Errorf("disabling showed key %q with transitions %v; want key c and none (the verifier refuses it by spec)", st.KeyHash, kinds(got.Transitions))
				}
				if strings.Contains(ready.Message, keys.IDFromHash(hash("d"))) {
					t.Error("Ready names a key that was never minted")
				}
			})
		}
	}
}

// key.expiring goes out with the write that puts the key in place: never when the write did not happen.
func TestSettleAnnouncesKeyExpiringOnlyWithTheWriteThatShowsTheKey(t *testing.T) {
	for _, w := range []WriteOutcome{Written, WriteNotAttempted, WriteFailed, WriteCacheLag, WriteConflict} {
		f := newSettleFixture()
		o := f.obs
		o.Spec.AutoRotate = false
		o.Spec.ExpiringBefore = period.MustParse("90d")
		plan := PlanFor(o)
		if !plan.AnnounceExpiring {
			t.Fatal("the plan does not announce key.expiring")
		}
		res := WriteResult{Outcome: w, Detail: "x"}
		if w == Written {
			res = written(plan, "c")
		}
		got := slices.Contains(kinds(Settle(o, plan, res).Transitions), TransitionKeyExpiring)
		if got != (w == Written) {
			t.Errorf("write outcome %d: KeyExpiring %v", w, got)
		}
	}
}

// A mint beyond MaxPreviousKeys reports the keys it dropped, with the write that drops them only.
func TestSettleReportsPreviousKeysDroppedByTheWriteThatDropsThem(t *testing.T) {
	for _, w := range []WriteOutcome{Written, WriteFailed} {
		f := newSettleFixture()
		o := f.obs
		o.Current.Previous = nil
		for i := range MaxPreviousKeys {
			o.Current.Previous = append(o.Current.Previous, keyrecord.PreviousKey{Hash: hash(string(rune('e' + i))), ValidUntil: f.now.Add(time.Duration(i+1) * time.Hour)})
		}
		o.LastKnown, o.RotateToken = o.Current, "t2"
		plan := PlanFor(o)
		res := WriteResult{Outcome: w, Detail: "x"}
		if w == Written {
			res = written(plan, "d")
		}
		got := Settle(o, plan, res).Transitions
		i := slices.IndexFunc(got, func(t Transition) bool { return t.Kind == TransitionPreviousKeysDropped })
		switch {
		case w == Written && (i < 0 || !slices.Equal(got[i].Dropped, []string{id("e")})):
			t.Errorf("written: transitions %+v do not drop %s", got, id("e"))
		case w != Written && i >= 0:
			t.Errorf("a failed write reports keys dropped: %+v", got)
		}
	}
}

func TestSettleReportsPolicyViolationsAsAConditionAnnouncedWhenTheyChange(t *testing.T) {
	f := newSettleFixture()
	many := make([]string, MaxViolationsShown+2)
	for i := range many {
		many[i] = fmt.Sprintf("APIKeyPolicy p%d: spec.prefix \"kw\" is not among the prefixes the policy allows", i)
	}
	cases := []struct {
		name       string
		before     []string
		now        []string
		announced  bool
		wantInText string
	}{
		{"none", nil, nil, false, ""},
		{"a new violation", nil, many[:1], true, many[0]},
		{"the same violation again", many[:1], many[:1], false, many[0]},
		{"another violation", many[:1], many[:2], true, many[1]},
		{"more than are shown", nil, many, true, "; and 2 more"},
		{"the violation ends", many[:1], nil, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := f.obs
			if tc.before != nil {
				o.PolicyViolations = tc.before
				o.Status = Settle(o, PlanFor(o), WriteResult{Outcome: WriteNotAttempted}).Status
			}
			o.PolicyViolations = tc.now
			out := Settle(o, PlanFor(o), WriteResult{Outcome: WriteNotAttempted})
			c := meta.FindStatusCondition(out.Status.Conditions, keywardv1alpha1.ConditionPolicyViolation)
			switch {
			case tc.now == nil && c != nil:
				t.Errorf("condition %+v; want none", c)
			case tc.now != nil && (c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, tc.wantInText)):
				t.Errorf("condition %+v; want True with %q", c, tc.wantInText)
			}
			if ready := meta.FindStatusCondition(out.Status.Conditions, keywardv1alpha1.ConditionReady); ready == nil || ready.Status != metav1.ConditionTrue {
				t.Errorf("a violation changed Ready: %+v", ready)
			}
			announced := slices.ContainsFunc(out.Transitions, func(tr Transition) bool { return tr.Kind == TransitionPolicyViolation })
			if announced != tc.announced {
				t.Errorf("announced %v, want %v: %+v", announced, tc.announced, out.Transitions)
			}
		})
	}
}
