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

// RenewalTime is when an Auto rotation mints the next key, or zero when the key is never renewed.
func (s Spec) RenewalTime(issuedAt time.Time) time.Time {
	if !s.AutoRotate || !s.FixedExpiry.IsZero() {
		return time.Time{}
	}
	expiry := s.ExpiresAt(issuedAt)
	if s.RenewBefore != nil {
		return s.RenewBefore.SubtractFrom(expiry)
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
)

// Observation is everything the plan depends on, as the reconciler found it.
type Observation struct {
	Now time.Time
	// Spec is the resolved spec; SpecError, when set, is why it could not be resolved.
	Spec      Spec
	SpecError error
	Secret    SecretState
	// Conflict says why the Secret cannot be used (SecretConflict).
	Conflict string
	// Current is the Secret's record (SecretGenuine).
	Current keyrecord.Record
	// LastKnown is the last record Keyward signed into status; zero when status holds none Keyward signed.
	LastKnown keyrecord.Record
	// RotateToken is the keyward.dev/rotate annotation, "" when absent.
	RotateToken string
	// Revoke holds the key IDs of the keyward.dev/revoke annotation.
	Revoke []string
	// ConflictRecheck is how long a conflict waits before it is looked at again.
	ConflictRecheck time.Duration
	// ExpiringBefore is spec.webhook.expiringBefore (default 7d) when the APIKey has a webhook; zero without.
	ExpiringBefore period.Period
}

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
	// Health says whether the key is usable; nil when the plan could not judge the key.
	Health *Health
	// RenewalTime is when the next key will be minted; zero when never.
	RenewalTime time.Time
	// NextCheck is the next instant the plan changes by itself; zero when nothing is pending.
	NextCheck time.Time
	// ExpiringNotice is when key.expiring is due for the current key: ExpiringBefore before an expiry that no
	// renewal will prevent. Zero without a webhook, or when a renewal replaces the key first.
	ExpiringNotice time.Time
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
		return fmt.Sprintf("Key %s expired at %s and is not renewed because %s; set the %s annotation to mint a new key",
			keyID, h.Expiry.UTC().Format(time.RFC3339), h.detail, keywardv1alpha1.RotateAnnotation)
	}
	return h.detail
}

func stalled(reason keywardv1alpha1.ConditionReason, message string) *Health {
	return &Health{Reason: reason, Stalled: true, detail: message}
}

// Plan applies the ordered rules: a spec that cannot be resolved or a Secret that cannot be used stalls;
// then the mint reasons in order (Secret missing, Secret tampered, a revoked current key, a manual rotate
// token, a due renewal); a mint is judged against the key it is about to mint; then the key is assessed and
// the next instant that matters is found. Nothing else mints a key: restarts and edits of description,
// scopes, rate limit, webhook or secretTemplate never do.
func PlanFor(o Observation) Plan {
	now := o.Now.UTC().Truncate(time.Second)
	if o.SpecError != nil {
		return Plan{Health: stalled(keywardv1alpha1.ReasonInvalidSpec, o.SpecError.Error())}
	}
	if o.Secret == SecretConflict {
		return Plan{Health: stalled(keywardv1alpha1.ReasonSecretConflict, o.Conflict), NextCheck: now.Add(o.ConflictRecheck)}
	}
	spec := o.Spec
	m := decideMint(o, now)
	judgedAt := o.Current.IssuedAt
	if m != nil {
		judgedAt = now // a spec is judged against the key it is about to mint, when it mints
	}
	if err := spec.Validate(judgedAt); err != nil {
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
		p.Record = mintRecord(o, m, now)
		p.Revoked = revokedIDs(o.Revoke, o.basePrevious(), m.Replaced)
		if m.Reason == keywardv1alpha1.RotationManual && spec.GracePeriod.IsZero() {
			for _, prev := range keyrecord.LivePrevious(o.basePrevious(), now) {
				p.DroppedByZeroGrace = append(p.DroppedByZeroGrace, keys.IDFromHash(prev.Hash))
			}
		}
	} else {
		p.Record = o.Current
		p.Record.Previous, p.Revoked = withoutRevoked(o.Current.Previous, o.Revoke)
		p.Record.ExpiresAt = keyExpiry(spec, o.Current, now)
	}
	p.RenewalTime = spec.RenewalTime(p.Record.IssuedAt)
	p.Health = assess(now, spec, p.Record)
	p.NextCheck = nextCheck(now, p.RenewalTime, p.Record)
	if !o.ExpiringBefore.IsZero() && p.RenewalTime.IsZero() {
		p.ExpiringNotice = o.ExpiringBefore.SubtractFrom(p.Record.ExpiresAt)
		if p.ExpiringNotice.After(now) {
			p.NextCheck = earliest(p.NextCheck, p.ExpiringNotice)
		}
	}
	return p
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
	expiry := keyExpiry(spec, cur, now)
	switch {
	case slices.Contains(o.Revoke, keys.IDFromHash(cur.Hash)):
		return &Mint{Reason: keywardv1alpha1.RotationRevoked, Replaced: cur}
	case o.RotateToken != "" && o.RotateToken != cur.HandledToken:
		return &Mint{Reason: keywardv1alpha1.RotationManual, Replaced: cur, ReplacedUntil: graceEnd(spec, now, expiry)}
	}
	if renewal := spec.RenewalTime(cur.IssuedAt); !renewal.IsZero() && !now.Before(renewal) {
		return &Mint{Reason: keywardv1alpha1.RotationExpiring, Replaced: cur, ReplacedUntil: expiry}
	}
	return nil
}

// mintRecord is the record of the key that m mints (without its hash).
func mintRecord(o Observation, m *Mint, now time.Time) keyrecord.Record {
	r := keyrecord.Record{
		Revision:     max(m.Replaced.Revision, o.Current.Revision, o.LastKnown.Revision) + 1,
		IssuedAt:     now,
		ExpiresAt:    o.Spec.ExpiresAt(now),
		Reason:       m.Reason,
		HandledToken: o.RotateToken,
	}
	if r.HandledToken == "" {
		r.HandledToken = m.Replaced.HandledToken
	}
	if m.Reason == keywardv1alpha1.RotationManual && o.Spec.GracePeriod.IsZero() {
		// A zero grace period is the procedure for a leaked key: every earlier key stops at once too, since
		// whoever leaked the current one may have had the ones before it.
		return r
	}
	prev, _ := withoutRevoked(o.basePrevious(), o.Revoke)
	if m.Replaced.Hash != "" && !slices.Contains(o.Revoke, keys.IDFromHash(m.Replaced.Hash)) {
		prev = append(slices.Clip(prev), keyrecord.PreviousKey{Hash: m.Replaced.Hash, ValidUntil: m.ReplacedUntil})
	}
	r.Previous = keyrecord.LivePrevious(prev, now)
	return r
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

// keyExpiry is the current key's expiry at now: what the spec says for its issue time, unless the expiry
// recorded for it has already passed. An expired key never becomes valid again without a new key, whatever
// later edits of validity or expiresAt say.
func keyExpiry(spec Spec, r keyrecord.Record, now time.Time) time.Time {
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return r.ExpiresAt
	}
	return spec.ExpiresAt(r.IssuedAt)
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
		why := "rotation policy is Disabled"
		if !spec.FixedExpiry.IsZero() {
			why = "spec.expiresAt is fixed"
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
