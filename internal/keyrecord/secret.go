package keyrecord

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
)

// Data keys of the Secret. key-id and expires-at are derived for workloads; Keyward rewrites them when they
// are edited, without a new key.
const (
	DataAPIKey    = "api-key"
	DataKeyID     = "key-id"
	DataExpiresAt = "expires-at"
)

// Annotations Keyward keeps on the Secret. The record annotations and the signature over them are the
// record; the template annotations remember which template keys Keyward put there.
const (
	// AnnotationKeyHash is the sha256:<hex> hash of the key in data.api-key (part of the signed record).
	AnnotationKeyHash = "keyward.dev/key-hash"
	// AnnotationRevision counts the keys minted for the APIKey, 1 for the first (part of the signed record).
	AnnotationRevision = "keyward.dev/revision"
	// AnnotationIssuedAt is when the key was minted, RFC 3339 (part of the signed record).
	AnnotationIssuedAt = "keyward.dev/issued-at"
	// AnnotationExpiresAt is when the key expires, RFC 3339; it only ever moves earlier (part of the signed record).
	AnnotationExpiresAt = "keyward.dev/expires-at"
	// AnnotationReason is why the key was minted: Initial, Expiring, Manual, Revoked, SecretMissing or
	// SecretTampered (part of the signed record).
	AnnotationReason = "keyward.dev/rotation-reason"
	// AnnotationRotateToken is the keyward.dev/rotate value the key answered (part of the signed record).
	AnnotationRotateToken = "keyward.dev/rotate-token"
	// AnnotationPreviousKeys is the JSON list of earlier keys still accepted, each a hash and the end of its
	// grace period (part of the signed record).
	AnnotationPreviousKeys = "keyward.dev/previous-keys"
	// AnnotationSignature is the HMAC-SHA256 signature over the record, the namespace, the APIKey's name and
	// UID and the Secret's name, under the manager's signing key.
	AnnotationSignature = "keyward.dev/record-signature"
	// AnnotationAPIKeyUID is the UID of the APIKey the record was signed for. Only the adoption of an orphaned
	// Secret reads it: the signature, not this annotation, is what binds a record to its APIKey.
	AnnotationAPIKeyUID = "keyward.dev/apikey-uid"
	// AnnotationTemplateLabels lists the label keys spec.secretTemplate put on the Secret, so that Keyward
	// removes those it put there, and only those, when the template drops them.
	AnnotationTemplateLabels = "keyward.dev/template-labels"
	// AnnotationTemplateAnnots lists the annotation keys spec.secretTemplate put on the Secret, for the same
	// reason.
	AnnotationTemplateAnnots = "keyward.dev/template-annotations"
)

// SecretOwner says which APIKey a Secret belongs to by its label, or "" when it carries no Keyward label.
func SecretOwner(s *corev1.Secret) string { return s.Labels[keywardv1alpha1.APIKeyNameLabel] }

// Claim is what a Secret says about its key: the key, the record beside it and the record's signature, read
// leniently (a field that does not parse is left zero, which then fails the signature).
type Claim struct {
	Key       string
	Record    Record
	Signature string
	// SignedFor is the UID of the APIKey the Secret says the record was signed for (AnnotationAPIKeyUID).
	SignedFor string
}

// ReadSecret returns what s claims.
func ReadSecret(s *corev1.Secret) Claim {
	a := s.Annotations
	c := Claim{Key: string(s.Data[DataAPIKey]), Signature: a[AnnotationSignature], SignedFor: a[AnnotationAPIKeyUID]}
	c.Record.Hash = a[AnnotationKeyHash]
	c.Record.Revision, _ = strconv.ParseInt(a[AnnotationRevision], 10, 64)
	c.Record.IssuedAt = parseTime(a[AnnotationIssuedAt])
	c.Record.ExpiresAt = parseTime(a[AnnotationExpiresAt])
	c.Record.Reason = keywardv1alpha1.RotationReason(a[AnnotationReason])
	c.Record.HandledToken = a[AnnotationRotateToken]
	if raw := a[AnnotationPreviousKeys]; raw != "" {
		var prev []previousKey
		if json.Unmarshal([]byte(raw), &prev) != nil {
			// Unparsable: no previous key is claimed, and the signature (made over the real list) fails.
			c.Record.Previous = []PreviousKey{{Hash: "unparsable"}}
		}
		for _, p := range prev {
			c.Record.Previous = append(c.Record.Previous, PreviousKey{Hash: p.KeyHash, ValidUntil: p.ValidUntil.UTC()})
		}
	}
	return c
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// ErrSuperseded says that a Secret holds a genuine record older than the withdrawal status records (see
// Record.Withdrawn): the Secret could not be written when its key was withdrawn, and its key stays refused.
var ErrSuperseded = errors.New("the Secret holds a key that was withdrawn")

// Check returns nil when the claim is genuine: the key is well-formed and is the one the record hashes, the
// signature verifies for sub, and the record is not older than lastGenuine (the last record Keyward is sure
// it wrote, zero when none). It returns ErrSuperseded for a genuine claim older than a lastGenuine that is a withdrawal.
// Otherwise it returns a *TamperedError naming what differs, comparing with lastGenuine where the signature
// alone cannot say; previous keys are compared as they stand at now.
func (c Claim) Check(signer *Signer, sub Subject, lastGenuine Record, now time.Time) error {
	var changed []string
	if _, err := keys.Parse(c.Key); err != nil || keys.Hash(c.Key) != c.Record.Hash {
		changed = append(changed, "data "+DataAPIKey)
	}
	signed := signer.Verify(sub, c.Record, c.Signature)
	switch {
	case len(changed) == 0 && lastGenuine.Withdrawn() && c.Record.Revision < lastGenuine.Revision && signed:
		// Whatever older record the Secret holds, even one put back, its key is not accepted: the
		// withdrawal is what status shows, and the new key replaces it as soon as the Secret can be written.
		return ErrSuperseded
	case lastGenuine.Withdrawn() && c.Record.Revision >= lastGenuine.Revision && signed:
		// Written after the withdrawal, by a reconcile that crashed before its status write.
	case !signed:
		claimed, genuine := c.Record, lastGenuine
		claimed.Previous, genuine.Previous = LivePrevious(claimed.Previous, now), LivePrevious(genuine.Previous, now)
		named := []string{}
		if !lastGenuine.IsZero() {
			named = Changed(claimed, genuine, SecretFields)
		}
		if len(named) == 0 {
			named = []string{AnnotationSignature}
		}
		changed = append(changed, named...)
	case !lastGenuine.IsZero() && (c.Record.Revision < lastGenuine.Revision ||
		(c.Record.Revision == lastGenuine.Revision && c.Record.Hash != lastGenuine.Hash)):
		// A genuine but older record put back (a replay): it would revive a key Keyward replaced.
		changed = append(changed, AnnotationRevision+" (an older record, revision "+strconv.FormatInt(c.Record.Revision, 10)+
			", was put back over revision "+strconv.FormatInt(lastGenuine.Revision, 10)+")")
	case !lastGenuine.IsZero() && c.Record.Revision == lastGenuine.Revision && c.Record.ExpiresAt.After(lastGenuine.ExpiresAt):
		// A genuine record of the same key put back with the later expiry it once had: a key's expiry only
		// ever moves earlier, so this would revive a key that was shortened or has expired.
		changed = append(changed, AnnotationExpiresAt+" (a later expiry, "+formatTime(c.Record.ExpiresAt)+
			", was put back over "+formatTime(lastGenuine.ExpiresAt)+")")
	}
	if len(changed) > 0 {
		return &TamperedError{Changed: slices.Compact(changed)}
	}
	return nil
}

type previousKey struct {
	KeyHash    string      `json:"keyHash"`
	ValidUntil metav1.Time `json:"validUntil"`
}

// Contents is everything Keyward puts into the Secret of one APIKey.
type Contents struct {
	// APIKeyName labels the Secret.
	APIKeyName string
	Template   *keywardv1alpha1.SecretTemplate
	Key        string
	Record     Record
}

// WriteSecret writes c into s (a new Secret or a copy of the existing one), signing the record for sub, and
// leaves whatever else others put there alone, except template labels and annotations that the template no
// longer lists.
func WriteSecret(s *corev1.Secret, c Contents, signer *Signer, sub Subject) {
	s.Type = corev1.SecretTypeOpaque
	s.Labels = nonNil(s.Labels)
	s.Annotations = nonNil(s.Annotations)

	var tmpl keywardv1alpha1.SecretTemplate
	if c.Template != nil {
		tmpl = *c.Template
	}
	applyTemplate(s.Labels, s.Annotations, AnnotationTemplateLabels, tmpl.Labels)
	applyTemplate(s.Annotations, s.Annotations, AnnotationTemplateAnnots, tmpl.Annotations)

	s.Labels[keywardv1alpha1.APIKeyNameLabel] = c.APIKeyName
	s.Labels[keywardv1alpha1.ManagedByLabel] = keywardv1alpha1.ManagedByValue

	r := c.Record
	s.Annotations[AnnotationKeyHash] = r.Hash
	s.Annotations[AnnotationRevision] = strconv.FormatInt(r.Revision, 10)
	s.Annotations[AnnotationIssuedAt] = formatTime(r.IssuedAt)
	setOrDelete(s.Annotations, AnnotationExpiresAt, formatTime(r.ExpiresAt))
	s.Annotations[AnnotationReason] = string(r.Reason)
	setOrDelete(s.Annotations, AnnotationRotateToken, r.HandledToken)
	prev := make([]previousKey, 0, len(r.Previous))
	for _, p := range r.Previous {
		prev = append(prev, previousKey{KeyHash: p.Hash, ValidUntil: metav1.NewTime(p.ValidUntil.UTC())})
	}
	raw := ""
	if len(prev) > 0 {
		b, _ := json.Marshal(prev) // cannot fail: strings and times
		raw = string(b)
	}
	setOrDelete(s.Annotations, AnnotationPreviousKeys, raw)
	s.Annotations[AnnotationSignature] = signer.Sign(sub, r)
	setOrDelete(s.Annotations, AnnotationAPIKeyUID, sub.UID)

	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[DataAPIKey] = []byte(c.Key)
	s.Data[DataKeyID] = []byte(keys.IDFromHash(r.Hash))
	s.Data[DataExpiresAt] = []byte(formatTime(r.ExpiresAt))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// applyTemplate sets the template's entries in dst, removes entries an earlier template set that this one
// no longer has, and records the keys it owns under recordKey in annotations.
func applyTemplate(dst, annotations map[string]string, recordKey string, template map[string]string) {
	for _, k := range strings.Split(annotations[recordKey], ",") {
		if _, still := template[k]; k != "" && !still {
			delete(dst, k)
		}
	}
	maps.Copy(dst, template)
	owned := slices.Sorted(maps.Keys(template))
	setOrDelete(annotations, recordKey, strings.Join(owned, ","))
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func setOrDelete(m map[string]string, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}

// recordAnnotations are the annotations Keyward writes on a Secret.
var recordAnnotations = []string{AnnotationKeyHash, AnnotationRevision, AnnotationIssuedAt, AnnotationExpiresAt, AnnotationReason,
	AnnotationRotateToken, AnnotationPreviousKeys, AnnotationSignature, AnnotationAPIKeyUID, AnnotationTemplateLabels,
	AnnotationTemplateAnnots}

// Bounds of what TrimSecret keeps. Everything Keyward writes fits: a record with ten previous keys is about
// 1.3 KB, a key at most 55 bytes, a template value at most 1024 (the CRD's bound).
const (
	maxKeptSecretValue    = 4096
	maxKeptTemplateKeys   = 128
	maxKeptOwnerReference = 8
)

// TrimSecret returns what the manager keeps in its cache of a Secret carrying Keyward's label: what Keyward
// reads and writes there (its labels and record annotations, the template keys its record lists, its data
// keys, type, immutability and owners), each value bounded. Anyone who may write Secrets in a namespace can
// label one as Keyward's; whatever else they put in it (up to the API server's 1 MiB) never becomes the
// shared manager's memory. A value cut by a bound no longer matches what Keyward would write, so Keyward
// judges and rewrites it as it would any edit. The manager writes Secrets with merge patches from a copy
// trimmed the same way, so what the cache lacks is never sent, and never removed.
func TrimSecret(s *corev1.Secret) *corev1.Secret {
	kept := &corev1.Secret{TypeMeta: s.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
		CreationTimestamp: s.CreationTimestamp, DeletionTimestamp: s.DeletionTimestamp,
	}, Type: s.Type, Immutable: s.Immutable}
	keep := func(dst *map[string]string, src map[string]string, k string) {
		if v, ok := src[k]; ok {
			if *dst == nil {
				*dst = map[string]string{}
			}
			(*dst)[k] = v[:min(len(v), maxKeptSecretValue)]
		}
	}
	for _, k := range []string{keywardv1alpha1.APIKeyNameLabel, keywardv1alpha1.ManagedByLabel} {
		keep(&kept.Labels, s.Labels, k)
	}
	for _, k := range recordAnnotations {
		keep(&kept.Annotations, s.Annotations, k)
	}
	for i, k := range strings.Split(kept.Annotations[AnnotationTemplateLabels], ",") {
		if i < maxKeptTemplateKeys {
			keep(&kept.Labels, s.Labels, k)
		}
	}
	for i, k := range strings.Split(kept.Annotations[AnnotationTemplateAnnots], ",") {
		if i < maxKeptTemplateKeys {
			keep(&kept.Annotations, s.Annotations, k)
		}
	}
	for _, k := range []string{DataAPIKey, DataKeyID, DataExpiresAt} {
		if v, ok := s.Data[k]; ok {
			if kept.Data == nil {
				kept.Data = map[string][]byte{}
			}
			kept.Data[k] = v[:min(len(v), maxKeptSecretValue)]
		}
	}
	if len(s.OwnerReferences) <= maxKeptOwnerReference {
		kept.OwnerReferences = s.OwnerReferences
	} else if ref := metav1.GetControllerOf(s); ref != nil {
		kept.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return kept
}
