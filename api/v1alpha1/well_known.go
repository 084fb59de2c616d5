package v1alpha1

// Annotations and labels that Keyward reads or writes. Everything under keyward.dev/ is reserved.
const (
	// RotateAnnotation asks for a manual rotation: any value different from status.lastHandledRotateToken
	// mints a new key once. Keyward never removes it, so GitOps tools see no drift.
	RotateAnnotation = "keyward.dev/rotate"

	// RevokeAnnotation lists key IDs (kid_…, comma-separated) to revoke at once, without a grace period: a
	// listed current key is replaced by a new one, a listed previous key is dropped. Keyward never removes
	// it; an ID that names no live key is ignored, so leaving the annotation in place changes nothing more.
	RevokeAnnotation = "keyward.dev/revoke"

	// AdoptOrphanAnnotation, set to "true" on an APIKey, lets it adopt a Secret of its name that carries
	// Keyward's label but no controller (left behind by `kubectl delete --cascade=orphan`), keeping that
	// Secret's key when Keyward's signature on it verifies. Without it such a Secret is a conflict: a Secret
	// that outlived its APIKey may hold a key that was meant to die with it.
	AdoptOrphanAnnotation = "keyward.dev/adopt-orphaned-secret"

	// WebhookTestAnnotation asks for one webhook.test delivery: any value different from
	// status.webhook.lastTest.token sends one. Keyward never removes it.
	WebhookTestAnnotation = "keyward.dev/webhook-test"

	// RequestedAtAnnotation asks Keyward to look at the APIKey again at once: any new value starts a
	// reconcile and nothing else (as Flux's reconcile.fluxcd.io/requestedAt). The manager keeps only the
	// annotations it acts on, so editing any other annotation does not. Useful after resolving a
	// SecretConflict, which is otherwise looked at again after a back-off.
	RequestedAtAnnotation = "keyward.dev/requested-at"

	// RequestedByAnnotation names who last changed what an approval covers (spec.scopes, validity,
	// expiresAt, rateLimit): the user the API server authenticated, written at admission by the
	// MutatingAdmissionPolicy keyward-apikey-requested-by on every create and on every update that changes
	// one of them, and kept as it was on any other update, so no one can write another name into it. The
	// author of a change may not approve it unless every APIKeyPolicy requiring the approval allows
	// self-approval.
	RequestedByAnnotation = "keyward.dev/requested-by"

	// ForeignControllerKeyPattern matches the label and annotation keys of other controllers that act on a
	// Secret carrying them: Argo CD turns it into cluster or repository credentials, Secret reflectors and
	// replicators (emberstack, mittwald, kubed) copy it into other namespaces, cert-manager injects it as a
	// CA, External Secrets and Flux act on theirs. A secretTemplate may not ask for them (CRD validation) and
	// Keyward's manager may not write them (admission policy keyward-manager-secrets), so neither a tenant
	// nor a stolen manager token can use Keyward to hand a Secret to another controller.
	ForeignControllerKeyPattern = `^([a-z0-9.-]*\.)?(argoproj\.io|emberstack\.com|mittwald\.de|appscode\.com|cert-manager\.io|external-secrets\.io|fluxcd\.io)/`

	// MaxTokenLength is the longest keyward.dev/rotate or keyward.dev/webhook-test value Keyward acts on; the
	// admission policy keyward-apikey-annotations rejects longer ones.
	MaxTokenLength = 128

	// WebhookFinalizer holds an APIKey with a webhook until key.deleted is delivered, for a bounded time.
	WebhookFinalizer = "keyward.dev/webhook"

	// ManagedByLabel marks the Secrets that Keyward owns. The manager caches only Secrets with this label.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel on Keyward's Secrets.
	ManagedByValue = "keyward"
	// APIKeyNameLabel names the APIKey that a Secret belongs to.
	APIKeyNameLabel = "keyward.dev/apikey"
)

// Condition types, following kstatus: Ready is always present, Reconciling and Stalled only while true.
const (
	// ConditionReady is True when a valid current key is in place in the Secret.
	ConditionReady = "Ready"
	// ConditionReconciling is True while Keyward is working towards the desired state.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when Keyward cannot make progress without a change from a person.
	ConditionStalled = "Stalled"
	// ConditionPreviousKeyInUse is True while a previous key whose grace period is about to end was used
	// recently (status.previousKeysInUse names them); absent otherwise. Ready does not depend on it.
	ConditionPreviousKeyInUse = "PreviousKeyInUse"
	// ConditionPolicyViolation is True while the APIKey breaks an APIKeyPolicy that selects its namespace (it
	// was created before the policy, which admission refuses since); its message names each policy and rule.
	// Absent otherwise. Ready does not depend on it: the key keeps working.
	ConditionPolicyViolation = "PolicyViolation"
	// ConditionKeyLeaked is True while status.leaks reports a key of the APIKey leaked; its message names
	// each key, where it was found and what was done. Absent otherwise. Ready does not depend on it.
	ConditionKeyLeaked = "KeyLeaked"
)

// ConditionReason is the machine-readable reason of a Ready, Reconciling or Stalled condition.
type ConditionReason string

// Condition reasons.
const (
	// ReasonKeyReady: a valid key is in place.
	ReasonKeyReady ConditionReason = "KeyReady"
	// ReasonProgressing: Keyward is minting or recording a key.
	ReasonProgressing ConditionReason = "Progressing"
	// ReasonExpired: the key expired and will not be renewed (fixed expiresAt or rotation policy Disabled).
	ReasonExpired ConditionReason = "Expired"
	// ReasonDisabled: spec.disabled is true; every key of the APIKey is rejected.
	ReasonDisabled ConditionReason = "Disabled"
	// ReasonSecretConflict: a Secret with the target name exists and Keyward does not own it.
	ReasonSecretConflict ConditionReason = "SecretConflict"
	// ReasonSecretUnwritable: the Secret is this APIKey's but cannot be written (it is immutable, or writes
	// to it fail). Revocations still take effect in status; the new key follows once the Secret can be written.
	ReasonSecretUnwritable ConditionReason = "SecretUnwritable"
	// ReasonInvalidSpec: the spec passed CRD validation but cannot be acted on.
	ReasonInvalidSpec ConditionReason = "InvalidSpec"
	// ReasonPreviousKeyInUse: the reason of ConditionPreviousKeyInUse.
	ReasonPreviousKeyInUse ConditionReason = "PreviousKeyInUse"
	// ReasonPolicyViolation: the reason of ConditionPolicyViolation.
	ReasonPolicyViolation ConditionReason = "PolicyViolation"
	// ReasonAwaitingApproval: the spec asks for a scope that an APIKeyPolicy's approvalRequiredScopes names,
	// and no approval covers the spec as it is. No key is minted without one; a key approved earlier keeps
	// working with what its approval covers.
	ReasonAwaitingApproval ConditionReason = "AwaitingApproval"
	// ReasonApprovalDenied: an approver denied the spec as it is (status.approval.denied). Stalled until the
	// spec changes, which asks again; a key approved earlier keeps working with what its approval covers.
	ReasonApprovalDenied ConditionReason = "ApprovalDenied"
	// ReasonKeyLeaked: the reason of ConditionKeyLeaked.
	ReasonKeyLeaked ConditionReason = "KeyLeaked"
)

// RotationReason says why a key was minted; it is recorded in status.lastRotationReason and in the Secret.
type RotationReason string

// Why a key is minted.
const (
	// RotationInitial: the APIKey had no key yet.
	RotationInitial RotationReason = "Initial"
	// RotationExpiring: the renewal time of an Auto rotation was reached.
	RotationExpiring RotationReason = "Expiring"
	// RotationManual: the keyward.dev/rotate annotation holds a new value.
	RotationManual RotationReason = "Manual"
	// RotationRevoked: the keyward.dev/revoke annotation names the current key.
	RotationRevoked RotationReason = "Revoked"
	// RotationSecretMissing: the Secret holding the key was deleted.
	RotationSecretMissing RotationReason = "SecretMissing"
	// RotationSecretTampered: someone other than Keyward changed the key or its record in the Secret.
	RotationSecretTampered RotationReason = "SecretTampered"
	// RotationLeaked: a key was reported leaked under leakResponse Disable; every key was withdrawn, and the
	// next one is minted for a new keyward.dev/rotate value.
	RotationLeaked RotationReason = "Leaked"
)

// EventReason is the reason of a Kubernetes event Keyward records on an APIKey; users and alerts filter on it.
// The key controller's events come from one table (internal/announce), one entry per transition.
type EventReason string

// Event reasons, emitted on transitions only.
const (
	// EventKeyCreated: the first key was minted.
	EventKeyCreated EventReason = "KeyCreated"
	// EventKeyRotated: a new key replaced the current one (renewal, manual rotation, or after a withdrawal).
	EventKeyRotated EventReason = "KeyRotated"
	// EventKeyRevoked: keyward.dev/revoke stopped keys at once (the current one replaced, or previous ones).
	EventKeyRevoked EventReason = "KeyRevoked"
	// EventSecretRecreated: the Secret was deleted; a new key was minted into a new one.
	EventSecretRecreated EventReason = "SecretRecreated"
	// EventSecretTampered: someone else changed the key or its record in the Secret; a new key replaced it.
	EventSecretTampered EventReason = "SecretTampered"
	// EventStatusRestored: status showed a key record Keyward did not sign; it was put back.
	EventStatusRestored EventReason = "StatusRestored"
	// EventKeyExpired: the key expired and is not renewed.
	EventKeyExpired EventReason = "KeyExpired"
	// EventKeyDisabled: spec.disabled turned every key of the APIKey off.
	EventKeyDisabled EventReason = "KeyDisabled"
	// EventKeyEnabled: spec.disabled was cleared; the same key works again.
	EventKeyEnabled EventReason = "KeyEnabled"
	// EventSecretConflict: the Secret is not this APIKey's to use (ReasonSecretConflict).
	EventSecretConflict EventReason = "SecretConflict"
	// EventInvalidSpec: the spec cannot be acted on (ReasonInvalidSpec).
	EventInvalidSpec EventReason = "InvalidSpec"
	// EventKeyWithdrawn: status stopped accepting the current key before its successor could be written.
	EventKeyWithdrawn EventReason = "KeyWithdrawn"
	// EventSecretUnwritable: the Secret is this APIKey's but cannot be written (ReasonSecretUnwritable).
	EventSecretUnwritable EventReason = "SecretUnwritable"
	// EventPreviousKeysDropped: a mint dropped the oldest previous keys beyond the most a record keeps (10).
	EventPreviousKeysDropped EventReason = "PreviousKeysDropped"
	// EventPreviousKeyInUse: a previous key whose grace period is about to end was used recently.
	EventPreviousKeyInUse EventReason = "PreviousKeyInUse"
	// EventPolicyViolation: the APIKey now breaks an APIKeyPolicy that selects its namespace (a policy was
	// created or changed, or the namespace relabelled, after the APIKey was).
	EventPolicyViolation EventReason = "PolicyViolation"
	// EventApprovalRequested: the APIKey now waits for an approval (ReasonAwaitingApproval).
	EventApprovalRequested EventReason = "ApprovalRequested"
	// EventApproved: an approver approved the spec; what the approval covers is in effect.
	EventApproved EventReason = "Approved"
	// EventApprovalDenied: an approver denied the spec (ReasonApprovalDenied).
	EventApprovalDenied EventReason = "ApprovalDenied"
	// EventKeyLeaked: a key of the APIKey was reported leaked; the note says where and what was done.
	EventKeyLeaked EventReason = "KeyLeaked"
)
