package policy

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

func TestTransitionsClassifyAStatusWriteOnce(t *testing.T) {
	until := metav1.NewTime(time.Date(2026, 11, 24, 11, 0, 0, 0, time.UTC))
	first := keywardv1alpha1.APIKeyStatus{KeyID: "kid_a", KeyHash: "sha256:a", Revision: 1, LastRotationReason: keywardv1alpha1.RotationInitial}
	rotated := keywardv1alpha1.APIKeyStatus{KeyID: "kid_b", KeyHash: "sha256:b", Revision: 2, LastRotationReason: keywardv1alpha1.RotationManual,
		PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_a", KeyHash: "sha256:a", ValidUntil: until}}}
	tampered := rotated
	tampered.LastRotationReason, tampered.PreviousKeys = keywardv1alpha1.RotationSecretTampered, nil
	ready, disabled := keywardv1alpha1.ReasonKeyReady, keywardv1alpha1.ReasonDisabled
	unwritable := keywardv1alpha1.ReasonSecretUnwritable
	withdrawn := keywardv1alpha1.APIKeyStatus{Revision: 2, LastRotationReason: keywardv1alpha1.RotationRevoked}
	completed := keywardv1alpha1.APIKeyStatus{KeyID: "kid_b", KeyHash: "sha256:b", Revision: 2, LastRotationReason: keywardv1alpha1.RotationRevoked}
	cases := []struct {
		name string
		c    Change
		want []Transition
	}{
		{"the first key", Change{After: first, AfterReady: ready}, []Transition{{Kind: TransitionKeyCreated, Reason: keywardv1alpha1.RotationInitial}}},
		{"a key found after a crash counts as minted", Change{Before: keywardv1alpha1.APIKeyStatus{}, After: first, BeforeReady: "", AfterReady: ready},
			[]Transition{{Kind: TransitionKeyCreated, Reason: keywardv1alpha1.RotationInitial}}},
		{"a rotation names the previous key and until when it works", Change{Before: first, After: rotated, BeforeReady: ready, AfterReady: ready},
			[]Transition{{Kind: TransitionKeyRotated, Reason: keywardv1alpha1.RotationManual, PreviousKeyID: "kid_a", PreviousValidUntil: &until}}},
		{"a replaced key that no longer works", Change{Before: first, After: tampered, BeforeReady: ready, AfterReady: ready},
			[]Transition{{Kind: TransitionSecretTampered, Reason: keywardv1alpha1.RotationSecretTampered, PreviousKeyID: "kid_a"}}},
		{"putting back a forged status mints nothing", Change{Before: keywardv1alpha1.APIKeyStatus{KeyHash: "sha256:f"}, After: first, Restored: true,
			BeforeReady: ready, AfterReady: ready}, nil},
		{"revoking previous keys", Change{Before: rotated, After: rotated, Revoked: []string{"kid_a"}, BeforeReady: ready, AfterReady: ready},
			[]Transition{{Kind: TransitionPreviousKeysRevoked, Revoked: []string{"kid_a"}}}},
		{"disabling, then expiring", Change{Before: first, After: first, BeforeReady: ready, AfterReady: disabled, Expiring: true},
			[]Transition{{Kind: TransitionKeyDisabled}, {Kind: TransitionKeyExpiring}}},
		{"enabling", Change{Before: first, After: first, BeforeReady: disabled, AfterReady: ready}, []Transition{{Kind: TransitionKeyEnabled}}},
		{"a Secret conflict", Change{Before: first, After: first, BeforeReady: ready, AfterReady: keywardv1alpha1.ReasonSecretConflict},
			[]Transition{{Kind: TransitionSecretConflict}}},
		{"an invalid spec", Change{BeforeReady: "", AfterReady: keywardv1alpha1.ReasonInvalidSpec}, []Transition{{Kind: TransitionInvalidSpec}}},
		{"withdrawing the current key because the Secret cannot take its successor",
			Change{Before: first, After: withdrawn, Revoked: []string{"kid_a"}, BeforeReady: ready, AfterReady: unwritable},
			[]Transition{{Kind: TransitionKeyWithdrawn, Reason: keywardv1alpha1.RotationRevoked, PreviousKeyID: "kid_a", Revoked: []string{"kid_a"}},
				{Kind: TransitionSecretUnwritable}}},
		{"the successor of a withdrawn key, at the withdrawal's revision", Change{Before: withdrawn, After: completed, BeforeReady: unwritable, AfterReady: ready},
			[]Transition{{Kind: TransitionWithdrawalCompleted, Reason: keywardv1alpha1.RotationRevoked}}},
		{"a withdrawal retried while the Secret stays stuck", Change{Before: withdrawn, After: withdrawn, BeforeReady: unwritable, AfterReady: unwritable}, nil},
		{"an idle reconcile", Change{Before: first, After: first, BeforeReady: ready, AfterReady: ready}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Transitions(tc.c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Transitions = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestAPreviousKeyNewlyInUseIsATransitionOnceWithItsEndAndLastUse(t *testing.T) {
	until, used := metav1.NewTime(time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)), metav1.NewTime(time.Date(2026, 12, 3, 10, 50, 0, 0, time.UTC))
	after := keywardv1alpha1.APIKeyStatus{KeyID: "kid_new", PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_old", ValidUntil: until}},
		PreviousKeysInUse: []string{"kid_old"},
		Usage:             &keywardv1alpha1.UsageStatus{Keys: []keywardv1alpha1.KeyUsage{{KeyID: "kid_old", LastUsedAt: &used}}}}
	before := *after.DeepCopy()
	before.PreviousKeysInUse = nil
	ts := Transitions(Change{Before: before, After: after})
	if len(ts) != 1 || ts[0].Kind != TransitionPreviousKeyInUse || ts[0].PreviousKeyID != "kid_old" ||
		!ts[0].PreviousValidUntil.Equal(&until) || !ts[0].PreviousLastUsedAt.Equal(&used) {
		t.Fatalf("transitions %+v", ts)
	}
	if again := Transitions(Change{Before: after, After: after}); len(again) != 0 {
		t.Errorf("a key still in use is announced again: %+v", again)
	}
}
