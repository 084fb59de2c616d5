// Package controllers holds Keyward's reconcilers. They orchestrate; the decisions live in internal/policy,
// the key format in internal/keys and the Secret layout in internal/keysecret.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/keysecret"
	"github.com/keyward-dev/keyward/internal/policy"
)

// Event reasons, emitted on transitions only.
const (
	EventKeyCreated      = "KeyCreated"
	EventKeyRotated      = "KeyRotated"
	EventSecretRecreated = "SecretRecreated"
	EventKeyExpired      = "KeyExpired"
	EventKeyDisabled     = "KeyDisabled"
	EventKeyEnabled      = "KeyEnabled"
	EventSecretConflict  = "SecretConflict"
	EventInvalidSpec     = "InvalidSpec"
)

// DefaultConflictRecheckInterval is how often an APIKey stalled on a Secret it does not own looks again.
// Foreign Secrets are not in the cache (it holds only Keyward's), so their removal sends no event.
const DefaultConflictRecheckInterval = 30 * time.Second

// DefaultMaxConcurrentReconciles is how many APIKeys the manager reconciles at once. Each reconcile is a
// couple of API round trips, so a few workers keep a burst of new APIKeys from queueing behind each other.
const DefaultMaxConcurrentReconciles = 4

// APIKeyReconciler mints keys into Secrets and keeps them valid through time: renewal, manual rotation,
// recovery of deleted or edited Secrets, expiry and disabling.
type APIKeyReconciler struct {
	// Client reads from the manager's cache (which holds only Keyward's Secrets) and writes to the API server.
	Client client.Client
	// APIReader reads from the API server directly, to tell a foreign Secret from a cache that lags.
	APIReader client.Reader
	// Clock gives the current time; tests use a fake clock.
	Clock clock.PassiveClock
	// Random is the source of key randomness: crypto/rand.Reader in production.
	Random io.Reader
	// Events records Kubernetes events.
	Events events.EventRecorder
	// ConflictRecheckInterval defaults to DefaultConflictRecheckInterval.
	ConflictRecheckInterval time.Duration

	// ownWrites lets the Secret watch ignore the echo of the reconciler's own writes.
	ownWrites writeLog
}

// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// outcome is what the phases of one reconcile found.
type outcome struct {
	// health is nil when the reconcile stopped before it could judge the key.
	health *policy.Health
	// progressing, when set, makes Reconciling True with this message.
	progressing string
	requeue     time.Duration
	err         error
}

// Reconcile runs the phases for one APIKey and writes status with at most one patch.
func (r *APIKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ak := &keywardv1alpha1.APIKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, ak); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ak.DeletionTimestamp.IsZero() {
		// The Secret is owned by the APIKey and goes with it through garbage collection.
		return ctrl.Result{}, nil
	}
	before := ak.DeepCopy()
	now := r.Clock.Now()

	out := r.reconcileKey(ctx, ak, now)

	setConditions(ak, out, now)
	ak.Status.ObservedGeneration = ak.Generation
	if !equality.Semantic.DeepEqual(before.Status, ak.Status) {
		if err := r.Client.Status().Patch(ctx, ak, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, errors.Join(out.err, fmt.Errorf("patching status: %w", err))
		}
	}
	r.recordTransition(ak, readyReason(before), readyReason(ak))
	return ctrl.Result{RequeueAfter: out.requeue}, out.err
}

// reconcileKey is the ordered phases: resolve the spec, find the Secret, decide, mint or sync, assess.
func (r *APIKeyReconciler) reconcileKey(ctx context.Context, ak *keywardv1alpha1.APIKey, now time.Time) outcome {
	spec, err := policy.Resolve(ak.Spec)
	if err == nil {
		err = spec.Validate(now)
	}
	if err != nil {
		return stalled(keywardv1alpha1.ReasonInvalidSpec, err.Error())
	}
	secretName := SecretNameOf(ak)
	ak.Status.SecretName = secretName

	found, err := r.findSecret(ctx, ak, secretName)
	if err != nil {
		return retry(err)
	}
	if found.conflict != "" {
		out := stalled(keywardv1alpha1.ReasonSecretConflict, found.conflict)
		out.requeue = r.conflictRecheckInterval()
		return out
	}
	if found.state == policy.SecretValid {
		if err := spec.Validate(found.record.IssuedAt); err != nil {
			return stalled(keywardv1alpha1.ReasonInvalidSpec, err.Error())
		}
	}

	lastKnown, lastExpiry := recordFromStatus(ak.Status)
	decision := policy.Decide(policy.Input{
		Now: now, Spec: spec, Secret: found.state, Current: found.record,
		LastKnown: lastKnown, LastKnownExpiry: lastExpiry,
		RotateToken: ak.Annotations[keywardv1alpha1.RotateAnnotation],
	})

	key, record := found.key, found.record
	if decision.Mint {
		if key, err = keys.Generate(spec.Prefix, r.Random); err != nil {
			return retry(fmt.Errorf("minting a key: %w", err))
		}
		record = decision.Next
		record.Hash = keys.Hash(key)
	}
	written, err := r.writeSecret(ctx, ak, found.secret, keysecret.Desired{
		APIKey: ak, Key: key, Record: record, ExpiresAt: spec.ExpiresAt(record.IssuedAt),
	})
	switch {
	case errors.Is(err, errForeignSecret):
		out := stalled(keywardv1alpha1.ReasonSecretConflict, foreignSecretMessage(secretName))
		out.requeue = r.conflictRecheckInterval()
		return out
	case errors.Is(err, errCacheLag):
		return outcome{progressing: "Waiting for the cache to show Secret " + secretName, requeue: time.Second}
	case err != nil:
		return retry(err)
	}
	if decision.Mint {
		r.recordMint(ctx, ak, secretName, record, lastKnown, found)
	} else if written {
		log.FromContext(ctx).Info("Updated the Secret's metadata and derived data; the key is unchanged",
			"secret", klog.KRef(ak.Namespace, secretName), "keyID", keys.IDFromHash(record.Hash))
	}

	setKeyStatus(&ak.Status, spec, key, record, now)
	health := policy.Assess(now, spec, record, ak.Status.KeyID)
	out := outcome{health: &health}
	if next := policy.NextCheck(now, spec, record); !next.IsZero() {
		out.requeue = next.Sub(now)
	}
	return out
}

// foundSecret is what findSecret learned about the key's Secret.
type foundSecret struct {
	secret *corev1.Secret // nil when missing
	state  policy.SecretState
	key    string
	record policy.Key
	// conflict, when set, says why the Secret cannot be used.
	conflict string
	// tamper says what was wrong with a tampered Secret.
	tamper error
}

func (r *APIKeyReconciler) findSecret(ctx context.Context, ak *keywardv1alpha1.APIKey, name string) (foundSecret, error) {
	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return foundSecret{state: policy.SecretMissing}, nil
		}
		return foundSecret{}, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	if owner := keysecret.Owner(s); owner != ak.Name {
		return foundSecret{conflict: fmt.Sprintf("Secret %s belongs to APIKey %s; two APIKeys cannot share a Secret, "+
			"so this one waits until that APIKey is gone", name, owner)}, nil
	}
	if ref := metav1.GetControllerOf(s); ref != nil && (ref.Kind != "APIKey" || ref.Name != ak.Name) {
		return foundSecret{conflict: fmt.Sprintf("Secret %s is controlled by %s %s, not by this APIKey", name, ref.Kind, ref.Name)}, nil
	}
	key, record, err := keysecret.Read(s)
	if err != nil {
		return foundSecret{secret: s, state: policy.SecretTampered, tamper: err}, nil
	}
	return foundSecret{secret: s, state: policy.SecretValid, key: key, record: record}, nil
}

var (
	errForeignSecret = errors.New("a Secret Keyward does not own has that name")
	errCacheLag      = errors.New("the Secret exists but the cache does not show it yet")
)

func foreignSecretMessage(name string) string {
	return fmt.Sprintf("Secret %s exists and Keyward does not own it (it has no %s label); Keyward never overwrites it. "+
		"Delete or rename that Secret, or create an APIKey with another spec.secretName", name, keywardv1alpha1.APIKeyNameLabel)
}

// writeSecret creates the Secret, or updates it when it differs from what it should hold. It reports whether
// it wrote. An existing Secret is updated with its resourceVersion, so a stale cache fails instead of
// overwriting a newer key.
func (r *APIKeyReconciler) writeSecret(ctx context.Context, ak *keywardv1alpha1.APIKey, existing *corev1.Secret, d keysecret.Desired) (bool, error) {
	if existing == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ak.Namespace, Name: ak.Status.SecretName}}
		keysecret.Apply(s, d)
		if err := controllerutil.SetControllerReference(ak, s, r.Client.Scheme()); err != nil {
			return false, fmt.Errorf("setting the owner of Secret %s: %w", s.Name, err)
		}
		r.ownWrites.record(s)
		err := r.Client.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			return false, r.explainExisting(ctx, ak, s.Name)
		}
		if err != nil {
			return false, fmt.Errorf("creating Secret %s: %w", s.Name, err)
		}
		return true, nil
	}
	s := existing.DeepCopy()
	keysecret.Apply(s, d)
	if err := controllerutil.SetControllerReference(ak, s, r.Client.Scheme()); err != nil {
		return false, fmt.Errorf("setting the owner of Secret %s: %w", s.Name, err)
	}
	if equality.Semantic.DeepEqual(existing, s) {
		return false, nil
	}
	r.ownWrites.record(s)
	if err := r.Client.Update(ctx, s); err != nil {
		return false, fmt.Errorf("updating Secret %s: %w", s.Name, err)
	}
	return true, nil
}

// explainExisting asks the API server about a Secret that the cache did not show. A Secret this APIKey
// controls but whose Keyward label someone removed is labelled again, so that the cache sees it.
func (r *APIKeyReconciler) explainExisting(ctx context.Context, ak *keywardv1alpha1.APIKey, name string) error {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ak.Namespace, Name: name}, s); err != nil {
		return fmt.Errorf("reading Secret %s after it already existed: %w", name, err)
	}
	if ref := metav1.GetControllerOf(s); ref != nil && ref.UID == ak.UID && keysecret.Owner(s) == "" {
		base := s.DeepCopy()
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[keywardv1alpha1.APIKeyNameLabel] = ak.Name
		if err := r.Client.Patch(ctx, s, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("restoring the %s label of Secret %s: %w", keywardv1alpha1.APIKeyNameLabel, name, err)
		}
		log.FromContext(ctx).Info("Restored the label that lets Keyward see its Secret", "secret", klog.KObj(s))
		return errCacheLag
	}
	if keysecret.Owner(s) == "" {
		return errForeignSecret
	}
	return errCacheLag
}

// recordMint logs, counts and announces a new key. None of it contains the key.
func (r *APIKeyReconciler) recordMint(ctx context.Context, ak *keywardv1alpha1.APIKey, secret string, rec policy.Key, replaced policy.Key, found foundSecret) {
	id := keys.IDFromHash(rec.Hash)
	logger := log.FromContext(ctx).WithValues("secret", klog.KRef(ak.Namespace, secret), "keyID", id,
		"revision", rec.Revision, "reason", rec.Reason)
	rotationsTotal.WithLabelValues(string(rec.Reason)).Inc()
	switch rec.Reason {
	case policy.ReasonInitial:
		logger.Info("Minted the first key")
		r.event(ak, corev1.EventTypeNormal, EventKeyCreated, "Mint", "Minted key %s (revision %d) into Secret %s", id, rec.Revision, secret)
	case policy.ReasonSecretMissing, policy.ReasonSecretTampered:
		why := "was deleted"
		if found.tamper != nil {
			why = "was changed by someone else (" + found.tamper.Error() + ")"
		}
		logger.Info("Recreated the key's Secret with a new key", "why", why)
		r.event(ak, corev1.EventTypeWarning, EventSecretRecreated, "Mint",
			"Secret %s %s; minted key %s (revision %d); the previous key %s stays valid for the grace period",
			secret, why, id, rec.Revision, keys.IDFromHash(replaced.Hash))
	default:
		logger.Info("Rotated the key")
		prevID := keys.IDFromHash(found.record.Hash)
		r.event(ak, corev1.EventTypeNormal, EventKeyRotated, "Rotate", "Rotated to key %s (revision %d, reason %s); previous key %s %s",
			id, rec.Revision, rec.Reason, prevID, previousValidity(rec, found.record.Hash))
	}
}

func previousValidity(rec policy.Key, prevHash string) string {
	for _, p := range rec.Previous {
		if p.Hash == prevHash {
			return "stays valid until " + p.ValidUntil.UTC().Format(time.RFC3339)
		}
	}
	return "is no longer valid"
}

// recordTransition emits an event when the Ready reason changes to one that people should hear about.
func (r *APIKeyReconciler) recordTransition(ak *keywardv1alpha1.APIKey, from, to string) {
	if from == to {
		return
	}
	msg := readyMessage(ak)
	switch to {
	case keywardv1alpha1.ReasonExpired:
		r.event(ak, corev1.EventTypeWarning, EventKeyExpired, "Expire", "%s", msg)
	case keywardv1alpha1.ReasonDisabled:
		r.event(ak, corev1.EventTypeNormal, EventKeyDisabled, "Disable", "%s", msg)
	case keywardv1alpha1.ReasonSecretConflict:
		r.event(ak, corev1.EventTypeWarning, EventSecretConflict, "Conflict", "%s", msg)
	case keywardv1alpha1.ReasonInvalidSpec:
		r.event(ak, corev1.EventTypeWarning, EventInvalidSpec, "Validate", "%s", msg)
	case keywardv1alpha1.ReasonKeyReady:
		if from == keywardv1alpha1.ReasonDisabled {
			r.event(ak, corev1.EventTypeNormal, EventKeyEnabled, "Enable", "%s", msg)
		}
	}
}

func (r *APIKeyReconciler) event(ak *keywardv1alpha1.APIKey, eventType, reason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(ak, nil, eventType, reason, action, note, args...)
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

// recordFromStatus is the last key that status recorded, used when the Secret is gone or was tampered with.
func recordFromStatus(st keywardv1alpha1.APIKeyStatus) (policy.Key, time.Time) {
	rec := policy.Key{Hash: st.KeyHash, Revision: st.Revision, Reason: policy.Reason(st.LastRotationReason),
		HandledToken: st.LastHandledRotateToken}
	if st.IssuedAt != nil {
		rec.IssuedAt = st.IssuedAt.UTC()
	}
	for _, p := range st.PreviousKeys {
		rec.Previous = append(rec.Previous, policy.PreviousKey{Hash: p.KeyHash, ValidUntil: p.ValidUntil.UTC()})
	}
	var expiry time.Time
	if st.ExpiresAt != nil {
		expiry = st.ExpiresAt.UTC()
	}
	return rec, expiry
}

// setKeyStatus writes everything status says about the key; all of it follows from the Secret and the spec.
func setKeyStatus(st *keywardv1alpha1.APIKeyStatus, spec policy.Spec, key string, rec policy.Key, now time.Time) {
	st.KeyHash = rec.Hash
	st.KeyID = keys.IDFromHash(rec.Hash)
	st.KeyHint = keys.Hint(key)
	st.Revision = rec.Revision
	st.IssuedAt = timePtr(rec.IssuedAt)
	st.ExpiresAt = timePtr(spec.ExpiresAt(rec.IssuedAt))
	st.RenewalTime = timePtr(spec.RenewalTime(rec.IssuedAt))
	st.LastRotationReason = string(rec.Reason)
	st.LastHandledRotateToken = rec.HandledToken
	st.PreviousKeys = nil
	for _, p := range policy.LivePrevious(rec.Previous, now) {
		st.PreviousKeys = append(st.PreviousKeys, keywardv1alpha1.PreviousKey{
			KeyID: keys.IDFromHash(p.Hash), KeyHash: p.Hash, ValidUntil: metav1.NewTime(p.ValidUntil.UTC())})
	}
}

func timePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.UTC())
	return &mt
}

func stalled(reason, message string) outcome {
	return outcome{health: &policy.Health{Reason: reason, Message: message, Stalled: true}}
}

func retry(err error) outcome {
	return outcome{progressing: "Retrying after an error: " + err.Error(), err: err}
}

// setConditions applies kstatus: Ready always; Reconciling and Stalled only while true.
func setConditions(ak *keywardv1alpha1.APIKey, out outcome, now time.Time) {
	set := func(t string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&ak.Status.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason,
			Message: message, ObservedGeneration: ak.Generation, LastTransitionTime: metav1.NewTime(now)})
	}
	switch {
	case out.health != nil && out.health.Ready:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionTrue, out.health.Reason, out.health.Message)
	case out.health != nil:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionFalse, out.health.Reason, out.health.Message)
	case meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady) == nil:
		set(keywardv1alpha1.ConditionReady, metav1.ConditionUnknown, keywardv1alpha1.ReasonProgressing, out.progressing)
	default:
		// Keep Ready as it was, but say which generation it describes.
		c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
		set(c.Type, c.Status, c.Reason, c.Message)
	}
	if out.health != nil && out.health.Stalled {
		set(keywardv1alpha1.ConditionStalled, metav1.ConditionTrue, out.health.Reason, out.health.Message)
	} else {
		meta.RemoveStatusCondition(&ak.Status.Conditions, keywardv1alpha1.ConditionStalled)
	}
	if out.progressing != "" {
		set(keywardv1alpha1.ConditionReconciling, metav1.ConditionTrue, keywardv1alpha1.ReasonProgressing, out.progressing)
	} else {
		meta.RemoveStatusCondition(&ak.Status.Conditions, keywardv1alpha1.ConditionReconciling)
	}
}

func readyReason(ak *keywardv1alpha1.APIKey) string {
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

func readyMessage(ak *keywardv1alpha1.APIKey) string {
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}
