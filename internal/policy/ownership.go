package policy

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/textguard"
)

// SecretClaim is what decides whose a Secret is: the APIKey that wants it and the Secret's label and
// controller reference.
type SecretClaim struct {
	// APIKey and UID name the APIKey that wants the Secret; Adopt is its adopt-orphaned-secret annotation.
	APIKey, UID string
	Adopt       bool
	// Secret is the Secret's name, Label its keyward.dev/apikey label ("" when absent), Controller its
	// controller reference (nil when none).
	Secret     string
	Label      string
	Controller *metav1.OwnerReference
}

// Ownership is the verdict on a SecretClaim.
type Ownership int

// The verdicts, from the APIKey's point of view.
const (
	// Ours: the Secret carries the APIKey's label and its controller reference (by UID), or the label and no
	// controller with the adopt annotation on the APIKey.
	Ours Ownership = iota
	// OursUnlabelled: the APIKey controls the Secret but someone removed its label, which hides it from the
	// manager's cache. Keyward labels it again.
	OursUnlabelled
	// Foreign: no Keyward label and not controlled by this APIKey: someone else's Secret, never written.
	Foreign
	// OtherAPIKey: the label names another APIKey.
	OtherAPIKey
	// Orphaned: the label but no controller, without the adopt annotation.
	Orphaned
	// EarlierAPIKey: controlled by a deleted APIKey of the same name (another UID).
	EarlierAPIKey
	// OtherController: controlled by something else.
	OtherController
)

// JudgeSecret says whose the Secret is, and, unless it is the APIKey's, why the APIKey may not use it. The
// rule: a Secret is an APIKey's when it carries the APIKey's label and either its controller reference, by
// UID (so a Secret left behind by an earlier APIKey of the same name is not), or, with the adopt annotation,
// no controller at all. The label is what the manager's cache selects on, so a Secret the APIKey controls but
// whose label was removed is its own too, to be labelled again.
func JudgeSecret(c SecretClaim) (Ownership, string) {
	ref := c.Controller
	if c.Label == "" {
		if ref != nil && ref.UID != "" && string(ref.UID) == c.UID {
			return OursUnlabelled, ""
		}
		return Foreign, fmt.Sprintf("Secret %s exists and Keyward does not own it (it has no %s label); Keyward never overwrites it. "+
			"Delete or rename that Secret, or create an APIKey with another spec.secretName", c.Secret, keywardv1alpha1.APIKeyNameLabel)
	}
	if c.Label != c.APIKey {
		return OtherAPIKey, fmt.Sprintf("Secret %s belongs to APIKey %s; two APIKeys cannot share a Secret, "+
			"so this one waits until that APIKey is gone", c.Secret, c.Label)
	}
	switch {
	case ref == nil && c.Adopt:
		return Ours, ""
	case ref == nil:
		return Orphaned, fmt.Sprintf("Secret %s has Keyward's label but no controller: it outlived an earlier APIKey and may hold a key "+
			"that was meant to end with it. Delete it to get a new key, or set the annotation %s=true on this APIKey to adopt it and keep its key",
			c.Secret, keywardv1alpha1.AdoptOrphanAnnotation)
	case string(ref.UID) == c.UID:
		return Ours, ""
	case ref.Kind == "APIKey" && ref.Name == c.APIKey:
		return EarlierAPIKey, fmt.Sprintf("Secret %s belongs to an earlier APIKey %s (uid %s) that was deleted; Keyward does not adopt it, "+
			"so its key is not brought back. Garbage collection removes it, after which a new key is minted; delete it to go faster",
			c.Secret, ref.Name, textguard.Quote(string(ref.UID)))
	}
	// The owner reference is whatever the Secret's writer put there: quoted, so that it cannot forge a line
	// or drive the terminal of whoever reads the condition or the event.
	return OtherController, fmt.Sprintf("Secret %s is controlled by %s %s, not by this APIKey", c.Secret,
		textguard.Quote(ref.Kind), textguard.Quote(ref.Name))
}
