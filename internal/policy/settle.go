package policy

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
)

// WriteOutcome is what became of a plan's Secret write: a closed set, so that Settle decides every case.
type WriteOutcome int

// The outcomes of a plan's Secret write.
const (
	// WriteNotAttempted: the plan leaves the Secret alone (Plan.WriteSecret is false).
	WriteNotAttempted WriteOutcome = iota
	// Written: the Secret holds the plan's record (written now, or already there).
	Written
	// WriteConflict: on write the Secret turned out to be someone else's.
	WriteConflict
	// WriteCacheLag: the API server has the Secret the cache does not show yet; the write waits for it.
	WriteCacheLag
	// WriteFailed: the write, or what had to precede it (reading the Secret, minting), failed.
	WriteFailed
)

// WriteResult is a WriteOutcome with what Settle needs to know about it.
type WriteResult struct {
	Outcome WriteOutcome
	// Record is the record the Secret now holds, with the minted key's hash (Written).
	Record keyrecord.Record
	// KeyHint is keys.Hint of the key the Secret now holds (Written).
	KeyHint string
	// Detail says why the Secret is someone else's (WriteConflict), what the write waits for
	// (WriteCacheLag), or the error (WriteFailed).
	Detail string
}

// Outcome is what one reconcile reports: the status to write, and the transitions it makes.
type Outcome struct {
	// Status is the status to write. When SignRecord is set, the record it shows is still to be signed
	// (keyrecord.SignStatus); otherwise its signature is already right.
	Status     keywardv1alpha1.APIKeyStatus
	SignRecord bool
	// Shown is the record Status shows; zero when it shows none.
	Shown keyrecord.Record
	// Health judges the key; nil when the reconcile could not (it failed, or waits for its cache). Message
	// and Progressing are the conditions' messages.
	Health      *Health
	Message     string
	Progressing string
	// Requeue is how soon to look again; zero when nothing is pending.
	Requeue time.Duration
	// Transitions is what happened to the key in this status write (Transitions).
	Transitions []Transition
}

// Settle decides, from what the reconcile observed, planned and managed to write, what status shows and what
// it reports. Status shows the record in the Secret; when the Secret does not hold the plan's record (it
// cannot be used or written, or the write failed) it shows what the plan withholds: the record the Secret
// serves, accepting nothing the plan stops, so that a revocation lands whatever state the Secret is in.
// Without a record Keyward signed it shows none. A failed write, a conflict found on write and a lagging
// cache override the plan's health; only a judged key moves observedGeneration.
func Settle(o Observation, plan Plan, w WriteResult) Outcome {
	now := o.Now
	out := Outcome{Status: *o.Status.DeepCopy()}
	st := &out.Status
	st.SecretName = o.SecretName
	switch {
	case w.Outcome == Written:
		out.Shown, out.SignRecord = w.Record, true
		keyrecord.ShowRecord(st, w.Record, w.KeyHint, plan.RenewalTime, now)
	case !plan.Withheld.IsZero():
		out.Shown, out.SignRecord = plan.Withheld, true
		hint, renewal := "", time.Time{}
		switch h := plan.Withheld.Hash; {
		case h != "" && o.Secret == SecretGenuine && h == o.Current.Hash:
			hint = o.SecretKeyHint
		case h != "" && h == o.Status.KeyHash:
			hint = o.Status.KeyHint
		}
		if plan.Withheld.Hash == plan.Record.Hash {
			renewal = plan.RenewalTime
		}
		keyrecord.ShowRecord(st, plan.Withheld, hint, renewal, now)
	case len(o.ForgedStatus) > 0:
		keyrecord.ShowNoRecord(st)
	}

	out.Health = plan.Health
	switch w.Outcome {
	case WriteFailed:
		out.Health, out.Progressing = nil, "Retrying after an error: "+w.Detail
		if out.Shown.Withdrawn() {
			out.Health = &Health{Reason: keywardv1alpha1.ReasonSecretUnwritable}
			out.Message = fmt.Sprintf("Writing Secret %s failed (%s). No key is accepted until a new one is written there: the last one was withdrawn",
				o.SecretName, w.Detail)
		}
	case WriteCacheLag:
		out.Health, out.Progressing, out.Requeue = nil, w.Detail, time.Second
	case WriteConflict:
		out.Health = &Health{Reason: keywardv1alpha1.ReasonSecretConflict, Stalled: true}
		out.Message, out.Requeue = w.Detail, ConflictBackoff(o.ConflictSince, now, o.ConflictRecheck)
	default:
		if !plan.NextCheck.IsZero() {
			out.Requeue = max(plan.NextCheck.Sub(now), time.Nanosecond)
		}
	}
	if out.Health != nil && out.Message == "" {
		out.Message = out.Health.Message(st.KeyID)
	}
	setConditions(st, o.Generation, out.Health, out.Message, out.Progressing, now)
	if out.Judged() {
		st.ObservedGeneration = o.Generation
	}
	setPreviousKeysInUse(st, o.Generation, plan.PreviousInUse, now)
	setPolicyViolations(st, o.Generation, o.PolicyViolations, now)
	setLeaks(st, o.Generation, o.LeakResponse, now)
	if o.Approval.Obsolete {
		st.Approval = nil // no policy asks for it any more: the verifier stops narrowing the key to it
	}

	change := Change{Before: o.Status, After: *st, BeforeReady: readyReason(o.Status), AfterReady: readyReason(*st),
		Expiring: plan.AnnounceExpiring && w.Outcome == Written, Restored: len(o.ForgedStatus) > 0, Now: now,
		ApprovalScopes: o.Approval.Scopes, Approved: o.Approval.Approved}
	if !out.Shown.IsZero() {
		change.Revoked = plan.Revoked
	}
	// What the write did beside the key: put back a forged status, dropped previous keys beyond the cap.
	if len(o.ForgedStatus) > 0 && w.Outcome != WriteFailed {
		out.Transitions = append(out.Transitions, Transition{Kind: TransitionStatusRestored, Fields: o.ForgedStatus})
	}
	if len(plan.DroppedByCap) > 0 && w.Outcome == Written {
		out.Transitions = append(out.Transitions, Transition{Kind: TransitionPreviousKeysDropped, Dropped: plan.DroppedByCap})
	}
	out.Transitions = append(out.Transitions, Transitions(change)...)
	return out
}

// Judged reports whether the reconcile judged the key (Health is set): observedGeneration then moves to the
// generation observed.
func (o Outcome) Judged() bool { return o.Health != nil }

// setConditions applies kstatus: Ready always; Reconciling and Stalled only while true. Without a judgement
// (health nil) Ready keeps what it said, with the generation it said it for.
func setConditions(st *keywardv1alpha1.APIKeyStatus, generation int64, health *Health, message, progressing string, now time.Time) {
	set := func(t string, status metav1.ConditionStatus, reason keywardv1alpha1.ConditionReason, message string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: string(reason),
			Message: message, ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now)})
	}
	switch {
	case health != nil && health.Ready:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionTrue, health.Reason, message)
	case health != nil:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionFalse, health.Reason, message)
	case meta.FindStatusCondition(st.Conditions, keywardv1alpha1.ConditionReady) == nil:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionUnknown, keywardv1alpha1.ReasonProgressing, progressing)
	}
	if health != nil && health.Stalled {
		set(keywardv1alpha1.ConditionStalled, metav1.ConditionTrue, health.Reason, message)
	} else if health != nil {
		meta.RemoveStatusCondition(&st.Conditions, keywardv1alpha1.ConditionStalled)
	}
	if progressing != "" {
		set(keywardv1alpha1.ConditionReconciling, metav1.ConditionTrue, keywardv1alpha1.ReasonProgressing, progressing)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, keywardv1alpha1.ConditionReconciling)
	}
}

// setPreviousKeysInUse reports the previous keys that are about to stop and still used: by key ID in
// status.previousKeysInUse, and as the PreviousKeyInUse condition, which is absent when there are none.
func setPreviousKeysInUse(st *keywardv1alpha1.APIKeyStatus, generation int64, inUse []PreviousKeyUse, now time.Time) {
	st.PreviousKeysInUse = nil
	if len(inUse) == 0 {
		meta.RemoveStatusCondition(&st.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse)
		return
	}
	var notes []string
	for _, u := range inUse {
		st.PreviousKeysInUse = append(st.PreviousKeysInUse, u.KeyID)
		until, used := metav1.NewTime(u.ValidUntil), metav1.NewTime(u.LastUsed)
		notes = append(notes, PreviousKeyInUseMessage(st.KeyID, u.KeyID, &until, &used))
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: keywardv1alpha1.ConditionPreviousKeyInUse, Status: metav1.ConditionTrue,
		Reason: string(keywardv1alpha1.ReasonPreviousKeyInUse), Message: strings.Join(notes, "; "), ObservedGeneration: generation,
		LastTransitionTime: metav1.NewTime(now)})
}

// MaxViolationsShown bounds how many violations the PolicyViolation condition's message lists.
const MaxViolationsShown = 8

// setPolicyViolations reports the APIKeyPolicies the spec breaks as the PolicyViolation condition, which is
// absent when it breaks none. Its message lists at most MaxViolationsShown of them.
func setPolicyViolations(st *keywardv1alpha1.APIKeyStatus, generation int64, violations []string, now time.Time) {
	if len(violations) == 0 {
		meta.RemoveStatusCondition(&st.Conditions, keywardv1alpha1.ConditionPolicyViolation)
		return
	}
	shown := violations
	if len(shown) > MaxViolationsShown {
		shown = shown[:MaxViolationsShown]
	}
	msg := strings.Join(shown, "; ")
	if more := len(violations) - len(shown); more > 0 {
		msg += fmt.Sprintf("; and %d more", more)
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: keywardv1alpha1.ConditionPolicyViolation, Status: metav1.ConditionTrue,
		Reason: string(keywardv1alpha1.ReasonPolicyViolation), Message: msg + ". The key keeps working; its next change must obey the policy",
		ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now)})
}

// MaxLeaksShown bounds how many leak reports the KeyLeaked condition's message describes (status.leaks
// holds at most 16).
const MaxLeaksShown = 16

// setLeaks reports status.leaks as the KeyLeaked condition, absent when there is no report: for each
// reported key, where it was found and whether the key written in this status still accepts it.
func setLeaks(st *keywardv1alpha1.APIKeyStatus, generation int64, response keywardv1alpha1.LeakResponse, now time.Time) {
	if len(st.Leaks) == 0 {
		meta.RemoveStatusCondition(&st.Conditions, keywardv1alpha1.ConditionKeyLeaked)
		return
	}
	var notes []string
	for i, l := range st.Leaks {
		if i == MaxLeaksShown {
			break
		}
		notes = append(notes, LeakMessage(l, st.AcceptsKeyID(l.KeyID), response))
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: keywardv1alpha1.ConditionKeyLeaked, Status: metav1.ConditionTrue,
		Reason: string(keywardv1alpha1.ReasonKeyLeaked), Message: strings.Join(notes, "; "), ObservedGeneration: generation,
		LastTransitionTime: metav1.NewTime(now)})
}

// LeakMessage says which key was reported leaked, by whom, when and where, and whether it still works.
func LeakMessage(l keywardv1alpha1.LeakReport, accepted bool, response keywardv1alpha1.LeakResponse) string {
	msg := fmt.Sprintf("Key %s was reported leaked at %s", l.KeyID, l.ReportedAt.UTC().Format(time.RFC3339))
	if l.Reporter != "" {
		msg += " by " + l.Reporter
	}
	if l.URL != "" {
		msg += " (found at " + l.URL + ")"
	}
	switch {
	case !accepted:
		return msg + ": it is no longer accepted"
	case response == keywardv1alpha1.LeakResponseNotify:
		return msg + ": it is still accepted (leakResponse Notify): rotate it with --grace 0s or revoke it"
	}
	return msg + ": it is being stopped"
}

// PreviousKeyInUseMessage says which previous key is still used, until when it works, and what to do.
func PreviousKeyInUseMessage(current, previous string, until, used *metav1.Time) string {
	at := func(t *metav1.Time) string {
		if t == nil {
			return "recently"
		}
		return t.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("Previous key %s stops being accepted at %s but was used at %s: whatever still presents it must "+
		"move to the current key %s before then", previous, at(until), at(used), current)
}

// readyReason is the Ready condition's reason, "" without one.
func readyReason(st keywardv1alpha1.APIKeyStatus) keywardv1alpha1.ConditionReason {
	if c := meta.FindStatusCondition(st.Conditions, keywardv1alpha1.ConditionReady); c != nil {
		return keywardv1alpha1.ConditionReason(c.Reason)
	}
	return ""
}
