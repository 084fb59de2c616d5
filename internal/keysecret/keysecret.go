// Package keysecret writes and reads the Secret that holds an APIKey's key. The Secret is the source of
// truth: its annotations record everything status says about the key (hash, revision, issue time, reason,
// handled rotate token, previous keys), so status can always be derived from it again and a crash between
// writing the Secret and writing status never mints a second key.
package keysecret

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/policy"
)

// Data keys of the Secret.
const (
	DataAPIKey    = "api-key"
	DataKeyID     = "key-id"
	DataExpiresAt = "expires-at"
)

// Annotations Keyward keeps on the Secret.
const (
	AnnotationKeyHash        = "keyward.dev/key-hash"
	AnnotationRevision       = "keyward.dev/revision"
	AnnotationIssuedAt       = "keyward.dev/issued-at"
	AnnotationReason         = "keyward.dev/rotation-reason"
	AnnotationRotateToken    = "keyward.dev/rotate-token"
	AnnotationPreviousKeys   = "keyward.dev/previous-keys"
	AnnotationTemplateLabels = "keyward.dev/template-labels"
	AnnotationTemplateAnnots = "keyward.dev/template-annotations"
)

// Owner says which APIKey a Secret belongs to, or "" when it carries no Keyward label.
func Owner(s *corev1.Secret) string { return s.Labels[keywardv1alpha1.APIKeyNameLabel] }

// ErrTampered wraps every reason Read finds a Secret's key unusable. Its messages never contain the key.
var ErrTampered = errors.New("the Secret's key is not the one Keyward wrote")

// Read returns the key and its record from a Secret that Keyward owns. An error wrapping ErrTampered means
// the key is missing, malformed, or no longer matches the recorded hash.
func Read(s *corev1.Secret) (key string, rec policy.Key, err error) {
	key = string(s.Data[DataAPIKey])
	tampered := func(format string, args ...any) (string, policy.Key, error) {
		return "", policy.Key{}, fmt.Errorf("%w: "+format, append([]any{ErrTampered}, args...)...)
	}
	if key == "" {
		return tampered("data %s is missing", DataAPIKey)
	}
	if _, err := keys.Parse(key); err != nil {
		return tampered("data %s: %v", DataAPIKey, err)
	}
	a := s.Annotations
	rec.Hash = a[AnnotationKeyHash]
	if rec.Hash != keys.Hash(key) {
		return tampered("data %s does not match annotation %s", DataAPIKey, AnnotationKeyHash)
	}
	if rec.Revision, err = strconv.ParseInt(a[AnnotationRevision], 10, 64); err != nil || rec.Revision < 1 {
		return tampered("annotation %s is not a positive number", AnnotationRevision)
	}
	if rec.IssuedAt, err = time.Parse(time.RFC3339, a[AnnotationIssuedAt]); err != nil {
		return tampered("annotation %s is not an RFC 3339 time", AnnotationIssuedAt)
	}
	rec.Reason = policy.Reason(a[AnnotationReason])
	rec.HandledToken = a[AnnotationRotateToken]
	if raw := a[AnnotationPreviousKeys]; raw != "" {
		var prev []previousKey
		if err := json.Unmarshal([]byte(raw), &prev); err != nil {
			return tampered("annotation %s is not valid JSON", AnnotationPreviousKeys)
		}
		for _, p := range prev {
			rec.Previous = append(rec.Previous, policy.PreviousKey{Hash: p.KeyHash, ValidUntil: p.ValidUntil.UTC()})
		}
	}
	return key, rec, nil
}

type previousKey struct {
	KeyHash    string      `json:"keyHash"`
	ValidUntil metav1.Time `json:"validUntil"`
}

// Desired is everything Keyward puts into the Secret.
type Desired struct {
	APIKey    *keywardv1alpha1.APIKey
	Key       string
	Record    policy.Key
	ExpiresAt time.Time
}

// Apply writes the desired state into s (a new Secret or a copy of the existing one) and leaves whatever
// else others put there alone, except template labels and annotations that the template no longer lists.
func Apply(s *corev1.Secret, d Desired) {
	ak := d.APIKey
	s.Type = corev1.SecretTypeOpaque
	s.Labels = withDefaults(s.Labels)
	s.Annotations = withDefaults(s.Annotations)

	var tmpl keywardv1alpha1.SecretTemplate
	if ak.Spec.SecretTemplate != nil {
		tmpl = *ak.Spec.SecretTemplate
	}
	applyTemplate(s.Labels, s.Annotations, AnnotationTemplateLabels, tmpl.Labels)
	applyTemplate(s.Annotations, s.Annotations, AnnotationTemplateAnnots, tmpl.Annotations)

	s.Labels[keywardv1alpha1.APIKeyNameLabel] = ak.Name
	s.Labels[keywardv1alpha1.ManagedByLabel] = keywardv1alpha1.ManagedByValue

	s.Annotations[AnnotationKeyHash] = d.Record.Hash
	s.Annotations[AnnotationRevision] = strconv.FormatInt(d.Record.Revision, 10)
	s.Annotations[AnnotationIssuedAt] = d.Record.IssuedAt.UTC().Format(time.RFC3339)
	s.Annotations[AnnotationReason] = string(d.Record.Reason)
	setOrDelete(s.Annotations, AnnotationRotateToken, d.Record.HandledToken)
	prev := make([]previousKey, 0, len(d.Record.Previous))
	for _, p := range d.Record.Previous {
		prev = append(prev, previousKey{KeyHash: p.Hash, ValidUntil: metav1.NewTime(p.ValidUntil.UTC())})
	}
	raw := ""
	if len(prev) > 0 {
		b, _ := json.Marshal(prev) // cannot fail: strings and times
		raw = string(b)
	}
	setOrDelete(s.Annotations, AnnotationPreviousKeys, raw)

	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[DataAPIKey] = []byte(d.Key)
	s.Data[DataKeyID] = []byte(keys.Sum(d.Key).ID())
	s.Data[DataExpiresAt] = []byte(d.ExpiresAt.UTC().Format(time.RFC3339))
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

func withDefaults(m map[string]string) map[string]string {
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
