// Package keyrecord is the record Keyward keeps of an APIKey's key — its hash, revision, issue and expiry
// times, why it was minted, the rotate token it answered and the replaced keys still accepted — and every
// conversion of it: into and out of the Secret's annotations, into and out of status, and the signature that
// tells a record Keyward wrote from one that someone else wrote.
//
// The record is never the key: it holds the key's SHA-256, never the key itself.
package keyrecord

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"time"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// Record is what Keyward knows about the current key of an APIKey, without the key.
type Record struct {
	// Hash is sha256:<hex> of the key.
	Hash     string
	Revision int64
	IssuedAt time.Time
	// ExpiresAt is the key's expiry as of the last time Keyward wrote the record. Once it has passed the key
	// stays expired, whatever the spec says later.
	ExpiresAt time.Time
	Reason    keywardv1alpha1.RotationReason
	// HandledToken is the keyward.dev/rotate value that had been answered when this record was written.
	HandledToken string
	// Previous are replaced keys that are still accepted until their ValidUntil.
	Previous []PreviousKey
}

// PreviousKey is a replaced key that is still accepted until ValidUntil.
type PreviousKey struct {
	Hash       string
	ValidUntil time.Time
}

// IsZero reports whether the record describes no key at all.
func (r Record) IsZero() bool { return r.Hash == "" && r.Revision == 0 }

// Withdrawn reports whether the record is a withdrawal: revision Revision is due, the key it replaces is no
// longer accepted, and the new key is not minted yet because the Secret could not take it. Only status holds
// such a record; it accepts nothing but its previous keys.
func (r Record) Withdrawn() bool { return r.Hash == "" && r.Revision > 0 }

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

// Subject is what a signature binds a record to: one APIKey, by name and UID, and the Secret that holds its
// key. A record signed for one APIKey does not verify for another, nor for a later APIKey of the same name,
// so a genuine record can be copied neither between APIKeys nor from a deleted APIKey to its successor.
type Subject struct {
	Namespace, APIKey, Secret string
	// UID is the APIKey's UID.
	UID string
	// Created is the APIKey's creation time. It binds the records of signature version 1, which did not cover
	// the UID, to this APIKey: a record issued before the APIKey existed belongs to an earlier one.
	Created time.Time
}

// MinSigningKeyLength is the shortest signing key NewSigner accepts (256 bits).
const MinSigningKeyLength = 32

// signatureVersion starts every signature, so that the format can change without ambiguity. Version 2
// covers the APIKey's UID; version 1 did not, and is still accepted for records issued after the APIKey was
// created (see Subject.Created), so that an upgrade keeps every key. Keyward re-signs them as version 2
// the next time it writes them, which is the first reconcile after the upgrade.
const (
	signatureVersion       = "v2:"
	legacySignatureVersion = "v1:"
)

// Signer signs and verifies records with HMAC-SHA256 under a key that only the manager holds. Anyone who can
// edit a Secret's annotations or an APIKey's status can write any record, but not its signature.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for key, which must be at least MinSigningKeyLength bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < MinSigningKeyLength {
		return nil, fmt.Errorf("the record signing key has %d bytes; it needs at least %d", len(key), MinSigningKeyLength)
	}
	return &Signer{key: slices.Clone(key)}, nil
}

// Sign returns the signature of r for sub.
func (s *Signer) Sign(sub Subject, r Record) string {
	return signatureVersion + base64.RawURLEncoding.EncodeToString(s.mac(sub, r, true))
}

// Verify reports whether sig is the signature of r for sub.
func (s *Signer) Verify(sub Subject, r Record, sig string) bool {
	withUID := true
	switch {
	case strings.HasPrefix(sig, signatureVersion):
	case strings.HasPrefix(sig, legacySignatureVersion) && !r.IssuedAt.IsZero() && !r.IssuedAt.Before(sub.Created.Truncate(time.Second)):
		withUID = false
	default:
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig[len(signatureVersion):])
	return err == nil && len(got) > 0 && hmac.Equal(got, s.mac(sub, r, withUID))
}

// Tag is a MAC of label and values with the manager's key: a name or token that only the manager can
// compute, the same on every replica (they share the key), and unguessable to anyone else.
func (s *Signer) Tag(label string, values ...string) []byte {
	m := hmac.New(sha256.New, s.key)
	field(m, label)
	field(m, values...)
	return m.Sum(nil)
}

// mac hashes an unambiguous encoding of every field: each value is length-prefixed, times are UTC seconds.
func (s *Signer) mac(sub Subject, r Record, withUID bool) []byte {
	m := hmac.New(sha256.New, s.key)
	field(m, "keyward.dev/key-record")
	field(m, sub.Namespace, sub.APIKey, sub.Secret)
	if withUID {
		field(m, sub.UID)
	}
	field(m, r.Hash, strconv.FormatInt(r.Revision, 10), unix(r.IssuedAt), unix(r.ExpiresAt), string(r.Reason), r.HandledToken)
	field(m, strconv.Itoa(len(r.Previous)))
	for _, p := range r.Previous {
		field(m, p.Hash, unix(p.ValidUntil))
	}
	return m.Sum(nil)
}

func field(h hash.Hash, values ...string) {
	for _, v := range values {
		fmt.Fprintf(h, "%d:%s;", len(v), v)
	}
}

func unix(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.Unix(), 10)
}

// ErrTampered wraps every reason a record or its key cannot be trusted. Its messages name what is wrong and
// never contain the key.
var ErrTampered = errors.New("the key or its record is not what Keyward wrote")

// TamperedError says which parts of a Secret are not what Keyward wrote.
type TamperedError struct {
	// Changed names the fields: "data api-key", annotation names, or "record signature" when the record was
	// changed in a way no field comparison could name.
	Changed []string
}

func (e *TamperedError) Error() string {
	return fmt.Sprintf("%v: %s", ErrTampered, joinNames(e.Changed))
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *TamperedError) Unwrap() error { return ErrTampered }

func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			out += " and "
		default:
			out += ", "
		}
		out += n
	}
	return out
}

// FieldNames names the parts of a record where they are kept: as Secret annotations or as status fields.
type FieldNames struct {
	Hash, Revision, IssuedAt, ExpiresAt, Reason, HandledToken, Previous string
}

// The names of a record's parts in the Secret and in status.
var (
	SecretFields = FieldNames{AnnotationKeyHash, AnnotationRevision, AnnotationIssuedAt, AnnotationExpiresAt,
		AnnotationReason, AnnotationRotateToken, AnnotationPreviousKeys}
	StatusFields = FieldNames{"status.keyHash", "status.revision", "status.issuedAt", "status.expiresAt",
		"status.lastRotationReason", "status.lastHandledRotateToken", "status.previousKeys"}
)

// Changed names, with names, the parts of claimed that differ from genuine.
func Changed(claimed, genuine Record, names FieldNames) []string {
	var out []string
	add := func(differs bool, name string) {
		if differs {
			out = append(out, name)
		}
	}
	add(claimed.Hash != genuine.Hash, names.Hash)
	add(claimed.Revision != genuine.Revision, names.Revision)
	add(!claimed.IssuedAt.Equal(genuine.IssuedAt), names.IssuedAt)
	add(!claimed.ExpiresAt.Equal(genuine.ExpiresAt), names.ExpiresAt)
	add(claimed.Reason != genuine.Reason, names.Reason)
	add(claimed.HandledToken != genuine.HandledToken, names.HandledToken)
	add(!slices.EqualFunc(claimed.Previous, genuine.Previous, func(a, b PreviousKey) bool {
		return a.Hash == b.Hash && a.ValidUntil.Equal(b.ValidUntil)
	}), names.Previous)
	return out
}

// JoinNames lists names for a message: "a", "a and b", "a, b and c".
func JoinNames(names []string) string { return joinNames(names) }
