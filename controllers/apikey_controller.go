// Package controllers holds Keyward's reconcilers.
package controllers

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// APIKeyReconciler reconciles APIKey objects.
type APIKeyReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=apikeys/status,verbs=get;patch;update

// Reconcile records that it saw the APIKey. The key lifecycle comes with the lifecycle issue.
func (r *APIKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var key keywardv1alpha1.APIKey
	if err := r.Get(ctx, req.NamespacedName, &key); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log.FromContext(ctx).Info("Observed APIKey", "apikey", klog.KObj(&key), "generation", key.Generation)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the reconciler with the manager.
func (r *APIKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := ctrl.NewControllerManagedBy(mgr).For(&keywardv1alpha1.APIKey{}).Named("apikey").Complete(r); err != nil {
		return fmt.Errorf("setting up the APIKey controller: %w", err)
	}
	return nil
}
