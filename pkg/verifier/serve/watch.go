package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/keyward-dev/keyward/pkg/verifier"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/approval"
)

// The verifier reads APIKeys and writes only their status.usage; it has no access to Secrets.
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/status,verbs=patch

// Watch feeds ix from the informer of APIKeys in informers. It returns a function that reports
// whether the initial list has been indexed; serve "ready" only after it says true.
func Watch(ctx context.Context, ix *verifier.Index, informers cache.Informers) (synced func() bool, err error) {
	inf, err := informers.GetInformer(ctx, &keywardv1alpha1.APIKey{})
	if err != nil {
		return nil, fmt.Errorf("getting the APIKey informer: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { upsertObject(ix, obj) },
		UpdateFunc: func(_, obj any) { upsertObject(ix, obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if ak, ok := obj.(*keywardv1alpha1.APIKey); ok {
				ix.Delete(ak.Namespace, ak.Name)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watching APIKeys: %w", err)
	}
	return reg.HasSynced, nil
}

func upsertObject(ix *verifier.Index, obj any) {
	if ak, ok := obj.(*keywardv1alpha1.APIKey); ok {
		ix.Upsert(ak)
	}
}

// CacheOptions is the verifier's cache: APIKeys as TrimAPIKey keeps them, managedFields dropped from
// anything else. cmd/verifier adds its namespaces and EndpointSlices to it.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{&keywardv1alpha1.APIKey{}: {Transform: TrimAPIKey}},
		DefaultTransform: cache.TransformStripManagedFields()}
}

// TrimAPIKey is the verifier's cache transform for APIKeys: it keeps only what Verify and the usage reports
// read (identity, deletion, spec.disabled, scopes and rate limit, the current and previous keys in status,
// and status.usage), so that what a tenant may write beside them (annotations and labels up to the API
// server's object size, a secretTemplate, a webhook CA bundle, conditions) costs every replica nothing. The
// usage reporter writes with merge patches computed between two copies of this trimmed object, so only
// status.usage is ever sent.
func TrimAPIKey(obj any) (any, error) {
	ak, ok := obj.(*keywardv1alpha1.APIKey)
	if !ok {
		return cache.TransformStripManagedFields()(obj)
	}
	// What the key is granted (the spec, narrowed to what an approval covers) is all the index needs: the
	// approval record itself is not kept.
	grant := approval.Granted(ak)
	scopes := grant.Scopes
	if len(scopes) > 1 {
		// Joined once here, the scopes are the index's X-Keyward-Scopes header and, as parts of it, its list
		// (verifier.Index.Upsert reads a comma-separated element as a list): held once, not three times.
		joined := make([]string, len(scopes))
		for i, s := range scopes {
			joined[i] = string(s)
		}
		scopes = []keywardv1alpha1.Scope{keywardv1alpha1.Scope(strings.Join(joined, ","))}
	}
	return &keywardv1alpha1.APIKey{TypeMeta: ak.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: ak.Name, Namespace: ak.Namespace, UID: ak.UID, ResourceVersion: ak.ResourceVersion,
		Generation: ak.Generation, DeletionTimestamp: ak.DeletionTimestamp,
	}, Spec: keywardv1alpha1.APIKeySpec{
		Disabled: ak.Spec.Disabled, Scopes: scopes, RateLimit: grant.RateLimit,
	}, Status: keywardv1alpha1.APIKeyStatus{
		KeyID: ak.Status.KeyID, KeyHash: ak.Status.KeyHash, ExpiresAt: ak.Status.ExpiresAt,
		PreviousKeys: ak.Status.PreviousKeys, Usage: ak.Status.Usage,
	}}, nil
}

// SyncedCheck is a readiness check that fails until synced (from Watch) reports the initial list indexed,
// so a verifier replica receives traffic only once it knows every key.
func SyncedCheck(synced func() bool) healthz.Checker {
	return func(*http.Request) error {
		if !synced() {
			return errors.New("the initial list of APIKeys is not indexed yet")
		}
		return nil
	}
}
