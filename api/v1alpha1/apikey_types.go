package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The CEL rules below convert a Duration string to seconds with this expression (months count as 30 days and years as 365 days; exact calendar arithmetic happens in the controller, these rules only bound input). The renewBefore < validity rule instead counts a renewBefore month at its longest (31 days) and a validity month at its shortest (28 days), so that what it accepts cannot loop on any calendar date:
//
//	int(X.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[X.find('[a-z]+$')]

// Duration is a length of time written as a whole number and one unit: s (seconds), m (minutes), h (hours), d (days), w (weeks), mo (calendar months) or y (calendar years). Examples: 90d, 12h, 6mo, 1y.
//
// The format is one CEL rule with an example in its message (not a pattern), and every other rule on a
// Duration is guarded by it, so that a malformed duration ("90 days", "90D") gets one error that names the
// field and shows the format, not the pattern and then the other rules failing on what they cannot read.
// +kubebuilder:validation:XValidation:rule="self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$')",message="must be a whole number and one unit (s, m, h, d, w, mo or y), for example 90d, 12h, 6mo or 1y"
// +kubebuilder:validation:MaxLength=8
type Duration string

// RatePeriod is the window of a rate limit: a Duration from 1s to 1d. One type for the APIKey's rate limit
// and an APIKeyPolicy's bound on it, so that both are read and refused alike.
// +kubebuilder:validation:XValidation:rule="self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$')",message="must be a whole number and one unit (s, m, h, d, w, mo or y), for example 90d, 12h, 6mo or 1y"
// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (int(self.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[self.find('[a-z]+$')] >= 1)",message="period must be at least 1s"
// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (int(self.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[self.find('[a-z]+$')] <= 86400)",message="period must be at most 1d"
// +kubebuilder:validation:MaxLength=8
type RatePeriod string

// RotationPolicy says whether Keyward replaces a key before it expires.
// +kubebuilder:validation:Enum=Auto;Disabled
type RotationPolicy string

const (
	// RotationPolicyAuto mints a new key at the renewal time; the previous key stays valid until its own expiry.
	RotationPolicyAuto RotationPolicy = "Auto"
	// RotationPolicyDisabled never mints a replacement: the key expires and the APIKey becomes Ready=False.
	RotationPolicyDisabled RotationPolicy = "Disabled"
)

// WebhookEvent names a lifecycle event that Keyward can deliver to a webhook endpoint.
// +kubebuilder:validation:Enum=key.created;key.rotated;key.expiring;key.expired;key.disabled;key.enabled;key.revoked;key.deleted;key.previous_in_use;key.approval_requested;key.approved;key.denied;key.leaked
type WebhookEvent string

// The lifecycle events a webhook can subscribe to.
const (
	WebhookEventKeyCreated  WebhookEvent = "key.created"
	WebhookEventKeyRotated  WebhookEvent = "key.rotated"
	WebhookEventKeyExpiring WebhookEvent = "key.expiring"
	WebhookEventKeyExpired  WebhookEvent = "key.expired"
	WebhookEventKeyDisabled WebhookEvent = "key.disabled"
	WebhookEventKeyEnabled  WebhookEvent = "key.enabled"
	WebhookEventKeyRevoked  WebhookEvent = "key.revoked"
	WebhookEventKeyDeleted  WebhookEvent = "key.deleted"
	// WebhookEventKeyPreviousInUse: a previous key whose grace period is about to end was used recently.
	WebhookEventKeyPreviousInUse WebhookEvent = "key.previous_in_use"
	// WebhookEventKeyApprovalRequested: the APIKey waits for an approval (Ready reason AwaitingApproval);
	// approvalScopes names the scopes that need it.
	WebhookEventKeyApprovalRequested WebhookEvent = "key.approval_requested"
	// WebhookEventKeyApproved: an approver approved the spec (decidedBy); what it covers is in effect.
	WebhookEventKeyApproved WebhookEvent = "key.approved"
	// WebhookEventKeyDenied: an approver denied the spec (decidedBy, decisionReason).
	WebhookEventKeyDenied WebhookEvent = "key.denied"
	// WebhookEventKeyLeaked: a key was reported leaked (leakURL, leakSource); revokedKeyIDs names the keys
	// the response stopped.
	WebhookEventKeyLeaked WebhookEvent = "key.leaked"
	// WebhookEventTest answers the keyward.dev/webhook-test annotation; spec.webhook.events does not filter it.
	WebhookEventTest WebhookEvent = "webhook.test"
)

// Scope is one permission granted to a key, such as orders:read. Segments are separated by colons and a segment of "*" is a wildcard: orders:* grants orders:read, and "*" alone grants everything.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:Pattern=`^(\*|[A-Za-z0-9][A-Za-z0-9_.-]*)(:(\*|[A-Za-z0-9][A-Za-z0-9_.-]*))*$`
type Scope string

// APIKeySpec is the desired state of an APIKey.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.validity) && has(self.expiresAt))",message="validity and expiresAt are mutually exclusive: set one of them",fieldPath=".expiresAt"
// +kubebuilder:validation:XValidation:rule="!has(self.expiresAt) || !has(self.rotation) || !has(self.rotation.renewBefore)",message="renewBefore cannot be combined with expiresAt: a key with a fixed expiry is never renewed",fieldPath=".rotation.renewBefore"
// +kubebuilder:validation:XValidation:rule="has(self.expiresAt) || !has(self.rotation) || !has(self.rotation.renewBefore) || !self.rotation.renewBefore.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (has(self.validity) && !self.validity.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$')) || ((has(self.validity) && self.rotation.renewBefore.find('[a-z]+$') == self.validity.find('[a-z]+$')) ? int(self.rotation.renewBefore.find('^[0-9]+')) < int(self.validity.find('^[0-9]+')) : int(self.rotation.renewBefore.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2678400, 'y': 31622400}[self.rotation.renewBefore.find('[a-z]+$')] < (has(self.validity) ? int(self.validity.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2419200, 'y': 31536000}[self.validity.find('[a-z]+$')] : 7776000))",message="renewBefore must be shorter than validity (90d when validity is not set); with different units a month counts as 31 days in renewBefore and 28 in validity (a year as 366 and 365 days), so that no calendar date makes the renewal reach back to the issue time",fieldPath=".rotation.renewBefore"
type APIKeySpec struct {
	// DisplayName is a human-readable name for the key, shown in dashboards and webhook payloads.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	DisplayName string `json:"displayName,omitempty"`

	// Description says what the key is for and who uses it.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Description string `json:"description,omitempty"`

	// SecretName is the name of the Secret, in the APIKey's namespace, that receives the key under data api-key (with key-id and expires-at beside it). Defaults to the APIKey's own name. Immutable: to move a key to another Secret, create a new APIKey. Keyward never overwrites a Secret it does not own.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// SecretTemplate holds labels and annotations that Keyward applies to the generated Secret, for example to let a reloader restart workloads when the key rotates. Keys under keyward.dev/ are reserved.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// Prefix is the public, human-readable start of every key, before the underscore (for example "ord" gives ord_…). Lowercase letters and digits, starting with a letter, 2 to 16 characters. Defaults to "kw".
	// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9]{1,15}$`
	// +kubebuilder:default=kw
	// +optional
	Prefix string `json:"prefix,omitempty"`

	// Validity is how long each key is valid after it is minted, from 1h to 10y, for example 30d, 90d, 6mo or 1y. Months and years follow the calendar. Defaults to 90d. Mutually exclusive with expiresAt.
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (int(self.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[self.find('[a-z]+$')] >= 3600)",message="validity must be at least 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (int(self.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[self.find('[a-z]+$')] <= 315360000)",message="validity must be at most 10y"
	// +optional
	Validity Duration `json:"validity,omitempty"`

	// ExpiresAt is a fixed instant at which the key expires, instead of a validity period. A key with a fixed expiry is never rotated: at that instant the APIKey becomes Ready=False with reason Expired. Mutually exclusive with validity.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// Rotation controls when Keyward replaces the key and how long the replaced key keeps working.
	// +optional
	Rotation *RotationSpec `json:"rotation,omitempty"`

	// Disabled, when true, makes every key of this APIKey (current and previous) rejected at once, without deleting anything. Setting it back to false restores the same key.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// Scopes are the permissions granted to the key, as a set (for example orders:read, orders:write). A segment of "*" is a wildcard and ["*"] grants everything; an empty list grants no scopes. Editing scopes never rotates the key. At most 256.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`

	// RateLimit caps how many requests the verifier accepts for this APIKey (current and previous keys together) per period.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// Webhook is an HTTPS endpoint that receives signed notifications (Standard Webhooks) about the key's lifecycle. Payloads never contain the key itself.
	// +optional
	Webhook *WebhookSpec `json:"webhook,omitempty"`

	// LeakResponse is what Keyward does when a key of this APIKey is reported leaked (status.leaks): Rotate stops the leaked key at once and mints a new one, as a revocation does; Disable stops every key of the APIKey and mints none until a new keyward.dev/rotate value asks for one; Notify changes no key and only tells (the KeyLeaked condition and event, key.leaked). Unset: the manager's --leak-response (Rotate by default).
	// +kubebuilder:validation:Enum=Rotate;Disable;Notify
	// +optional
	LeakResponse LeakResponse `json:"leakResponse,omitempty"`
}

// LeakResponse is what Keyward does with a key reported leaked.
type LeakResponse string

// The responses to a leaked key.
const (
	// LeakResponseRotate stops the leaked key at once and mints a new one (as keyward.dev/revoke does).
	LeakResponseRotate LeakResponse = "Rotate"
	// LeakResponseDisable stops every key of the APIKey and mints none until a new keyward.dev/rotate value.
	LeakResponseDisable LeakResponse = "Disable"
	// LeakResponseNotify changes no key: the KeyLeaked condition, event and key.leaked tell.
	LeakResponseNotify LeakResponse = "Notify"
)

// SecretTemplate holds metadata that Keyward copies onto the generated Secret. It is bounded, since the
// manager keeps it in memory for every APIKey (and again in its Secret): keys of at most 317 characters (a
// 253-character prefix, '/' and a 63-character name), label values of at most 63 and annotation values of at
// most 1024 characters, and at most 4096 characters of keys and values in all.
//
// +kubebuilder:validation:XValidation:rule="(has(self.labels) ? self.labels.map(k, size(k) + size(self.labels[k])).sum() : 0) + (has(self.annotations) ? self.annotations.map(k, size(k) + size(self.annotations[k])).sum() : 0) <= 4096",message="secretTemplate: the keys and values of labels and annotations together must be at most 4096 characters"
type SecretTemplate struct {
	// Labels added to the Secret. Keys under keyward.dev/ are reserved for Keyward, and keys another
	// controller acts on (ForeignControllerKeyPattern) are refused.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule=`self.all(k, !k.matches('^([a-z0-9.-]*\\.)?keyward\\.dev/'))`,message="label keys under keyward.dev/ are reserved for Keyward"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317)",message="label keys must be at most 317 characters"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 63)",message="label values must be at most 63 characters"
	// +kubebuilder:validation:XValidation:rule=`self.all(k, !k.matches('^([a-z0-9.-]*\\.)?(argoproj\\.io|emberstack\\.com|mittwald\\.de|appscode\\.com|cert-manager\\.io|external-secrets\\.io|fluxcd\\.io)/'))`,message="label keys that another controller acts on (Argo CD, Secret reflectors and replicators, cert-manager, External Secrets, Flux) are refused: Keyward's manager never writes them"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations added to the Secret. Keys under keyward.dev/ are reserved for Keyward, and keys another
	// controller acts on (ForeignControllerKeyPattern) are refused.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule=`self.all(k, !k.matches('^([a-z0-9.-]*\\.)?keyward\\.dev/'))`,message="annotation keys under keyward.dev/ are reserved for Keyward"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317)",message="annotation keys must be at most 317 characters"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 1024)",message="annotation values must be at most 1024 characters"
	// +kubebuilder:validation:XValidation:rule=`self.all(k, !k.matches('^([a-z0-9.-]*\\.)?(argoproj\\.io|emberstack\\.com|mittwald\\.de|appscode\\.com|cert-manager\\.io|external-secrets\\.io|fluxcd\\.io)/'))`,message="annotation keys that another controller acts on (Argo CD, Secret reflectors and replicators, cert-manager, External Secrets, Flux) are refused: Keyward's manager never writes them"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RotationSpec controls automatic and manual rotation.
type RotationSpec struct {
	// Policy is Auto (mint a new key at the renewal time) or Disabled (let the key expire). Defaults to Auto.
	// +kubebuilder:default=Auto
	// +optional
	Policy RotationPolicy `json:"policy,omitempty"`

	// RenewBefore is how long before expiry an Auto rotation mints the next key. The previous key stays valid until its own expiry, so workloads have this long to pick up the new one. Must be shorter than validity. Defaults to a third of the validity.
	// +optional
	RenewBefore Duration `json:"renewBefore,omitempty"`

	// GracePeriod is how long the previous key stays valid after a manual rotation (the keyward.dev/rotate annotation). 0s revokes it at once, which is what you want for a leaked key. Defaults to 1h.
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|[1-9][0-9]{0,5})(s|m|h|d|w|mo|y)$') || (int(self.find('^[0-9]+')) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'mo': 2592000, 'y': 31536000}[self.find('[a-z]+$')] <= 2592000)",message="gracePeriod must be at most 30d"
	// +optional
	GracePeriod Duration `json:"gracePeriod,omitempty"`
}

// RateLimit is a request budget per period, enforced by the verifier as a token bucket.
type RateLimit struct {
	// Requests is how many requests are allowed per period.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +required
	Requests int32 `json:"requests"`

	// Period is the window that requests refers to, from 1s to 1d, for example 1s, 1m or 1h.
	// +required
	Period RatePeriod `json:"period"`
}

// WebhookSpec is where and how Keyward notifies an endpoint about lifecycle events.
type WebhookSpec struct {
	// URL receives a POST per event. It must be https://, except for in-cluster Services (hosts ending in .svc or .svc.cluster.local), which may use http://.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="url must be an absolute URL"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname().endsWith('.svc') || url(self).getHostname().endsWith('.svc.cluster.local')))",message="url must use https (http is allowed only for in-cluster *.svc hosts)"
	// +required
	URL string `json:"url"`

	// SigningSecretRef names the Secret key, in the APIKey's namespace, that holds the whsec_… signing secret used to sign every delivery (Standard Webhooks).
	// +required
	SigningSecretRef SecretKeyRef `json:"signingSecretRef"`

	// Events limits delivery to these event types. Empty means all of them.
	// +listType=set
	// +optional
	Events []WebhookEvent `json:"events,omitempty"`

	// ExpiringBefore is how long before expiry the key.expiring event is sent, for a key that no renewal will replace first. Defaults to 7d.
	// +optional
	ExpiringBefore Duration `json:"expiringBefore,omitempty"`

	// CABundle is the certificates that the endpoint's certificate must chain to, for a receiver behind a private CA: PEM, or base64-encoded PEM as in other Kubernetes caBundle fields. Without it the system roots apply.
	// +kubebuilder:validation:MaxLength=65536
	// +kubebuilder:validation:XValidation:rule="self.matches(r'^\\s*-----BEGIN CERTIFICATE-----') || self.matches(r'^\\s*LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t[A-Za-z0-9+/=\\s]*$')",message="caBundle must be PEM certificates (-----BEGIN CERTIFICATE-----) or base64-encoded PEM"
	// +optional
	CABundle string `json:"caBundle,omitempty"`
}

// SecretKeyRef points at one key of a Secret in the same namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +required
	Name string `json:"name"`

	// Key within the Secret's data. Defaults to "secret".
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +kubebuilder:default=secret
	// +optional
	Key string `json:"key,omitempty"`
}

// APIKeyStatus is the observed state of an APIKey. It never holds key material: only the key's SHA-256 hash, its public ID and a short hint.
type APIKeyStatus struct {
	// ObservedGeneration is the metadata.generation that this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions follow kstatus: Ready is always present; Reconciling and Stalled only while they are true.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// SecretName is the Secret that holds the current key (spec.secretName or the APIKey's name).
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// KeyID is the public identifier of the current key, derived from its hash (kid_…).
	// +optional
	KeyID string `json:"keyID,omitempty"`

	// KeyHint is the prefix and the last four characters of the current key, for recognising it (ord_…x9Z2).
	// +optional
	KeyHint string `json:"keyHint,omitempty"`

	// KeyHash is sha256:<hex> of the full current key.
	// +optional
	KeyHash string `json:"keyHash,omitempty"`

	// Revision counts the keys minted for this APIKey; it goes up by one for every new key.
	// +optional
	Revision int64 `json:"revision,omitempty"`

	// IssuedAt is when the current key was minted.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// ExpiresAt is when the current key stops being valid.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// RenewalTime is when Keyward will mint the next key (policy Auto only).
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// PreviousKeys are replaced keys that are still accepted until their validUntil.
	// +listType=atomic
	// +optional
	PreviousKeys []PreviousKey `json:"previousKeys,omitempty"`

	// PreviousKeysInUse are the previous keys whose grace period is about to end and that a verifier
	// accepted recently: someone still uses a key that will soon stop working (see the PreviousKeyInUse
	// condition).
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +optional
	PreviousKeysInUse []string `json:"previousKeysInUse,omitempty"`

	// LastRotationReason is why the current key was minted: Initial, Expiring, Manual, Revoked, SecretMissing, SecretTampered or Leaked (a withdrawal under leakResponse Disable, and the key that follows it).
	// +optional
	LastRotationReason RotationReason `json:"lastRotationReason,omitempty"`

	// LastHandledRotateToken is the value of the keyward.dev/rotate annotation that the last manual rotation answered. A different annotation value asks for another rotation.
	// +optional
	LastHandledRotateToken string `json:"lastHandledRotateToken,omitempty"`

	// RecordSignature is the manager's signature (HMAC-SHA256 with a key only the manager holds) over the key record this status shows: key hash, revision, issue and expiry times, reason, handled rotate token and previous keys. Keyward trusts the record in status only when it verifies, so a forged status is put back and never becomes the last known key. It says nothing about the key itself.
	// +optional
	RecordSignature string `json:"recordSignature,omitempty"`

	// Webhook reports delivery of lifecycle events to spec.webhook.
	// +optional
	Webhook *WebhookStatus `json:"webhook,omitempty"`

	// Usage is reported by the verifier in batches.
	// +optional
	Usage *UsageStatus `json:"usage,omitempty"`

	// Approval holds the decisions of approvers, for APIKeys whose scopes an APIKeyPolicy's
	// approvalRequiredScopes names. Written by `kubectl keyward approve` and `deny` (the admission policy
	// keyward-apikey-approval lets only holders of the approve verb write it, each in their own name, for the
	// spec as it is). The verifier grants no scope outside approval.approved and no faster rate limit.
	// +optional
	Approval *ApprovalStatus `json:"approval,omitempty"`

	// Leaks are the reports that a key of this APIKey was found where it should not be (a secret scanner, or kubectl keyward report-leak), one per key ID, at most 16. Written by the reporters and never by the manager; the admission policy keyward-leak-reports lets a reporter only add a report of a key this APIKey has. They never hold the key or its hash.
	// +listType=map
	// +listMapKey=keyID
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Leaks []LeakReport `json:"leaks,omitempty"`
}

// LeakReport says that a key was reported leaked: which, when, where and by whom.
type LeakReport struct {
	// KeyID is the leaked key's ID.
	// +kubebuilder:validation:MaxLength=64
	// +required
	KeyID string `json:"keyID"`
	// ReportedAt is when the report arrived.
	// +required
	ReportedAt metav1.Time `json:"reportedAt"`
	// URL is where the key was found, as the report says.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	URL string `json:"url,omitempty"`
	// Source is the kind of place (content, commit, issue_comment, ...), as the report says.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Source string `json:"source,omitempty"`
	// Reporter is who reported it: github-secret-scanning, or the user who ran kubectl keyward report-leak.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reporter string `json:"reporter,omitempty"`
}

// ApprovalStatus is what approvers decided about an APIKey: the grant in effect and the last denial.
type ApprovalStatus struct {
	// Approved is the last approval: what the key may have. A later change of the spec's scopes, validity,
	// expiresAt or rate limit waits for a new approval while the key keeps what this one covers.
	// +optional
	Approved *ApprovalDecision `json:"approved,omitempty"`
	// Denied is the last denial. It stalls the APIKey while the spec is what it denied.
	// +optional
	Denied *ApprovalDecision `json:"denied,omitempty"`
}

// ApprovalDecision is one approver's decision on what an APIKey asked for: who, when, why and exactly what.
type ApprovalDecision struct {
	// By is the approver's user name, as the API server authenticated it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +required
	By string `json:"by"`
	// At is when the decision was made.
	// +required
	At metav1.Time `json:"at"`
	// Reason is why (required for a denial).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
	// Covers is the part of the spec the decision is about, copied from the spec when it was made.
	// +required
	Covers ApprovedSpec `json:"covers"`
}

// ApprovedSpec is the part of an APIKey's spec that an approval covers.
type ApprovedSpec struct {
	// Scopes are spec.scopes.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`
	// Validity is spec.validity.
	// +optional
	Validity Duration `json:"validity,omitempty"`
	// ExpiresAt is spec.expiresAt.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// RateLimit is spec.rateLimit.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// PreviousKey is a replaced key that is still accepted until ValidUntil.
type PreviousKey struct {
	// KeyID is the public identifier of the replaced key.
	KeyID string `json:"keyID"`
	// KeyHash is sha256:<hex> of the replaced key.
	KeyHash string `json:"keyHash"`
	// ValidUntil is when the replaced key stops being accepted.
	ValidUntil metav1.Time `json:"validUntil"`
}

// WebhookStatus reports webhook delivery. The outbox is written by the key controller, in the same status
// write as the change it announces; the delivery fields by the delivery controller.
type WebhookStatus struct {
	// Outbox holds the events not yet delivered, oldest first. They live in the API server, so none is lost
	// when the manager restarts or the leader changes.
	// +listType=atomic
	// +optional
	Outbox []WebhookMessage `json:"outbox,omitempty"`
	// DeliveredSequence is the sequence number of the last outbox message the delivery controller is done
	// with (delivered, or given up after the retry schedule).
	// +optional
	DeliveredSequence int64 `json:"deliveredSequence,omitempty"`
	// LastDeliveredRevision is the key revision of the last event the endpoint accepted.
	// +optional
	LastDeliveredRevision int64 `json:"lastDeliveredRevision,omitempty"`
	// LastDeliveryTime is when the endpoint last accepted an event.
	// +optional
	LastDeliveryTime *metav1.Time `json:"lastDeliveryTime,omitempty"`
	// LastError describes the last failed delivery, empty after a success.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// ConsecutiveFailures counts failed attempts since the last success.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
	// NextAttemptTime is when the next delivery attempt is due after a failure.
	// +optional
	NextAttemptTime *metav1.Time `json:"nextAttemptTime,omitempty"`
	// GoneGeneration is the APIKey generation whose endpoint answered 410 Gone; nothing more is sent until the spec changes.
	// +optional
	GoneGeneration int64 `json:"goneGeneration,omitempty"`
	// ExpiringNotifiedRevision is the key revision for which key.expiring was queued (once per key).
	// +optional
	ExpiringNotifiedRevision int64 `json:"expiringNotifiedRevision,omitempty"`
	// LastTest is the outcome of the last webhook.test sent for the keyward.dev/webhook-test annotation.
	// +optional
	LastTest *WebhookTestStatus `json:"lastTest,omitempty"`
	// DeletionQueuedAt is when key.deleted was queued for an APIKey being deleted; its finalizer is removed once
	// the outbox is delivered, or a bounded time after this.
	// +optional
	DeletionQueuedAt *metav1.Time `json:"deletionQueuedAt,omitempty"`
}

// WebhookMessage is one event waiting in the outbox. It holds what the payload says, never the key or its hash.
type WebhookMessage struct {
	// ID is the webhook-id: stable across retries and restarts, so receivers can deduplicate.
	ID string `json:"id"`
	// Sequence orders the APIKey's events.
	Sequence int64 `json:"sequence"`
	// Type is the event type, such as key.rotated.
	Type WebhookEvent `json:"type"`
	// Timestamp is when the change happened.
	Timestamp metav1.Time `json:"timestamp"`
	// KeyID is the current key's ID after the change.
	// +optional
	KeyID string `json:"keyID,omitempty"`
	// Revision is the current key's revision after the change.
	// +optional
	Revision int64 `json:"revision,omitempty"`
	// ExpiresAt is when the current key expires.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// Reason is why the key was minted (rotations) or the condition reason (other events).
	// +optional
	Reason string `json:"reason,omitempty"`
	// PreviousKeyID is the key a rotation replaced.
	// +optional
	PreviousKeyID string `json:"previousKeyID,omitempty"`
	// PreviousValidUntil is until when the replaced key stays valid.
	// +optional
	PreviousValidUntil *metav1.Time `json:"previousValidUntil,omitempty"`
	// PreviousLastUsedAt is when a previous key still in use was last accepted (key.previous_in_use).
	// +optional
	PreviousLastUsedAt *metav1.Time `json:"previousLastUsedAt,omitempty"`
	// RevokedKeyIDs are the keys a revocation stopped.
	// +listType=atomic
	// +optional
	RevokedKeyIDs []string `json:"revokedKeyIDs,omitempty"`
	// ApprovalScopes are the scopes that need an approval (key.approval_requested, key.approved, key.denied).
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +optional
	ApprovalScopes []Scope `json:"approvalScopes,omitempty"`
	// DecidedBy is the approver who approved or denied (key.approved, key.denied).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	DecidedBy string `json:"decidedBy,omitempty"`
	// DecisionReason is the approver's reason (key.approved, key.denied).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	DecisionReason string `json:"decisionReason,omitempty"`
	// LeakedKeyID is the key reported leaked (key.leaked).
	// +kubebuilder:validation:MaxLength=64
	// +optional
	LeakedKeyID string `json:"leakedKeyID,omitempty"`
	// LeakURL is where the leaked key was found, as the report says (key.leaked).
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	LeakURL string `json:"leakURL,omitempty"`
	// LeakSource is the kind of place it was found in, as the report says (key.leaked).
	// +kubebuilder:validation:MaxLength=128
	// +optional
	LeakSource string `json:"leakSource,omitempty"`
}

// WebhookTestStatus is the outcome of a webhook.test.
type WebhookTestStatus struct {
	// Token is the keyward.dev/webhook-test value it answered.
	Token string `json:"token"`
	// Time is when it was sent.
	Time metav1.Time `json:"time"`
	// Result is the HTTP status the endpoint answered, or why it could not be reached.
	Result string `json:"result"`
}

// UsageStatus is what the verifier observed of the key's use.
type UsageStatus struct {
	// LastUsedAt is when a key of this APIKey was last accepted.
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
	// Requests counts the verifications of this APIKey's keys.
	// +optional
	Requests int64 `json:"requests,omitempty"`
	// Keys is the use of each key of this APIKey that is still accepted (the current key and the previous
	// ones), by key ID: when the verifier last accepted it, and what it answered.
	// +optional
	// +listType=map
	// +listMapKey=keyID
	// +kubebuilder:validation:MaxItems=16
	Keys []KeyUsage `json:"keys,omitempty"`
}

// KeyUsage is what the verifier answered for one key, summed over its replicas.
type KeyUsage struct {
	// KeyID is the key's public ID (status.keyID or a previous key's).
	// +kubebuilder:validation:MaxLength=64
	KeyID string `json:"keyID"`
	// LastUsedAt is when the key was last accepted.
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
	// Valid counts the times the key was accepted.
	// +optional
	Valid int64 `json:"valid,omitempty"`
	// RateLimited counts the times the key was refused for the APIKey's rate limit.
	// +optional
	RateLimited int64 `json:"rateLimited,omitempty"`
	// Rejected counts the key's other refusals by code: DISABLED, EXPIRED, INVALID_REQUEST,
	// WRONG_NAMESPACE, INSUFFICIENT_SCOPE.
	// +optional
	// +kubebuilder:validation:MaxProperties=8
	Rejected map[string]int64 `json:"rejected,omitempty"`
}

// APIKey declares an API key that Keyward mints into a Secret, hashes, expires, rotates and announces.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ak,categories=keyward
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Key ID",type=string,JSONPath=`.status.keyID`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: Keyward puts the APIKey's name into a label value on its Secret"
// +kubebuilder:validation:XValidation:rule="(has(self.spec.secretName) ? self.spec.secretName : self.metadata.name) == (has(oldSelf.spec.secretName) ? oldSelf.spec.secretName : oldSelf.metadata.name)",message="secretName is immutable: create a new APIKey to use another Secret",fieldPath=".spec.secretName"
type APIKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired key: validity, rotation, scopes, rate limit and webhook.
	// +required
	Spec APIKeySpec `json:"spec"`

	// Status is the observed key: its hash and ID, expiry and renewal, conditions.
	// +optional
	Status APIKeyStatus `json:"status,omitempty"`
}

// APIKeyList is a list of APIKeys.
//
// +kubebuilder:object:root=true
type APIKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the APIKeys.
	Items []APIKey `json:"items"`
}

func init() {
	SchemeBuilder.Register(&APIKey{}, &APIKeyList{})
}
