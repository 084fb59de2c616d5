package v1alpha1

// Annotations and labels that Keyward reads or writes. Everything under keyward.dev/ is reserved.
const (
	// RotateAnnotation asks for a manual rotation: any value different from status.lastHandledRotateToken
	// mints a new key once. Keyward never removes it, so GitOps tools see no drift.
	RotateAnnotation = "keyward.dev/rotate"

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
)

// Condition reasons.
const (
	// ReasonKeyReady: a valid key is in place.
	ReasonKeyReady = "KeyReady"
	// ReasonProgressing: Keyward is minting or recording a key.
	ReasonProgressing = "Progressing"
	// ReasonExpired: the key expired and will not be renewed (fixed expiresAt or rotation policy Disabled).
	ReasonExpired = "Expired"
	// ReasonDisabled: spec.disabled is true; every key of the APIKey is rejected.
	ReasonDisabled = "Disabled"
	// ReasonSecretConflict: a Secret with the target name exists and Keyward does not own it.
	ReasonSecretConflict = "SecretConflict"
	// ReasonInvalidSpec: the spec passed CRD validation but cannot be acted on.
	ReasonInvalidSpec = "InvalidSpec"
)
