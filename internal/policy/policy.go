// Package policy decides, without touching the cluster, everything about an APIKey's key: whether to mint a
// new one and why, what it replaces and until when, whether the key is usable, what status says about it and
// when to look again. The reconciler observes, hands the observation to Plan and carries out the answer;
// every rule of the key lifecycle lives here, where table tests with a fixed clock can reach it.
package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/period"
)

// Defaults for optional spec fields.
var (
	DefaultValidity    = period.MustParse("90d")
	DefaultGracePeriod = period.MustParse("1h")
)

// MaxFixedExpiryAhead is how far ahead a fixed spec.expiresAt may lie when a key is judged.
var MaxFixedExpiryAhead = period.MustParse("10y")

// Spec is an APIKey spec with defaults applied and durations parsed.
type Spec struct {
	Prefix string
	// Validity is used when FixedExpiry is zero.
	Validity period.Period
	// FixedExpiry is spec.expiresAt; a key with a fixed expiry is never rotated automatically.
	FixedExpiry time.Time
	AutoRotate  bool
	// RenewBefore is nil when the renewal time is a third of the validity before expiry.
	RenewBefore *period.Period
	GracePeriod period.Period
	Disabled    bool
	// ExpiringBefore is spec.webhook.expiringBefore (default 7d) when the APIKey has a webhook; zero without.
	ExpiringBefore period.Period
	// MaxValidity is the strictest maxValidity of the APIKeyPolicies that select the APIKey's namespace (zero:
	// none). A key minted from now on is valid no longer; the current key keeps its recorded expiry, so an
	// APIKey that predates a policy is not cut short, and its next key obeys the policy.
	MaxValidity period.Period
}

// Resolve applies defaults and parses durations. Its errors are for status messages: they name the field.
func Resolve(s keywardv1alpha1.APIKeySpec) (Spec, error) {
	out := Spec{Prefix: s.Prefix, Disabled: s.Disabled, AutoRotate: true, GracePeriod: DefaultGracePeriod}
	if out.Prefix == "" {
		out.Prefix = "kw"
	}
	var err error
	if s.ExpiresAt != nil {
		if s.Validity != "" {
			return Spec{}, fmt.Errorf("spec.validity and spec.expiresAt are mutually exclusive")
		}
		out.FixedExpiry = s.ExpiresAt.UTC()
		out.AutoRotate = false
	} else if out.Validity, err = period.ParseOr(string(s.Validity), DefaultValidity); err != nil {
		return Spec{}, fmt.Errorf("spec.validity: %w", err)
	} else if out.Validity.Approx() < time.Hour {
		return Spec{}, fmt.Errorf("spec.validity must be at least 1h")
	}
	if r := s.Rotation; r != nil {
		if r.Policy == keywardv1alpha1.RotationPolicyDisabled {
			out.AutoRotate = false
		}
		if r.RenewBefore != "" {
			rb, err := period.Parse(string(r.RenewBefore))
			if err != nil {
				return Spec{}, fmt.Errorf("spec.rotation.renewBefore: %w", err)
			}
			out.RenewBefore = &rb
		}
		if out.GracePeriod, err = period.ParseOr(string(r.GracePeriod), DefaultGracePeriod); err != nil {
			return Spec{}, fmt.Errorf("spec.rotation.gracePeriod: %w", err)
		}
	}
	if w := s.Webhook; w != nil {
		if out.ExpiringBefore, err = period.ParseOr(string(w.ExpiringBefore), DefaultExpiringBefore); err != nil {
			return Spec{}, fmt.Errorf("spec.webhook.expiringBefore: %w", err)
		}
	}
	return out, nil
}

// ExpiresAt is when a key issued at issuedAt expires under this spec: the fixed expiry, or the issue time
// plus the validity.
func (s Spec) ExpiresAt(issuedAt time.Time) time.Time {
	if !s.FixedExpiry.IsZero() {
		return s.FixedExpiry
	}
	return s.Validity.AddTo(issuedAt)
}

// NewKeyExpiresAt is when a key minted at issuedAt expires: ExpiresAt, cut to MaxValidity.
func (s Spec) NewKeyExpiresAt(issuedAt time.Time) time.Time {
	e := s.ExpiresAt(issuedAt)
	if !s.MaxValidity.IsZero() {
		if capped := s.MaxValidity.AddTo(issuedAt); capped.Before(e) {
			return capped
		}
	}
	return e
}

// RenewalTime is when an Auto rotation mints the next key, or zero when the key is never renewed.
func (s Spec) RenewalTime(issuedAt time.Time) time.Time {
	return s.renewalTime(issuedAt, s.ExpiresAt(issuedAt))
}

// renewalTime is when an Auto rotation mints the next key for a key issued at issuedAt that expires at
// expiry (earlier than the spec says when the validity grew after it was minted), or zero when never.
func (s Spec) renewalTime(issuedAt, expiry time.Time) time.Time {
	if !s.AutoRotate || !s.FixedExpiry.IsZero() {
		return time.Time{}
	}
	if s.RenewBefore != nil {
		// Under a policy's MaxValidity a key may live shorter than renewBefore: renewing at once would mint
		// key after key, so such a key is renewed a third of its life before expiry instead.
		if renewal := s.RenewBefore.SubtractFrom(expiry); renewal.After(issuedAt) || s.MaxValidity.IsZero() {
			return renewal
		}
	}
	return expiry.Add(-expiry.Sub(issuedAt) / 3).Truncate(time.Second)
}

// Validate judges the spec for a key issued at issuedAt, which is what CEL cannot do: with calendar months
// and years a renewBefore can reach back to the issue time and rotate in a loop, and a fixed expiry can lie
// too far ahead of the time it is judged at.
func (s Spec) Validate(issuedAt time.Time) error {
	if renewal := s.RenewalTime(issuedAt); !renewal.IsZero() && !renewal.After(issuedAt) {
		return fmt.Errorf("spec.rotation.renewBefore (%s) is not shorter than spec.validity (%s) for a key issued at %s",
			s.RenewBefore, s.Validity, issuedAt.UTC().Format(time.RFC3339))
	}
	if !s.FixedExpiry.IsZero() && s.FixedExpiry.After(MaxFixedExpiryAhead.AddTo(issuedAt)) {
		return fmt.Errorf("spec.expiresAt (%s) is more than %s ahead", s.FixedExpiry.Format(time.RFC3339), MaxFixedExpiryAhead)
	}
	return nil
}

// SecretState is what the reconciler found where the key's Secret should be.
type SecretState int

// The states of the key's Secret.
const (
	SecretMissing SecretState = iota
	// SecretConflict: a Secret of that name exists and this APIKey may not use it.
	SecretConflict
	// SecretTampered: the Secret is this APIKey's but its key or record is not what Keyward wrote.
	SecretTampered
	// SecretGenuine: the Secret holds the key and the record Keyward wrote.
	SecretGenuine
	// SecretSuperseded: the Secret holds a genuine record older than the withdrawal status shows (see
	// keyrecord.Record.Withdrawn): its key stays refused until a new one replaces it.
	SecretSuperseded
)

// MaxPreviousKeys is how many replaced keys a record keeps accepting at once. Each manual rotation adds one
// for its grace period; without a bound a few thousand rotations would push the Secret's annotations past
// the API server's 256 KiB and no renewal could be written any more. Beyond it the oldest are dropped.
const MaxPreviousKeys = 10

// Observation is everything the plan depends on, as the reconciler found it.
type Observation struct {
	Now time.Time
	// Spec is the resolved spec; SpecError, when set, is why it could not be resolved.
	Spec      Spec
	SpecError error
	Secret    SecretState
	// Conflict says why the Secret cannot be used (SecretConflict).
	Conflict string
	// Unwritable says why the Secret, which is this APIKey's, cannot be written (it is immutable); "" when it
	// can. Nothing is written to it, and status shows what it holds, accepting nothing the plan stops.
	Unwritable string
	// Current is the Secret's record (SecretGenuine).
	Current keyrecord.Record
	// LastKnown is the last record Keyward signed into status; zero when status holds none Keyward signed.
	LastKnown keyrecord.Record
	// RotateToken is the keyward.dev/rotate annotation, "" when absent.
	RotateToken string
	// Revoke holds the key IDs of the keyward.dev/revoke annotation.
	Revoke []string
	// ConflictRecheck is how long a new conflict waits before it is looked at again; a lasting one waits
	// longer (ConflictBackoff).
	ConflictRecheck time.Duration
	// ConflictSince is when the APIKey's current SecretConflict began (the Ready condition's transition
	// time); zero when it was not in conflict before this look.
	ConflictSince time.Time
	// ExpiringNotified is the revision whose key.expiring has been queued (status.webhook.expiringNotifiedRevision).
	ExpiringNotified int64
	// LastUsed is when the verifiers last accepted each key, by key ID (status.usage.keys).
	LastUsed map[string]time.Time
	// PolicyViolations are the ways the spec breaks the APIKeyPolicies that select its namespace, each worded
	// as admission words it ("APIKeyPolicy NAME: ..."); nil when it breaks none or policies are not judged.
	PolicyViolations []string
	// Approval is what the APIKeyPolicies' approvalRequiredScopes ask of the spec and what approvers decided;
	// zero when no approval is needed or policies are not judged.
	Approval Approval
	// Leaks are the reports of leaked keys (status.leaks), and LeakResponse what they do (spec.leakResponse,
	// or the manager's default): Rotate revokes the reported keys, Disable withdraws every key until a new
	// rotate token (leakHold), Notify nothing. Settle reports them either way.
	Leaks        []keywardv1alpha1.LeakReport
	LeakResponse keywardv1alpha1.LeakResponse

	// What Settle reports from: the status as read, the APIKey's generation, the Secret's name, keys.Hint
	// of the Secret's key (SecretGenuine), and the status fields of a record Keyward did not sign (empty
	// when status is genuine or shows none).
	Status        keywardv1alpha1.APIKeyStatus
	Generation    int64
	SecretName    string
	SecretKeyHint string
	ForgedStatus  []string
}

// Approval is what the observation knows of the approval that APIKeyPolicies ask for.
type Approval struct {
	// Scopes are the spec's scopes that need an approval (empty: none does) and Policies the policies that
	// ask for it.
	Scopes   []keywardv1alpha1.Scope
	Policies []string
	// Approved is set when status.approval.approved covers the spec as it is.
	Approved bool
	// Granted is set when an earlier approval covers another spec: the reconciler resolved Spec from what it
	// covers (approval.Apply), so a key minted while the change waits is one that approval covers.
	Granted bool
	// Denied is the denial that covers the spec as it is; nil when none does.
	Denied *keywardv1alpha1.ApprovalDecision
	// RequestedBy is the author of the change (keyward.dev/requested-by), "" when unknown; SelfApproval is
	// whether that author may approve it.
	RequestedBy  string
	SelfApproval bool
	// Obsolete is set when status holds an approval record and no policy asks for one any more: Settle drops
	// the record, so the verifier no longer narrows the key to it.
	Obsolete bool
}

// Waiting reports whether the spec needs an approval that it does not have.
func (a Approval) Waiting() bool { return len(a.Scopes) > 0 && !a.Approved }

// DefaultExpiringBefore is how long before an expiry key.expiring is sent when spec.webhook does not say.
var DefaultExpiringBefore = period.MustParse("7d")

// Mint is a decision to mint a new key.
type Mint struct {
	Reason keywardv1alpha1.RotationReason
	// Replaced is the key the new one replaces (zero for the first key, or when nothing genuine is known).
	Replaced keyrecord.Record
	// ReplacedUntil is how long Replaced stays accepted; zero when it is dropped at once.
	ReplacedUntil time.Time
}

// Plan is what to do for one APIKey and what to report.
type Plan struct {
	// Mint is set when a new key is to be minted.
	Mint *Mint
	// Record is the record the Secret and status should hold afterwards. For a mint its Hash is empty: the
	// key does not exist yet, and whoever mints it fills the hash in. Zero when no key is judged.
	Record keyrecord.Record
	// WriteSecret is false when the Secret must be left alone (conflict, invalid spec).
	WriteSecret bool
	// Revoked lists the key IDs that this plan stops accepting at once because keyward.dev/revoke named them.
	Revoked []string
	// DroppedByZeroGrace lists the previous keys a zero-grace manual rotation revoked with the current one.
	DroppedByZeroGrace []string
	// DroppedByCap lists the oldest previous keys that a mint dropped to keep at most MaxPreviousKeys.
	DroppedByCap []string
	// Withheld is what status shows when the Secret does not take Record (it cannot be used or written, or
	// the write fails): the record the Secret serves, accepting no key that this plan stops accepting. When
	// the plan stops the current key it is a withdrawal (keyrecord.Record.Withdrawn), and the new key follows
	// once the Secret can be written. Zero when no key has been recorded.
	Withheld keyrecord.Record
	// Health says whether the key is usable; nil when the plan could not judge the key.
	Health *Health
	// RenewalTime is when the next key will be minted; zero when never.
	RenewalTime time.Time
	// NextCheck is the next instant the plan changes by itself; zero when nothing is pending.
	NextCheck time.Time
	// ExpiringNotice is when key.expiring is due for the current key: ExpiringBefore before an expiry that no
	// renewal will prevent. Zero without a webhook, or when a renewal replaces the key first.
	ExpiringNotice time.Time
	// PreviousInUse are the previous keys of Record near the end of their grace period that were used within
	// that notice (PreviousKeysInUse).
	PreviousInUse []PreviousKeyUse
	// AnnounceExpiring is set when key.expiring is due for Record now and has not been queued for its
	// revision yet: it goes out once per key, with the write that puts Record in place.
	AnnounceExpiring bool
}

// Health is whether the key is usable, in condition terms.
type Health struct {
	Ready   bool
	Reason  keywardv1alpha1.ConditionReason
	Stalled bool
	// Expiry is the key's expiry when the key was judged.
	Expiry time.Time
	detail string
}

// Message is the condition message for the key with ID keyID.
func (h Health) Message(keyID string) string {
	switch h.Reason {
	case keywardv1alpha1.ReasonKeyReady:
		return fmt.Sprintf("Key %s is valid until %s", keyID, h.Expiry.UTC().Format(time.RFC3339))
	case keywardv1alpha1.ReasonDisabled:
		return fmt.Sprintf("Key %s is disabled by spec.disabled; every key of this APIKey is rejected", keyID)
	case keywardv1alpha1.ReasonExpired:
		return fmt.Sprintf("Key %s expired at %s and is not renewed because %s", keyID, h.Expiry.UTC().Format(time.RFC3339), h.detail)
	}
	return h.detail
}

func stalled(reason keywardv1alpha1.ConditionReason, message string) *Health {
	return &Health{Reason: reason, Stalled: true, detail: message}
}

// PlanFor applies the ordered rules: a spec that cannot be resolved stalls; then the mint reasons in order
// (Secret missing, Secret tampered, a withdrawal to complete, a revoked current key, a manual rotate token,
// a due renewal); a mint is judged against the key it is about to mint; then the key is assessed and the
// next instant that matters is found. Nothing else mints a key: restarts and edits of description, scopes,
// rate limit, webhook or secretTemplate never do.
//
// A Secret that cannot be used (a conflict) or written (immutable) stalls, but it never holds up what the
// plan stops accepting: Withheld, which status then shows, refuses every key the plan revokes or rotates
// away without grace, whatever state the Secret is in.
func PlanFor(o Observation) Plan {
	now := o.Now.UTC().Truncate(time.Second)
	if o.Secret == SecretGenuine {
		o.Current.Previous = stillShown(o.Current.Previous, o.Current, o.LastKnown, now)
	}
	served := o.served()
	if o.SpecError == nil {
		o.SpecError = checkTokens(o)
	}
	if o.SpecError != nil {
		return Plan{Health: stalled(keywardv1alpha1.ReasonInvalidSpec, o.SpecError.Error()),
			Withheld: revokedFrom(served, o.Revoke, now), Revoked: revokedIDs(o.Revoke, served.Previous, served)}
	}
	blocked, blockedReason := o.Unwritable, keywardv1alpha1.ReasonSecretUnwritable
	if o.Secret == SecretConflict {
		// Keyward cannot read the record in a Secret it may not use; it plans from what status last showed.
		blocked, blockedReason = o.Conflict, keywardv1alpha1.ReasonSecretConflict
		if o.LastKnown.IsZero() {
			return Plan{Health: stalled(blockedReason, blocked), NextCheck: now.Add(ConflictBackoff(o.ConflictSince, now, o.ConflictRecheck))}
		}
		o.Secret, o.Current = SecretGenuine, o.LastKnown
		if o.LastKnown.Withdrawn() {
			o.Secret, o.Current = SecretSuperseded, keyrecord.Record{}
		}
	}
	hold := o.leakHold(served)
	o.Revoke = o.withLeakRevocations(served, hold)
	p := planKey(o, now)
	if a := o.Approval; a.Waiting() {
		p = waitForApproval(a, p, served, o.Revoke, now)
	}
	if hold && p.Mint != nil {
		// Disable: what the revocations stop, stops (below, as for a Secret that cannot be written); no
		// successor is minted until a new rotate token.
		p, _ = withoutMint(p, served, o.Revoke, now)
		p.Health = stalled(keywardv1alpha1.ReasonKeyLeaked, "A key of this APIKey was reported leaked and leakResponse is Disable: "+
			"every key is stopped, and none is minted until a new value of the "+keywardv1alpha1.RotateAnnotation+
			" annotation asks for one (kubectl keyward rotate)")
	}
	if p.WriteSecret {
		p.Withheld = withhold(served, p)
	} else {
		p.Withheld, p.Revoked = revokedFrom(served, o.Revoke, now), revokedIDs(o.Revoke, served.Previous, served)
	}
	if hold && p.Withheld.Withdrawn() {
		p.Withheld.Reason = keywardv1alpha1.RotationLeaked // so that the next look still holds (leakHold)
	}
	if blocked != "" {
		p.WriteSecret = false
		detail := blockedMessage(blocked, p)
		if o.Spec.Disabled {
			detail += ". spec.disabled rejects every key of this APIKey meanwhile"
		}
		p.Health = stalled(blockedReason, detail)
		if blockedReason == keywardv1alpha1.ReasonSecretConflict {
			p.NextCheck = earliest(p.NextCheck, now.Add(ConflictBackoff(o.ConflictSince, now, o.ConflictRecheck)))
		}
	}
	return p
}

// planKey plans for a Secret that can be used.
func planKey(o Observation, now time.Time) Plan {
	spec := o.Spec
	m := decideMint(o, now)
	judgedAt := o.Current.IssuedAt
	if m != nil {
		judgedAt = now // a spec is judged against the key it is about to mint, when it mints
	}
	err := spec.Validate(judgedAt)
	if m != nil && err == nil && !spec.FixedExpiry.IsZero() && !spec.FixedExpiry.After(now) {
		// A key minted now would be expired at once, and asking again would mint another: a loop.
		err = fmt.Errorf("spec.expiresAt (%s) has passed, so a new key would be expired at once; set a later spec.expiresAt, "+
			"or validity instead of it", spec.FixedExpiry.Format(time.RFC3339))
	}
	if err != nil {
		// Nothing is written: the current key (if any) stays as it is until its own expiry. The calendar or
		// the clock may make the spec valid later, so look again at the next UTC midnight.
		p := Plan{Record: o.Current, Health: stalled(keywardv1alpha1.ReasonInvalidSpec, err.Error()), NextCheck: nextMidnight(now)}
		if o.Secret == SecretGenuine {
			p.Health.Expiry = o.Current.ExpiresAt
			p.NextCheck = earliest(nextCheck(now, time.Time{}, o.Current), p.NextCheck)
		}
		return p
	}
	p := Plan{WriteSecret: true}
	if m != nil {
		p.Mint = m
		p.Record, p.DroppedByCap = mintRecord(o, m, now)
		p.Revoked = revokedIDs(o.Revoke, o.basePrevious(), m.Replaced)
		if m.Reason == keywardv1alpha1.RotationManual && spec.GracePeriod.IsZero() {
			for _, prev := range keyrecord.LivePrevious(o.basePrevious(), now) {
				p.DroppedByZeroGrace = append(p.DroppedByZeroGrace, keys.IDFromHash(prev.Hash))
			}
		}
	} else {
		p.Record = o.Current
		p.Record.Previous, p.Revoked = withoutRevoked(o.Current.Previous, o.Revoke)
		p.Record.ExpiresAt = keyExpiry(spec, o.Current)
	}
	p.RenewalTime = spec.renewalTime(p.Record.IssuedAt, p.Record.ExpiresAt)
	p.Health = assess(now, spec, p.Record)
	p.NextCheck = nextCheck(now, p.RenewalTime, p.Record)
	var next time.Time
	p.PreviousInUse, next = PreviousKeysInUse(p.Record, o.LastUsed, now)
	p.NextCheck = earliest(p.NextCheck, next)
	if !spec.ExpiringBefore.IsZero() && p.RenewalTime.IsZero() {
		p.ExpiringNotice = spec.ExpiringBefore.SubtractFrom(p.Record.ExpiresAt)
		if p.ExpiringNotice.After(now) {
			p.NextCheck = earliest(p.NextCheck, p.ExpiringNotice)
		}
		p.AnnounceExpiring = !now.Before(p.ExpiringNotice) && now.Before(p.Record.ExpiresAt) && o.ExpiringNotified != p.Record.Revision
	}
	return p
}

// leakHold reports whether leakResponse Disable holds the APIKey: a report names a key that served still
// accepts, or served is the withdrawal such a report caused; until a new rotate token asks for a key.
func (o Observation) leakHold(served keyrecord.Record) bool {
	if o.LeakResponse != keywardv1alpha1.LeakResponseDisable || o.RotateToken != served.HandledToken {
		return false
	}
	if served.Withdrawn() && served.Reason == keywardv1alpha1.RotationLeaked {
		return true
	}
	return slices.ContainsFunc(o.Leaks, func(l keywardv1alpha1.LeakReport) bool { return recordAccepts(served, l.KeyID) })
}

// withLeakRevocations is Revoke with what the leak reports stop: the reported keys (Rotate, Disable), and
// during a Disable hold every key served accepts. A key already gone is in no record, so a report of it (repeated or
// replayed) stops nothing.
func (o Observation) withLeakRevocations(served keyrecord.Record, hold bool) []string {
	out := slices.Clip(o.Revoke)
	switch {
	case hold:
		if served.Hash != "" {
			out = append(out, keys.IDFromHash(served.Hash))
		}
		for _, p := range served.Previous {
			out = append(out, keys.IDFromHash(p.Hash))
		}
	case o.LeakResponse != keywardv1alpha1.LeakResponseNotify:
		// Rotate, or Disable once a new rotate token ends the hold: the reported keys stay stopped.
		for _, l := range o.Leaks {
			out = append(out, l.KeyID)
		}
	}
	return out
}

// recordAccepts reports whether r accepts the key keyID: as its current key or a previous one.
func recordAccepts(r keyrecord.Record, keyID string) bool {
	return (r.Hash != "" && keys.IDFromHash(r.Hash) == keyID) ||
		slices.ContainsFunc(r.Previous, func(p keyrecord.PreviousKey) bool { return keys.IDFromHash(p.Hash) == keyID })
}

// withoutMint is p with its mint held back (an approval or a leak hold): the Secret is not written, so
// PlanFor shows served without what revoke stops (revokedFrom, returned), as for a Secret it cannot write;
// no renewal is planned, and the next look is when something in what it shows ends.
func withoutMint(p Plan, served keyrecord.Record, revoke []string, now time.Time) (Plan, keyrecord.Record) {
	p.WriteSecret, p.Mint, p.RenewalTime = false, nil, time.Time{}
	shown := revokedFrom(served, revoke, now)
	p.NextCheck = nextCheck(now, time.Time{}, shown)
	return p, shown
}

// waitForApproval is plan p while the spec waits for an approval: nothing is minted that no approval covers
// (with no earlier approval, the renewal, the recreated Secret and the first key all wait), what p stops
// still stops, and a key in place keeps working. Ready says AwaitingApproval, or ApprovalDenied (stalled,
// until the spec changes) when an approver denied the spec as it is.
func waitForApproval(a Approval, p Plan, served keyrecord.Record, revoke []string, now time.Time) Plan {
	if p.Mint != nil && !a.Granted {
		p, served = withoutMint(p, served, revoke, now)
	} else if p.Health == nil || !p.Health.Ready {
		return p // disabled, expired or invalid says more than the wait
	}
	h := &Health{Reason: keywardv1alpha1.ReasonAwaitingApproval, Expiry: served.ExpiresAt}
	scopes := make([]string, len(a.Scopes))
	for i, sc := range a.Scopes {
		scopes[i] = string(sc)
	}
	var b strings.Builder
	if d := a.Denied; d != nil {
		h.Reason, h.Stalled = keywardv1alpha1.ReasonApprovalDenied, true
		fmt.Fprintf(&b, "%s denied the spec at %s", d.By, d.At.UTC().Format(time.RFC3339))
		if d.Reason != "" {
			fmt.Fprintf(&b, " (%s)", d.Reason)
		}
		b.WriteString("; a change of its scopes, validity, expiresAt or rate limit asks again")
	} else {
		fmt.Fprintf(&b, "Scopes %s need an approval (APIKeyPolicy %s): someone holding the approve verb on apikeys in this namespace "+
			"runs kubectl keyward approve", strings.Join(scopes, ", "), strings.Join(a.Policies, ", "))
		if a.RequestedBy != "" && !a.SelfApproval {
			fmt.Fprintf(&b, " (not %s, who asked for it)", a.RequestedBy)
		}
	}
	switch {
	case served.Withdrawn():
		fmt.Fprintf(&b, ". No key is accepted until then: the last one was withdrawn (%s)", WithdrawnBecause(served.Reason))
	case served.Hash == "":
		b.WriteString(". No key is minted until then")
	case !now.Before(served.ExpiresAt):
		fmt.Fprintf(&b, ". Key %s expired at %s; no key replaces it until then", keys.IDFromHash(served.Hash), served.ExpiresAt.UTC().Format(time.RFC3339))
	case a.Granted:
		fmt.Fprintf(&b, ". Key %s keeps working with what was approved, until %s", keys.IDFromHash(served.Hash), served.ExpiresAt.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(&b, ". Key %s, minted before an approval was required, keeps working until %s; no key replaces it until then",
			keys.IDFromHash(served.Hash), served.ExpiresAt.UTC().Format(time.RFC3339))
	}
	h.detail = b.String()
	p.Health = h
	return p
}

// MaxConflictRecheck is the longest a lasting SecretConflict waits between two looks at the Secret.
const MaxConflictRecheck = 4 * time.Hour

// ConflictBackoff is how long an APIKey in SecretConflict since since waits before it looks at the Secret
// again: first for a new conflict, then as long as the conflict has already lasted (so the wait doubles
// from look to look), at most MaxConflictRecheck. A Secret Keyward does not own is not in its cache, so
// each look costs the API server a read: 20,000 lasting conflicts cost about 1.4 reads a second instead of
// 1,300. Whoever resolves a conflict never waits longer than it had lasted, and an edit of the APIKey (or a
// change of a Secret Keyward can see) looks again at once.
func ConflictBackoff(since, now time.Time, first time.Duration) time.Duration {
	if since.IsZero() || !since.Before(now) {
		return first
	}
	return min(max(now.Sub(since), first), max(first, MaxConflictRecheck))
}

// checkTokens bounds the rotate token Keyward acts on (keyward-apikey-annotations rejects longer ones at
// apply time): a handled token is kept in the record, in the Secret and in status, so it must stay small.
func checkTokens(o Observation) error {
	if n, limit := len(o.RotateToken), keywardv1alpha1.MaxTokenLength; n > limit {
		return fmt.Errorf("the %s annotation has %d characters; at most %d are allowed", keywardv1alpha1.RotateAnnotation, n, limit)
	}
	return nil
}

// served is the record the key's Secret serves as far as Keyward can trust it: the Secret's genuine record
// (as PlanFor narrowed it to what status still shows), or else the last one Keyward signed into status.
func (o Observation) served() keyrecord.Record {
	if o.Secret == SecretGenuine {
		return o.Current
	}
	return o.LastKnown
}

// stillShown drops from prev, the previous keys of the Secret's record cur, the live ones that status no
// longer shows for the same record: a revocation whose Secret write failed stays in force.
func stillShown(prev []keyrecord.PreviousKey, cur, shown keyrecord.Record, now time.Time) []keyrecord.PreviousKey {
	if shown.Revision != cur.Revision || shown.Hash != cur.Hash {
		return prev
	}
	var out []keyrecord.PreviousKey
	for _, p := range prev {
		if !p.ValidUntil.After(now) || acceptsPrevious(shown.Previous, p.Hash) {
			out = append(out, p)
		}
	}
	return out
}

func acceptsPrevious(prev []keyrecord.PreviousKey, hash string) bool {
	return slices.ContainsFunc(prev, func(p keyrecord.PreviousKey) bool { return p.Hash == hash })
}

// withhold is what status shows when the Secret does not take p.Record: served, without what p stops
// accepting. A mint that stops the served key at once (a revocation, a rotation with a zero grace period,
// or the completion of an earlier withdrawal) withdraws it: status records the new revision without a key.
func withhold(served keyrecord.Record, p Plan) keyrecord.Record {
	if served.IsZero() {
		return keyrecord.Record{}
	}
	if m := p.Mint; m != nil && (served.Withdrawn() || !acceptsPrevious(p.Record.Previous, served.Hash)) {
		w := p.Record
		w.Hash, w.IssuedAt, w.ExpiresAt = "", time.Time{}, time.Time{}
		w.Previous = intersect(w.Previous, served.Previous)
		return w
	}
	out := served
	if !p.Record.IsZero() {
		out.Previous = intersect(served.Previous, p.Record.Previous)
		if p.Mint == nil && p.Record.Hash == served.Hash && p.Record.ExpiresAt.Before(served.ExpiresAt) {
			out.ExpiresAt = p.Record.ExpiresAt
		}
	}
	return out
}

// intersect keeps the keys of a that b accepts too, each until the earlier of its two ends.
func intersect(a, b []keyrecord.PreviousKey) []keyrecord.PreviousKey {
	var out []keyrecord.PreviousKey
	for _, p := range a {
		if i := slices.IndexFunc(b, func(q keyrecord.PreviousKey) bool { return q.Hash == p.Hash }); i >= 0 {
			if b[i].ValidUntil.Before(p.ValidUntil) {
				p.ValidUntil = b[i].ValidUntil
			}
			out = append(out, p)
		}
	}
	return out
}

// revokedFrom is r without the keys revoke names, for a plan that cannot mint: a revoked current key is
// withdrawn (the next revision is recorded without a key).
func revokedFrom(r keyrecord.Record, revoke []string, now time.Time) keyrecord.Record {
	if r.IsZero() {
		return r
	}
	r.Previous, _ = withoutRevoked(r.Previous, revoke)
	if r.Hash != "" && slices.Contains(revoke, keys.IDFromHash(r.Hash)) {
		r = keyrecord.Record{Revision: r.Revision + 1, Reason: keywardv1alpha1.RotationRevoked, HandledToken: r.HandledToken,
			Previous: keyrecord.LivePrevious(r.Previous, now)}
	}
	return r
}

// blockedMessage says why the Secret is not written and what that means for the key.
func blockedMessage(why string, p Plan) string {
	w := p.Withheld
	switch {
	case w.Withdrawn():
		return fmt.Sprintf("%s. No key is accepted until a new one is written there: the last one was withdrawn (%s)", why, WithdrawnBecause(w.Reason))
	case w.IsZero():
		return why
	case p.Mint != nil:
		return fmt.Sprintf("%s. Key %s stays the current key until a new one can be written there (due: %s)", why, keys.IDFromHash(w.Hash), p.Mint.Reason)
	}
	return fmt.Sprintf("%s. Key %s stays valid until %s", why, keys.IDFromHash(w.Hash), w.ExpiresAt.UTC().Format(time.RFC3339))
}

// WithdrawnBecause says, for a message, why a key with reason r was withdrawn.
func WithdrawnBecause(r keywardv1alpha1.RotationReason) string {
	switch r {
	case keywardv1alpha1.RotationManual:
		return "rotated with a zero grace period"
	case keywardv1alpha1.RotationLeaked:
		return "reported leaked, with leakResponse Disable"
	}
	return "revoked by " + keywardv1alpha1.RevokeAnnotation
}

// basePrevious is the list of previous keys a mint starts from: the genuine record's, or the last signed
// status record's when the Secret is missing or tampered (a tampered Secret's list is never trusted).
func (o Observation) basePrevious() []keyrecord.PreviousKey {
	if o.Secret == SecretGenuine {
		return o.Current.Previous
	}
	return o.LastKnown.Previous
}

// decideMint is the ordered chain of mint reasons; nil means no new key.
func decideMint(o Observation, now time.Time) *Mint {
	spec := o.Spec
	if o.LastKnown.Withdrawn() && (o.Secret == SecretMissing || o.Secret == SecretSuperseded) {
		// The withdrawal status shows is completed: the new key of its revision, for its reason. Nothing
		// it replaces is accepted any more.
		return &Mint{Reason: o.LastKnown.Reason}
	}
	switch o.Secret {
	case SecretMissing:
		if o.LastKnown.IsZero() {
			return &Mint{Reason: keywardv1alpha1.RotationInitial}
		}
		return &Mint{Reason: keywardv1alpha1.RotationSecretMissing, Replaced: o.LastKnown, ReplacedUntil: graceEnd(spec, now, o.LastKnown.ExpiresAt)}
	case SecretTampered:
		// The Secret no longer shows the key Keyward wrote; the last key Keyward signed into status keeps
		// working for the grace period so that running workloads are not cut off by someone else's edit.
		return &Mint{Reason: keywardv1alpha1.RotationSecretTampered, Replaced: o.LastKnown, ReplacedUntil: graceEnd(spec, now, o.LastKnown.ExpiresAt)}
	}
	cur := o.Current
	expiry := keyExpiry(spec, cur)
	switch {
	case slices.Contains(o.Revoke, keys.IDFromHash(cur.Hash)):
		return &Mint{Reason: keywardv1alpha1.RotationRevoked, Replaced: cur}
	case o.RotateToken != "" && o.RotateToken != cur.HandledToken:
		return &Mint{Reason: keywardv1alpha1.RotationManual, Replaced: cur, ReplacedUntil: graceEnd(spec, now, expiry)}
	}
	if renewal := spec.renewalTime(cur.IssuedAt, expiry); !renewal.IsZero() && !now.Before(renewal) {
		return &Mint{Reason: keywardv1alpha1.RotationExpiring, Replaced: cur, ReplacedUntil: expiry}
	}
	return nil
}

// mintRecord is the record of the key that m mints (without its hash), and the IDs of the oldest previous
// keys it dropped to keep MaxPreviousKeys.
func mintRecord(o Observation, m *Mint, now time.Time) (keyrecord.Record, []string) {
	revision := max(m.Replaced.Revision, o.Current.Revision, o.LastKnown.Revision) + 1
	if o.LastKnown.Withdrawn() && o.Current.Revision < o.LastKnown.Revision {
		// A withdrawal is completed at its own revision, so that retrying it while the Secret stays
		// unwritable changes nothing.
		revision = o.LastKnown.Revision
	}
	r := keyrecord.Record{
		Revision:     revision,
		IssuedAt:     now,
		ExpiresAt:    o.Spec.NewKeyExpiresAt(now),
		Reason:       m.Reason,
		HandledToken: o.RotateToken,
	}
	if r.HandledToken == "" {
		r.HandledToken = m.Replaced.HandledToken
	}
	if r.HandledToken == "" && o.LastKnown.Withdrawn() {
		r.HandledToken = o.LastKnown.HandledToken
	}
	if m.Reason == keywardv1alpha1.RotationManual && o.Spec.GracePeriod.IsZero() {
		// A zero grace period is the procedure for a leaked key: every earlier key stops at once too, since
		// whoever leaked the current one may have had the ones before it.
		return r, nil
	}
	prev, _ := withoutRevoked(o.basePrevious(), o.Revoke)
	if m.Replaced.Hash != "" && !slices.Contains(o.Revoke, keys.IDFromHash(m.Replaced.Hash)) {
		prev = append(slices.Clip(prev), keyrecord.PreviousKey{Hash: m.Replaced.Hash, ValidUntil: m.ReplacedUntil})
	}
	r.Previous = keyrecord.LivePrevious(prev, now)
	var dropped []string
	for len(r.Previous) > MaxPreviousKeys {
		// Oldest first: LivePrevious sorts by the end of validity, and the key that ends soonest is the one
		// its workloads have had longest to leave.
		dropped = append(dropped, keys.IDFromHash(r.Previous[0].Hash))
		r.Previous = r.Previous[1:]
	}
	return r, dropped
}

// withoutRevoked drops the previous keys whose IDs are listed and returns the IDs it dropped.
func withoutRevoked(prev []keyrecord.PreviousKey, revoke []string) ([]keyrecord.PreviousKey, []string) {
	var kept []keyrecord.PreviousKey
	var dropped []string
	for _, p := range prev {
		if id := keys.IDFromHash(p.Hash); slices.Contains(revoke, id) {
			dropped = append(dropped, id)
		} else {
			kept = append(kept, p)
		}
	}
	return kept, dropped
}

// revokedIDs lists the IDs among prev and replaced that revoke names.
func revokedIDs(revoke []string, prev []keyrecord.PreviousKey, replaced keyrecord.Record) []string {
	_, out := withoutRevoked(prev, revoke)
	if id := keys.IDFromHash(replaced.Hash); id != "" && slices.Contains(revoke, id) {
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// keyExpiry is the current key's expiry: what the spec says for its issue time, but never later than the
// expiry recorded for it. A minted key's expiry only ever moves earlier: a shorter validity or an earlier
// expiresAt applies to it at once, a longer one to the next key. So an expired key never becomes valid
// again, and a record that shows a later expiry than the one Keyward last signed into status is tampering
// (keyrecord.Claim.Check), whatever later edits of validity or expiresAt say.
func keyExpiry(spec Spec, r keyrecord.Record) time.Time {
	e := spec.ExpiresAt(r.IssuedAt)
	if !r.ExpiresAt.IsZero() && r.ExpiresAt.Before(e) {
		return r.ExpiresAt
	}
	return e
}

func graceEnd(spec Spec, now, expiry time.Time) time.Time {
	end := spec.GracePeriod.AddTo(now)
	if !expiry.IsZero() && expiry.Before(end) {
		return expiry
	}
	return end
}

// assess says whether the key is usable at now: disabled first, then expired, else ready.
func assess(now time.Time, spec Spec, r keyrecord.Record) *Health {
	switch {
	case spec.Disabled:
		return &Health{Reason: keywardv1alpha1.ReasonDisabled, Expiry: r.ExpiresAt}
	case !now.Before(r.ExpiresAt):
		why := "rotation policy is Disabled; set a new value of the " + keywardv1alpha1.RotateAnnotation + " annotation to mint a new key"
		if !spec.FixedExpiry.IsZero() {
			// A new rotate value alone would mint another key that expires at the same past instant.
			why = "spec.expiresAt is fixed; set a later spec.expiresAt (or validity instead of it), then a new value of the " +
				keywardv1alpha1.RotateAnnotation + " annotation to mint a new key"
		}
		return &Health{Reason: keywardv1alpha1.ReasonExpired, Stalled: true, Expiry: r.ExpiresAt, detail: why}
	}
	return &Health{Ready: true, Reason: keywardv1alpha1.ReasonKeyReady, Expiry: r.ExpiresAt}
}

// nextCheck is the next instant after now at which the plan changes: the renewal time, the expiry, or the
// end of a previous key. Zero means nothing is pending.
func nextCheck(now, renewal time.Time, r keyrecord.Record) time.Time {
	next := time.Time{}
	for _, c := range append([]time.Time{renewal, r.ExpiresAt}, validUntils(r.Previous)...) {
		if c.After(now) {
			next = earliest(next, c)
		}
	}
	return next
}

func validUntils(prev []keyrecord.PreviousKey) []time.Time {
	out := make([]time.Time, len(prev))
	for i, p := range prev {
		out[i] = p.ValidUntil
	}
	return out
}

// earliest is the earlier of two instants, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

func nextMidnight(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

// ParseKeyIDs splits a keyward.dev/revoke annotation into key IDs, ignoring blanks and anything that is not
// a key ID.
func ParseKeyIDs(annotation string) []string {
	var out []string
	for _, f := range strings.Split(annotation, ",") {
		if f = strings.TrimSpace(f); strings.HasPrefix(f, keys.IDPrefix) {
			out = append(out, f)
		}
	}
	return out
}

// Bounds of the notice Keyward gives before a previous key stops: it looks at whether the key is still used
// during the last quarter of its overlap with the key that replaced it, at least MinPreviousKeyNotice and at
// most MaxPreviousKeyNotice, and again every PreviousKeyRecheck meanwhile (verifiers report use every minute
// by default).
const (
	MinPreviousKeyNotice = 5 * time.Minute
	MaxPreviousKeyNotice = 24 * time.Hour
	PreviousKeyRecheck   = 5 * time.Minute
)

// PreviousKeyUse is a previous key that is about to stop and was used recently.
type PreviousKeyUse struct {
	KeyID      string
	ValidUntil time.Time
	LastUsed   time.Time
}

// PreviousKeysInUse lists the previous keys of rec that are within their notice of the end of their grace
// period (a quarter of their overlap with rec's key, between MinPreviousKeyNotice and MaxPreviousKeyNotice)
// and were used within that notice, by lastUsed; and the next instant the answer may change without a
// change to rec: a notice starting, a recheck while one runs, or a key ending. A previous key stops at its
// validUntil whether or not it is used: this is a warning for the people who still use it, not a reprieve.
func PreviousKeysInUse(rec keyrecord.Record, lastUsed map[string]time.Time, now time.Time) (inUse []PreviousKeyUse, next time.Time) {
	for _, p := range rec.Previous {
		if !now.Before(p.ValidUntil) {
			continue
		}
		notice := min(max(p.ValidUntil.Sub(rec.IssuedAt)/4, MinPreviousKeyNotice), MaxPreviousKeyNotice)
		start := p.ValidUntil.Add(-notice)
		if now.Before(start) {
			next = earliest(next, start)
			continue
		}
		next = earliest(next, earliest(now.Add(PreviousKeyRecheck), p.ValidUntil))
		id := keys.IDFromHash(p.Hash)
		if used, ok := lastUsed[id]; ok && !used.Before(now.Add(-notice)) {
			inUse = append(inUse, PreviousKeyUse{KeyID: id, ValidUntil: p.ValidUntil, LastUsed: used})
		}
	}
	return inUse, next
}
