// Package controllers holds Keyward's reconcilers. They orchestrate; the decisions live in internal/policy,
// the key format in internal/keys and the key record (Secret and status, signed) in internal/keyrecord.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/announce"
	"github.com/keyward-dev/keyward/internal/approval"
	"github.com/keyward-dev/keyward/internal/guardrail"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/period"
	"github.com/keyward-dev/keyward/internal/policy"
)

// DefaultConflictRecheckInterval is how soon an APIKey stalled on a Secret it does not own looks again the
// first time; a lasting conflict waits longer (policy.ConflictBackoff).
// Foreign Secrets are not in the cache (it holds only Keyward's), so their removal sends no event.
const DefaultConflictRecheckInterval = 30 * time.Second

// DefaultMaxConcurrentReconciles is how many APIKeys the manager reconciles at once. Each reconcile is a
// couple of API round trips, so a few workers keep a burst of new APIKeys from queueing behind each other.
const DefaultMaxConcurrentReconciles = 4

// APIKeyReconciler mints keys into Secrets and keeps them valid through time: renewal, manual rotation,
// revocation, recovery of deleted or edited Secrets, expiry and disabling.
type APIKeyReconciler struct {
	// Client reads from the manager's cache (which holds only Keyward's Secrets) and writes to the API server.
	Client client.Client
	// APIReader reads from the API server directly, to tell a foreign Secret from a cache that lags.
	APIReader client.Reader
	// Clock gives the current time; tests use a fake clock.
	Clock clock.PassiveClock
	// Random is the source of key randomness: crypto/rand.Reader in production.
	Random io.Reader
	// Signer signs every record Keyward writes and tells them from records someone else wrote.
	Signer *keyrecord.Signer
	// Events records Kubernetes events.
	Events events.EventRecorder
	// ConflictRecheckInterval defaults to DefaultConflictRecheckInterval.
	ConflictRecheckInterval time.Duration
	// JudgePolicies judges each APIKey against the APIKeyPolicies that select its namespace and reports
	// what it breaks (the PolicyViolation condition). It needs to read namespaces cluster-wide, so the
	// manager turns it off in namespaced mode.
	JudgePolicies bool
	// DefaultLeakResponse is what a leak report does to an APIKey without spec.leakResponse; Rotate when "".
	DefaultLeakResponse keywardv1alpha1.LeakResponse

	// secrets owns every Secret write, status every status write but the deletion's, and mints every new
	// key's event; set up in SetupWithManager.
	secrets *SecretWriter
	status  *StatusWriter
	mints   *MintAnnouncer
}

// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/status,verbs=patch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile observes an APIKey and its Secret, plans with the policy, applies the plan to the Secret and
// reports it in status (one patch at most), events and metrics.
func (r *APIKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ak := &keywardv1alpha1.APIKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, ak); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ak.DeletionTimestamp.IsZero() {
		// The Secret is owned by the APIKey and goes with it through garbage collection; what is left is to
		// announce the deletion, which the delivery controller sends before it lets the APIKey go.
		return ctrl.Result{}, r.queueDeletion(ctx, ak)
	}
	if err := r.holdForWebhook(ctx, ak); err != nil {
		return ctrl.Result{}, err
	}
	now := r.Clock.Now().UTC()
	obs, err := r.observe(ctx, ak, now)
	var plan policy.Plan
	var done applied
	if err != nil {
		done = failed(err)
	} else {
		plan = policy.PlanFor(obs.Observation)
		done = r.apply(ctx, ak, obs, plan)
	}
	if errors.Is(done.err, errAPIKeyGone) {
		return ctrl.Result{}, nil // the cache showed an APIKey the API server no longer has: nothing to report
	}
	return r.report(ctx, ak, obs, plan, done)
}

// errAPIKeyGone is apply's answer when the APIKey the cache showed is gone from the API server.
var errAPIKeyGone = errors.New("the APIKey is gone")

// stillThere asks the API server whether ak (by UID) exists and is not being deleted. A Secret's deletion
// can reach the cache before its APIKey's: a reconcile of the deleted APIKey from that cache would find the
// Secret missing and write it again, for an owner that is gone, where an APIKey of the same name (or another
// naming that Secret) would then find a Secret it may not use until garbage collection removes it.
func (r *APIKeyReconciler) stillThere(ctx context.Context, ak *keywardv1alpha1.APIKey) (bool, error) {
	live := &keywardv1alpha1.APIKey{}
	switch err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(ak), live); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading APIKey %s from the API server: %w", ak.Name, err)
	}
	return live.UID == ak.UID && live.DeletionTimestamp.IsZero(), nil
}

// observed is what observe found: the policy's observation plus what apply and report need.
type observed struct {
	policy.Observation
	subject keyrecord.Subject
	// secret is the existing Secret (nil when missing); key is its key when genuine.
	secret *corev1.Secret
	key    string
	// tamper says what was changed in a tampered Secret.
	tamper error
}

// observe reads the spec, the signed record in status and the Secret, and judges the Secret.
func (r *APIKeyReconciler) observe(ctx context.Context, ak *keywardv1alpha1.APIKey, now time.Time) (observed, error) {
	o := observed{subject: SubjectOf(ak)}
	o.Now = now
	o.Status, o.Generation, o.SecretName = ak.Status, ak.Generation, o.subject.Secret
	o.Spec, o.SpecError = policy.Resolve(ak.Spec)
	o.RotateToken = ak.Annotations[keywardv1alpha1.RotateAnnotation]
	o.Revoke = policy.ParseKeyIDs(ak.Annotations[keywardv1alpha1.RevokeAnnotation])
	// What a report does is the planner's (policy.Observation.Leaks): a reported key is revoked through the
	// revocation path, which stops it whatever state the Secret is in.
	o.Leaks, o.LeakResponse = ak.Status.Leaks, r.leakResponse(ak)
	o.ConflictRecheck = r.conflictRecheckInterval()
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil &&
		c.Reason == string(keywardv1alpha1.ReasonSecretConflict) {
		o.ConflictSince = c.LastTransitionTime.Time
	}
	if ak.Status.Webhook != nil {
		o.ExpiringNotified = ak.Status.Webhook.ExpiringNotifiedRevision
	}
	if u := ak.Status.Usage; u != nil {
		o.LastUsed = map[string]time.Time{}
		for _, k := range u.Keys {
			if k.LastUsedAt != nil {
				o.LastUsed[k.KeyID] = k.LastUsedAt.Time
			}
		}
	}
	if r.JudgePolicies {
		j, err := r.judgePolicies(ctx, ak)
		if err != nil {
			return o, err
		}
		o.PolicyViolations, o.Approval = j.violations, j.approval
		if o.Approval.Granted {
			// A change waits for its approval: what is minted meanwhile is what the approval covers.
			o.Spec, o.SpecError = policy.Resolve(approval.Apply(j.spec, j.approved))
		}
		o.Spec.MaxValidity = j.maxValidity
	}
	var genuine bool
	if o.LastKnown, genuine = keyrecord.GenuineStatus(ak.Status, r.Signer, o.subject); !genuine {
		if claimed := keyrecord.FromStatus(ak.Status); !claimed.IsZero() {
			o.ForgedStatus = []string{"status.recordSignature"}
		}
	}

	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: o.subject.Secret}, s); err != nil {
		if apierrors.IsNotFound(err) {
			o.Secret = policy.SecretMissing
			if !o.ConflictSince.IsZero() {
				// The Secret was someone else's: one read says whether it still is, where a create would fail
				// and cost the read anyway.
				var foreign *foreignSecretError
				if err := r.secrets.explainExisting(ctx, ak, o.subject.Secret); errors.As(err, &foreign) {
					o.Secret, o.Conflict = policy.SecretConflict, foreign.why
				}
			}
			return o, nil
		}
		return o, fmt.Errorf("reading Secret %s: %w", o.subject.Secret, err)
	}
	if verdict, conflict := ownershipOf(ak, s); verdict != policy.Ours {
		o.Secret, o.Conflict = policy.SecretConflict, conflict
		return o, nil
	}
	o.secret = s
	if s.Immutable != nil && *s.Immutable {
		o.Unwritable = fmt.Sprintf("Secret %s is immutable (immutable: true), so Keyward cannot write a new key or record there. "+
			"An immutable Secret can only be deleted: delete it and Keyward writes the key into a new one", s.Name)
	}
	claim := keyrecord.ReadSecret(s)
	signedFor := o.subject
	if metav1.GetControllerOf(s) == nil && o.LastKnown.IsZero() {
		// Adopting an orphan (the ownership rule allowed it): its record was signed for the APIKey it outlived,
		// whose key the adopt annotation asks to keep. Once adopted, the record is signed for this APIKey,
		// and an orphan planted later fails against what status then shows.
		signedFor.UID, signedFor.Created = claim.SignedFor, time.Time{}
	}
	switch err := claim.Check(r.Signer, signedFor, o.LastKnown, now); {
	case errors.Is(err, keyrecord.ErrSuperseded):
		o.Secret = policy.SecretSuperseded
		return o, nil
	case err != nil:
		o.Secret, o.tamper = policy.SecretTampered, err
		return o, nil //nolint:nilerr // a tampered Secret is an observation, which the plan answers with a new key
	}
	o.Secret, o.Current, o.key, o.SecretKeyHint = policy.SecretGenuine, claim.Record, claim.Key, keys.Hint(claim.Key)
	if len(o.ForgedStatus) > 0 {
		o.ForgedStatus = keyrecord.Changed(keyrecord.FromStatus(ak.Status), displayed(claim.Record, now), keyrecord.StatusFields)
	}
	return o, nil
}

// judged is what the APIKeyPolicies that select an APIKey's namespace say of it.
type judged struct {
	// violations are how the spec breaks them, worded as admission words it; maxValidity is the strictest
	// maxValidity among them (which caps the next key).
	violations  []string
	maxValidity period.Period
	// approval is what their approvalRequiredScopes ask and what approvers decided; spec the full spec.
	approval policy.Approval
	spec     keywardv1alpha1.APIKeySpec
	approved *keywardv1alpha1.ApprovalDecision
}

// judgePolicies judges the APIKey against the APIKeyPolicies that select its namespace. The cache keeps
// neither the scopes nor the rate limit of an APIKey, so when a policy applies the spec is read from the API
// server: one read, only in namespaces some policy selects.
func (r *APIKeyReconciler) judgePolicies(ctx context.Context, ak *keywardv1alpha1.APIKey) (judged, error) {
	// With no policy that applies, an approval record is obsolete: none asks for it any more.
	none := judged{approval: policy.Approval{Obsolete: ak.Status.Approval != nil}}
	var all keywardv1alpha1.APIKeyPolicyList
	if err := r.Client.List(ctx, &all); err != nil {
		return judged{}, fmt.Errorf("listing APIKeyPolicies: %w", err)
	}
	if len(all.Items) == 0 {
		return none, nil
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Client.Get(ctx, types.NamespacedName{Name: ak.Namespace}, ns); err != nil {
		return judged{}, fmt.Errorf("reading namespace %s: %w", ak.Namespace, err)
	}
	applying := guardrail.Applying(all.Items, ns.Labels)
	if len(applying) == 0 {
		return none, nil
	}
	full := &keywardv1alpha1.APIKey{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(ak), full); err != nil {
		return judged{}, fmt.Errorf("reading the APIKey's spec: %w", err)
	}
	out := judged{spec: full.Spec}
	for _, v := range guardrail.Check(applying, full.Spec, full.CreationTimestamp.Time) {
		out.violations = append(out.violations, v.String())
	}
	out.maxValidity, _ = period.Parse(guardrail.StrictestMaxValidity(applying)) // "" parses to an error: no cap
	out.approval = approvalOf(guardrail.ApprovalRequired(applying, full.Spec), full)
	if full.Status.Approval != nil {
		out.approved = full.Status.Approval.Approved
	}
	return out, nil
}

// approvalOf is what the policies' requirement and the approvers' decisions (full's status.approval, read
// from the API server) mean for full's spec as it is. A denial does not withdraw an approval that covers
// the same spec.
func approvalOf(req guardrail.Requirement, full *keywardv1alpha1.APIKey) policy.Approval {
	decided := full.Status.Approval
	if !req.Needed() {
		return policy.Approval{Obsolete: decided != nil}
	}
	a := policy.Approval{Scopes: req.Scopes, Policies: req.Policies, SelfApproval: req.SelfApproval,
		RequestedBy: full.Annotations[keywardv1alpha1.RequestedByAnnotation]}
	if decided == nil {
		return a
	}
	a.Approved = approval.Covers(decided.Approved, full.Spec)
	a.Granted = !a.Approved && decided.Approved != nil
	if !a.Approved && approval.Covers(decided.Denied, full.Spec) {
		a.Denied = decided.Denied
	}
	return a
}

// leakResponse is ak's spec.leakResponse, else the manager's default, else Rotate.
func (r *APIKeyReconciler) leakResponse(ak *keywardv1alpha1.APIKey) keywardv1alpha1.LeakResponse {
	switch {
	case ak.Spec.LeakResponse != "":
		return ak.Spec.LeakResponse
	case r.DefaultLeakResponse != "":
		return r.DefaultLeakResponse
	}
	return keywardv1alpha1.LeakResponseRotate
}

// SubjectOf is what the records of ak's key are signed for: ak, by name and UID, and its Secret.
func SubjectOf(ak *keywardv1alpha1.APIKey) keyrecord.Subject {
	return keyrecord.Subject{Namespace: ak.Namespace, APIKey: ak.Name, Secret: SecretNameOf(ak), UID: string(ak.UID),
		Created: ak.CreationTimestamp.Time}
}

// displayed is a record as status shows it at now: without the previous keys that have ended.
func displayed(r keyrecord.Record, now time.Time) keyrecord.Record {
	r.Previous = keyrecord.LivePrevious(r.Previous, now)
	return r
}

// ownershipOf judges, with the policy's one rule, whose the Secret s is from ak's point of view.
func ownershipOf(ak *keywardv1alpha1.APIKey, s *corev1.Secret) (policy.Ownership, string) {
	return policy.JudgeSecret(policy.SecretClaim{APIKey: ak.Name, UID: string(ak.UID),
		Adopt:  ak.Annotations[keywardv1alpha1.AdoptOrphanAnnotation] == "true",
		Secret: s.Name, Label: keyrecord.SecretOwner(s), Controller: metav1.GetControllerOf(s)})
}

// applied is what apply did: the write's outcome for policy.Settle, and the error to retry on.
type applied struct {
	policy.WriteResult
	err error
}

// failed is a write that failed, or could not be tried, with err.
func failed(err error) applied {
	return applied{WriteResult: policy.WriteResult{Outcome: policy.WriteFailed, Detail: err.Error()}, err: err}
}

// apply mints the key the plan asks for and writes the Secret through the SecretWriter.
func (r *APIKeyReconciler) apply(ctx context.Context, ak *keywardv1alpha1.APIKey, o observed, plan policy.Plan) applied {
	if !plan.WriteSecret {
		return applied{WriteResult: policy.WriteResult{Outcome: policy.WriteNotAttempted}}
	}
	key, rec := o.key, plan.Record
	if plan.Mint != nil && plan.Mint.Reason == keywardv1alpha1.RotationSecretMissing {
		// Recreating a deleted Secret: only for an APIKey that is still there (see stillThere). A new
		// APIKey's first Secret needs no such look: the cache showed it created, not deleted.
		switch there, err := r.stillThere(ctx, ak); {
		case err != nil:
			return failed(err)
		case !there:
			return applied{err: errAPIKeyGone}
		}
	}
	if plan.Mint != nil {
		var err error
		if key, err = keys.Generate(o.Spec.Prefix, r.Random); err != nil {
			return failed(fmt.Errorf("minting a key: %w", err))
		}
		rec.Hash = keys.Hash(key)
	}
	wrote, err := r.secrets.Write(ctx, ak, o.secret, o.subject, keyrecord.Contents{
		APIKeyName: ak.Name, Template: ak.Spec.SecretTemplate, Key: key, Record: rec})
	switch {
	case errors.As(err, new(*foreignSecretError)):
		return applied{WriteResult: policy.WriteResult{Outcome: policy.WriteConflict, Detail: err.Error()}}
	case errors.Is(err, errCacheLag):
		return applied{WriteResult: policy.WriteResult{Outcome: policy.WriteCacheLag, Detail: "Waiting for the cache to show Secret " + o.subject.Secret}}
	case err != nil:
		return failed(err)
	}
	if wrote && plan.Mint == nil {
		log.FromContext(ctx).Info("Updated the Secret's metadata and record; the key is unchanged",
			"secret", klog.KRef(ak.Namespace, o.subject.Secret), "keyID", keys.IDFromHash(rec.Hash))
	}
	return applied{WriteResult: policy.WriteResult{Outcome: policy.Written, Record: rec, KeyHint: keys.Hint(key)}}
}

// report settles what status shows and reports (policy.Settle), queues the webhook events and announces the
// new key of its transitions, writes status (one patch, only when it changed) and records events.
func (r *APIKeyReconciler) report(ctx context.Context, ak *keywardv1alpha1.APIKey, o observed, plan policy.Plan, done applied) (ctrl.Result, error) {
	out := policy.Settle(o.Observation, plan, done.WriteResult)
	before := ak.DeepCopy()
	ak.Status = out.Status
	if out.SignRecord {
		keyrecord.SignStatus(&ak.Status, r.Signer, o.subject)
	}
	// The webhook events go out with the status write that shows what they describe.
	r.queueWebhookEvents(ctx, ak, out.Transitions, done, o.Now)
	// A new key is announced before the write that shows it, under a name of its own, so that whoever
	// writes that status (a retry, a new leader) announces it once.
	var f announce.Facts
	if len(out.Transitions) > 0 { // most reconciles change nothing, and announce nothing
		f = facts(ak, o, plan, done.Record)
	}
	r.announceMints(ctx, ak, f, out.Transitions)
	if !equality.Semantic.DeepEqual(before.Status, ak.Status) {
		if err := r.status.Patch(ctx, ak, before); err != nil {
			return ctrl.Result{}, errors.Join(done.err, fmt.Errorf("patching status: %w", err))
		}
	}
	r.recordEvents(ctx, ak, f, out.Transitions)
	return ctrl.Result{RequeueAfter: out.Requeue}, done.err
}

// holdForWebhook adds the webhook finalizer to an APIKey with a webhook, so that key.deleted can be sent
// before it is gone. The delivery controller removes it.
func (r *APIKeyReconciler) holdForWebhook(ctx context.Context, ak *keywardv1alpha1.APIKey) error {
	if ak.Spec.Webhook == nil || controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) {
		return nil
	}
	if err := setWebhookFinalizer(ctx, r.Client, r.APIReader, client.ObjectKeyFromObject(ak), true); err != nil {
		return fmt.Errorf("adding the webhook finalizer: %w", err)
	}
	return nil
}

// queueDeletion queues key.deleted once for an APIKey being deleted that its webhook finalizer holds.
func (r *APIKeyReconciler) queueDeletion(ctx context.Context, ak *keywardv1alpha1.APIKey) error {
	if ak.Spec.Webhook == nil || !controllerutil.ContainsFinalizer(ak, keywardv1alpha1.WebhookFinalizer) ||
		(ak.Status.Webhook != nil && ak.Status.Webhook.DeletionQueuedAt != nil) {
		return nil
	}
	before := ak.DeepCopy()
	if ak.Status.Webhook == nil {
		ak.Status.Webhook = &keywardv1alpha1.WebhookStatus{}
	}
	now := metav1.NewTime(r.Clock.Now().UTC().Truncate(time.Second))
	ak.Status.Webhook.DeletionQueuedAt = &now
	notify.Enqueue(ak.Status.Webhook, string(ak.UID), ak.Spec.Webhook.Events, []keywardv1alpha1.WebhookMessage{{
		Type: keywardv1alpha1.WebhookEventKeyDeleted, Timestamp: now, KeyID: ak.Status.KeyID, Revision: ak.Status.Revision}})
	// Only status.webhook changes, which the key controller's watch ignores: no echo to recognise.
	if err := r.Client.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("queueing key.deleted: %w", err)
	}
	return nil
}

// queueWebhookEvents appends to the outbox the webhook events of this status write's transitions, so that
// the events and the change they describe land in one write. Delivered messages are pruned on the way.
func (r *APIKeyReconciler) queueWebhookEvents(ctx context.Context, ak *keywardv1alpha1.APIKey, ts []policy.Transition, done applied, now time.Time) {
	st := &ak.Status
	if ak.Spec.Webhook == nil || done.err != nil {
		if st.Webhook != nil {
			notify.Prune(st.Webhook)
		}
		return
	}
	if st.Webhook == nil {
		st.Webhook = &keywardv1alpha1.WebhookStatus{}
	}
	events := notify.Messages(ts, *st, now)
	if slices.ContainsFunc(ts, func(t policy.Transition) bool { return t.Kind == policy.TransitionKeyExpiring }) {
		st.Webhook.ExpiringNotifiedRevision = done.Record.Revision
	}
	if dropped := notify.Enqueue(st.Webhook, string(ak.UID), ak.Spec.Webhook.Events, events); dropped > 0 {
		log.FromContext(ctx).Info("The webhook outbox is full; dropped the oldest undelivered events", "dropped", dropped)
	}
}

// facts are what the announcements of this status write name beyond their transitions (announce.Facts).
func facts(ak *keywardv1alpha1.APIKey, o observed, plan policy.Plan, rec keyrecord.Record) announce.Facts {
	f := announce.Facts{Secret: o.subject.Secret, KeyID: ak.Status.KeyID, Revision: ak.Status.Revision, Ready: readyMessage(ak),
		Tampered: changedParts(o.tamper), DroppedByZeroGrace: plan.DroppedByZeroGrace}
	if o.tamper != nil {
		f.TamperError = o.tamper.Error()
	}
	replaced := ""
	if plan.Mint != nil { // nil when the Secret holds a key a manager wrote before it died, short of status
		replaced = plan.Mint.Replaced.Hash
	}
	f.ReplacedFate = replacedFate(replaced, rec)
	return f
}

// logTransition logs what the announcement of t says, with the transition's IDs; never the key.
func logTransition(ctx context.Context, ak *keywardv1alpha1.APIKey, t policy.Transition, message string) {
	kv := []any{"secret", klog.KRef(ak.Namespace, SecretNameOf(ak)), "transition", t.Kind, "keyID", ak.Status.KeyID, "revision", ak.Status.Revision}
	for _, f := range []struct {
		name  string
		value any
		set   bool
	}{
		{"reason", t.Reason, t.Reason != ""}, {"previousKeyID", t.PreviousKeyID, t.PreviousKeyID != ""},
		{"revoked", t.Revoked, len(t.Revoked) > 0}, {"dropped", t.Dropped, len(t.Dropped) > 0}, {"fields", t.Fields, len(t.Fields) > 0},
	} {
		if f.set {
			kv = append(kv, f.name, f.value)
		}
	}
	log.FromContext(ctx).Info(message, kv...)
}

// recordEvents records, as the announcement table says, the Kubernetes events of this status write's
// transitions but its mints (announceMints). None of it contains the key.
func (r *APIKeyReconciler) recordEvents(ctx context.Context, ak *keywardv1alpha1.APIKey, f announce.Facts, ts []policy.Transition) {
	for _, t := range ts {
		a := announce.Of(t.Kind)
		if a.Event == nil || a.Mint {
			continue
		}
		if a.Event.Log != nil {
			logTransition(ctx, ak, t, a.Event.Log(t, f))
		}
		r.event(ak, a.Event.Type, a.Event.Reason, a.Event.Action, "%s", a.Event.Note(t, f))
	}
}

// announceMints announces, through the MintAnnouncer, each new current key among ts, and logs it once.
func (r *APIKeyReconciler) announceMints(ctx context.Context, ak *keywardv1alpha1.APIKey, f announce.Facts, ts []policy.Transition) {
	for _, t := range ts {
		a := announce.Of(t.Kind)
		if !a.Mint || a.Event == nil {
			continue
		}
		first, err := r.mints.Announce(ctx, ak, mintAnnouncement{revision: ak.Status.Revision, reason: t.Reason,
			eventType: a.Event.Type, eventReason: a.Event.Reason, action: a.Event.Action, note: a.Event.Note(t, f)})
		switch {
		case err != nil:
			log.FromContext(ctx).Error(err, "Announcing a new key failed; the key is in place", "keyID", ak.Status.KeyID, "revision", ak.Status.Revision)
		case first:
			logTransition(ctx, ak, t, a.Event.Log(t, f))
		}
	}
}

// changedParts lists what a *keyrecord.TamperedError names.
func changedParts(err error) string {
	var t *keyrecord.TamperedError
	if errors.As(err, &t) {
		return keyrecord.JoinNames(t.Changed)
	}
	return "unknown change"
}

func replacedFate(replacedHash string, rec keyrecord.Record) string {
	if replacedHash == "" {
		return "no earlier key that Keyward signed is known, so none stays valid"
	}
	return "the last genuine key " + keys.IDFromHash(replacedHash) + " " + previousValidity(rec, replacedHash)
}

// previousValidity says until when the replaced key stays valid.
func previousValidity(rec keyrecord.Record, replacedHash string) string {
	for _, p := range rec.Previous {
		if p.Hash == replacedHash {
			return "stays valid until " + p.ValidUntil.UTC().Format(time.RFC3339)
		}
	}
	return "is no longer valid"
}

func (r *APIKeyReconciler) event(ak *keywardv1alpha1.APIKey, eventType string, reason keywardv1alpha1.EventReason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(ak, nil, eventType, string(reason), action, note, args...)
	}
}

func (r *APIKeyReconciler) conflictRecheckInterval() time.Duration {
	if r.ConflictRecheckInterval > 0 {
		return r.ConflictRecheckInterval
	}
	return DefaultConflictRecheckInterval
}

// SecretNameOf is the Secret an APIKey's key goes to: spec.secretName, or the APIKey's own name.
func SecretNameOf(ak *keywardv1alpha1.APIKey) string {
	if ak.Spec.SecretName != "" {
		return ak.Spec.SecretName
	}
	return ak.Name
}

func readyMessage(ak *keywardv1alpha1.APIKey) string {
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}
