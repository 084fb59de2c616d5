package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIKeyPolicySpec constrains the APIKeys of the namespaces it selects. Every field is optional; an unset
// field constrains nothing. When several policies select a namespace, every one of them applies, so the
// strictest bound wins.
// +kubebuilder:validation:XValidation:rule="!has(self.maxRateLimit) || !has(self.maxRateLimit.requests) == !has(self.maxRateLimit.period)",message="maxRateLimit: requests and period go together"
type APIKeyPolicySpec struct {
	// NamespaceSelector selects, by their labels, the namespaces whose APIKeys this policy constrains. Empty
	// or unset selects every namespace. Whoever may label a namespace decides which policies apply there:
	// keep that to cluster admins.
	// +optional
	NamespaceSelector *PolicyNamespaceSelector `json:"namespaceSelector,omitempty"`

	// MaxValidity is the longest a key may be valid: spec.validity (90d when unset) may not be longer, and a
	// fixed spec.expiresAt may not lie further than this after the APIKey's creation. Compared across units,
	// a month in the key's validity counts as 31 days and in this bound as 28 (a year as 366 and 365).
	// +optional
	MaxValidity Duration `json:"maxValidity,omitempty"`

	// RequireAutoRotation, when true, refuses APIKeys that are never renewed: a fixed spec.expiresAt, or
	// spec.rotation.policy Disabled.
	// +optional
	RequireAutoRotation bool `json:"requireAutoRotation,omitempty"`

	// MaxGracePeriod is the longest spec.rotation.gracePeriod (1h when unset) may be.
	// +optional
	MaxGracePeriod Duration `json:"maxGracePeriod,omitempty"`

	// AllowedScopes are patterns, written as scopes are ("orders:*", "*:read", "reports:read"), that every
	// scope of an APIKey must fall under: a "*" segment covers one segment, a trailing "*" one or more, and
	// "*" alone everything. A key's own wildcard falls under a pattern only when the pattern's wildcard
	// covers it ("orders:*" allows "orders:*" and "orders:read", not "*"). Unset allows every scope; an
	// empty list allows none.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	AllowedScopes []Scope `json:"allowedScopes,omitempty"`

	// ApprovalRequiredScopes are patterns, written as allowedScopes are, of scopes that a key gets only once
	// someone holding the approve verb on apikeys in its namespace approved (kubectl keyward approve). An
	// APIKey asking for one is accepted but not minted until then; a later change of its scopes, validity,
	// expiresAt or rate limit waits for a new approval while the approved key keeps working. At most 32.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +optional
	ApprovalRequiredScopes []Scope `json:"approvalRequiredScopes,omitempty"`

	// AllowSelfApproval lets the author of a change approve it. Off by default: whoever last changed what an
	// approval covers (the keyward.dev/requested-by annotation) may not approve it. When several policies
	// require approval of an APIKey, self-approval needs every one of them to allow it.
	// +optional
	AllowSelfApproval bool `json:"allowSelfApproval,omitempty"`

	// MaxRateLimit is the most requests per period an APIKey may be allowed: its spec.rateLimit may not
	// allow more per second on average. With required, an APIKey must have a rate limit.
	// +optional
	MaxRateLimit *PolicyRateLimit `json:"maxRateLimit,omitempty"`

	// AllowedPrefixes are the key prefixes (spec.prefix, "kw" when unset) APIKeys may use. Unset allows any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Pattern=`^[a-z][a-z0-9]{1,15}$`
	AllowedPrefixes []string `json:"allowedPrefixes,omitempty"`
}

// PolicyNamespaceSelector is a label selector of namespaces, as metav1.LabelSelector, with its operators
// and sizes checked at apply time so that a policy never fails open on a selector it cannot read.
// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions: In and NotIn need values; Exists and DoesNotExist take none"
type PolicyNamespaceSelector struct {
	// MatchLabels selects namespaces that carry every one of these labels.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// MatchExpressions selects namespaces whose labels meet every one of these requirements.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []PolicyNamespaceRequirement `json:"matchExpressions,omitempty"`
}

// PolicyNamespaceRequirement is one requirement on a namespace label, as metav1.LabelSelectorRequirement.
type PolicyNamespaceRequirement struct {
	// Key is the label key.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +required
	Key string `json:"key"`
	// Operator is In, NotIn, Exists or DoesNotExist.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	// +required
	Operator metav1.LabelSelectorOperator `json:"operator"`
	// Values are the label values In and NotIn compare with.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	Values []string `json:"values,omitempty"`
}

// PolicyRateLimit bounds the rate limit of an APIKey.
type PolicyRateLimit struct {
	// Requests per Period is the most an APIKey's rate limit may allow, compared as an average rate.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Requests int32 `json:"requests,omitempty"`
	// Period is the window of Requests, from 1s to 1d.
	// +optional
	Period RatePeriod `json:"period,omitempty"`
	// Required, when true, refuses APIKeys without spec.rateLimit.
	// +optional
	Required bool `json:"required,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=akp,categories=keyward
// +kubebuilder:printcolumn:name="Max validity",type=string,JSONPath=`.spec.maxValidity`
// +kubebuilder:printcolumn:name="Auto rotation",type=boolean,JSONPath=`.spec.requireAutoRotation`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// APIKeyPolicy is a guardrail a platform team sets once: it constrains, at apply time, the APIKeys of the
// namespaces it selects (longest validity, required rotation, longest grace period, allowed scopes, rate
// limits and prefixes). Cluster-scoped; only cluster admins write policies.
type APIKeyPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the policy requires.
	// +required
	Spec APIKeyPolicySpec `json:"spec"`
}

// +kubebuilder:object:root=true

// APIKeyPolicyList is a list of APIKeyPolicy.
type APIKeyPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []APIKeyPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&APIKeyPolicy{}, &APIKeyPolicyList{})
}
