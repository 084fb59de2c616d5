// Package policy decides, without touching the cluster, whether an APIKey needs a new key and why, whether
// its key is usable, and when to look at it again. The reconciler feeds it what it observed and acts on the
// answer; every rule of the key lifecycle lives here, where table tests with a fixed clock can reach it.
package policy

import (
	"fmt"
	"slices"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/period"
)

// Reason says why a key was minted. The values are recorded in status.lastRotationReason.
type Reason string

// Why a key is minted.
const (
	ReasonInitial        Reason = "Initial"
	ReasonExpiring       Reason = "Expiring"
	ReasonManual         Reason = "Manual"
	ReasonSecretMissing  Reason = "SecretMissing"
	ReasonSecretTampered Reason = "SecretTampered"
)

// Defaults for optional spec fields.
var (
	DefaultValidity    = period.MustParse("90d")
	DefaultGracePeriod = period.MustParse("1h")
)

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
		out.FixedExpiry = s.ExpiresAt.Time
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

// PreviousKey is a replaced key that is still accepted until ValidUntil.
type PreviousKey struct {
	Hash       string
	ValidUntil time.Time
}

// Key is what Keyward recorded about a key when it minted it (in the Secret's annotations, mirrored in
// status). The key itself is not part of it.
type Key struct {
	Hash     string
	Revision int64
	IssuedAt time.Time
	Reason   Reason
	// HandledToken is the keyward.dev/rotate value that had been answered when this key was minted.
	HandledToken string
	Previous     []PreviousKey
}

// ExpiresAt is when the key stops being valid: the fixed expiry, or the issue time plus the validity. It
// follows the spec, so an edit of validity or expiresAt moves the current key's expiry without a new key.
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

// Validate reports what CEL could not judge: a renewBefore that, with calendar months and years, reaches
// back to or before the issue time would rotate in a loop.
func (s Spec) Validate(issuedAt time.Time) error {
	if renewal := s.RenewalTime(issuedAt); !renewal.IsZero() && !renewal.After(issuedAt) {
		return fmt.Errorf("spec.rotation.renewBefore (%s) is not shorter than spec.validity (%s) for a key issued at %s",
			s.RenewBefore, s.Validity, issuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// SecretState is what the reconciler found in the Secret that should hold the key.
type SecretState int

// The states of the key's Secret (a Secret that Keyward does not own never reaches the policy).
const (
	SecretMissing SecretState = iota
	// SecretTampered: the Secret is Keyward's but its key is gone, malformed or not the one recorded.
	SecretTampered
	// SecretValid: the Secret holds the key its annotations describe.
	SecretValid
)

// Input is everything the mint decision depends on.
type Input struct {
	Now  time.Time
	Spec Spec
	// Secret is the state of the Secret; Current is its key when SecretValid.
	Secret  SecretState
	Current Key
	// LastKnown is the last key Keyward recorded before the Secret went missing or was tampered with (from
	// status), zero for a new APIKey.
	LastKnown Key
	// LastKnownExpiry is when LastKnown expires.
	LastKnownExpiry time.Time
	// RotateToken is the value of the keyward.dev/rotate annotation, "" when absent.
	RotateToken string
}

// Decision says whether to mint and, if so, why and what becomes of the replaced key.
type Decision struct {
	Mint   bool
	Reason Reason
	// Next is the record of the key to mint (Hash left for the caller, who knows the key): revision, issue
	// time, handled rotate token, and the previous keys that stay valid, the replaced one included.
	Next Key
}

// Decide applies the ordered chain of mint reasons: a missing Secret, a tampered Secret, a manual rotate
// token, then an Auto renewal that is due. Nothing else mints a key: restarts and edits of description,
// scopes, rate limit, webhook or secretTemplate never do.
func Decide(in Input) Decision {
	now := in.Now.Truncate(time.Second)
	switch in.Secret {
	case SecretMissing:
		if in.LastKnown.Revision == 0 {
			return in.mint(ReasonInitial, Key{}, time.Time{}, now)
		}
		return in.mint(ReasonSecretMissing, in.LastKnown, in.graceEnd(now, in.LastKnownExpiry), now)
	case SecretTampered:
		// The Secret no longer shows the key; the last key Keyward recorded keeps working for the grace
		// period so that running workloads are not cut off by someone else's edit.
		return in.mint(ReasonSecretTampered, in.LastKnown, in.graceEnd(now, in.LastKnownExpiry), now)
	}
	expiry := in.Spec.ExpiresAt(in.Current.IssuedAt)
	if in.RotateToken != "" && in.RotateToken != in.Current.HandledToken {
		return in.mint(ReasonManual, in.Current, in.graceEnd(now, expiry), now)
	}
	if renewal := in.Spec.RenewalTime(in.Current.IssuedAt); !renewal.IsZero() && !now.Before(renewal) {
		return in.mint(ReasonExpiring, in.Current, expiry, now)
	}
	return Decision{}
}

func (in Input) graceEnd(now, expiry time.Time) time.Time {
	end := in.Spec.GracePeriod.AddTo(now)
	if !expiry.IsZero() && expiry.Before(end) {
		return expiry
	}
	return end
}

// mint builds the decision to replace `replaced` (zero for the first key), which stays valid until
// replacedUntil.
func (in Input) mint(reason Reason, replaced Key, replacedUntil, now time.Time) Decision {
	next := Key{
		Revision:     max(replaced.Revision, in.Current.Revision, in.LastKnown.Revision) + 1,
		IssuedAt:     now,
		Reason:       reason,
		HandledToken: in.RotateToken,
	}
	if next.HandledToken == "" {
		next.HandledToken = replaced.HandledToken
	}
	next.Previous = LivePrevious(replaced.Previous, now)
	if replaced.Hash != "" && replacedUntil.After(now) {
		next.Previous = append(next.Previous, PreviousKey{Hash: replaced.Hash, ValidUntil: replacedUntil})
	}
	return Decision{Mint: true, Reason: reason, Next: next}
}

// LivePrevious returns the previous keys still valid at now, oldest expiry first.
func LivePrevious(prev []PreviousKey, now time.Time) []PreviousKey {
	var live []PreviousKey
	for _, p := range prev {
		if p.ValidUntil.After(now) {
			live = append(live, p)
		}
	}
	slices.SortStableFunc(live, func(a, b PreviousKey) int { return a.ValidUntil.Compare(b.ValidUntil) })
	return live
}

// Health is whether the current key is usable, in condition terms.
type Health struct {
	Ready bool
	// Reason is a keywardv1alpha1 condition reason.
	Reason  string
	Message string
	// Stalled is true when only a person can make the APIKey Ready again.
	Stalled bool
}

// Assess says whether the key is usable at now: disabled first, then expired, else ready.
func Assess(now time.Time, spec Spec, key Key, keyID string) Health {
	expiry := spec.ExpiresAt(key.IssuedAt)
	switch {
	case spec.Disabled:
		return Health{Reason: keywardv1alpha1.ReasonDisabled,
			Message: fmt.Sprintf("Key %s is disabled by spec.disabled; every key of this APIKey is rejected", keyID)}
	case !now.Before(expiry):
		why := "rotation policy is Disabled"
		if !spec.FixedExpiry.IsZero() {
			why = "spec.expiresAt is fixed"
		}
		return Health{Reason: keywardv1alpha1.ReasonExpired, Stalled: true,
			Message: fmt.Sprintf("Key %s expired at %s and is not renewed because %s; set the %s annotation to mint a new key",
				keyID, expiry.UTC().Format(time.RFC3339), why, keywardv1alpha1.RotateAnnotation)}
	}
	return Health{Ready: true, Reason: keywardv1alpha1.ReasonKeyReady,
		Message: fmt.Sprintf("Key %s is valid until %s", keyID, expiry.UTC().Format(time.RFC3339))}
}

// NextCheck is the next instant after now at which the answer of Decide, Assess or the list of previous
// keys changes: the renewal time, the expiry, or the end of a previous key. Zero means nothing is pending.
func NextCheck(now time.Time, spec Spec, key Key) time.Time {
	candidates := []time.Time{spec.RenewalTime(key.IssuedAt), spec.ExpiresAt(key.IssuedAt)}
	for _, p := range key.Previous {
		candidates = append(candidates, p.ValidUntil)
	}
	var next time.Time
	for _, c := range candidates {
		if c.After(now) && (next.IsZero() || c.Before(next)) {
			next = c
		}
	}
	return next
}
