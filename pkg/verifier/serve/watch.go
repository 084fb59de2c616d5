package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/keyward-dev/keyward/pkg/verifier"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
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
