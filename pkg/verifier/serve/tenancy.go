package serve

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/keyward-dev/keyward/pkg/verifier"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The verifier reads namespaces to apply --namespace-selector, and its own Service's EndpointSlices to
// divide local rate limits among its replicas.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch,namespace=system

// TrustNamespacesMatching keeps ix's trusted namespaces equal to the namespaces whose labels match
// selector (and, when allowed is not nil, that allowed lists), following label changes as they happen. It
// returns whether the initial list of namespaces has been seen; until then no namespace is trusted.
func TrustNamespacesMatching(ctx context.Context, ix *verifier.Index, c cache.Cache, selector labels.Selector, allowed []string) (synced func() bool, err error) {
	ix.TrustNamespaces([]string{})
	inf, err := c.GetInformer(ctx, &corev1.Namespace{})
	if err != nil {
		return nil, fmt.Errorf("getting the Namespace informer: %w", err)
	}
	recompute := func() {
		var list corev1.NamespaceList
		err := c.List(ctx, &list, client.MatchingLabelsSelector{Selector: selector})
		trustListed(ix, list.Items, allowed, err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { recompute() },
		UpdateFunc: func(_, _ any) { recompute() },
		DeleteFunc: func(any) { recompute() },
	})
	if err != nil {
		return nil, fmt.Errorf("watching namespaces: %w", err)
	}
	return reg.HasSynced, nil
}

// trustListed trusts the listed namespaces that allowed lists (all when nil). A list that failed trusts
// none until the next one succeeds: a namespace whose label was removed must not stay trusted because the
// list that would have dropped it failed.
func trustListed(ix *verifier.Index, listed []corev1.Namespace, allowed []string, err error) {
	if err != nil {
		ix.NamespaceListFailed(err)
		return
	}
	trusted := []string{}
	for _, ns := range listed {
		if allowed == nil || slices.Contains(allowed, ns.Name) {
			trusted = append(trusted, ns.Name)
		}
	}
	ix.TrustNamespaces(trusted)
}

// DividePeersBy makes ix's local rate-limit buckets follow the number of ready endpoints of the
// Service named service in namespace: with N replicas behind it each allows 1/N of every limit. It returns
// whether the EndpointSlices have been seen: until then each replica would allow the whole limit, so the
// verifier is not ready before.
func DividePeersBy(ctx context.Context, ix *verifier.Index, c cache.Cache, namespace, service string) (synced func() bool, err error) {
	var peers atomic.Int64
	peers.Store(1)
	ix.SetPeers(func() int { return int(peers.Load()) })
	inf, err := c.GetInformer(ctx, &discoveryv1.EndpointSlice{})
	if err != nil {
		return nil, fmt.Errorf("getting the EndpointSlice informer: %w", err)
	}
	recompute := func() {
		var list discoveryv1.EndpointSliceList
		if err := c.List(ctx, &list, client.InNamespace(namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
			ix.PeerCountFailed(err)
			return
		}
		peers.Store(int64(ReadyEndpoints(list.Items)))
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { recompute() },
		UpdateFunc: func(_, _ any) { recompute() },
		DeleteFunc: func(any) { recompute() },
	})
	if err != nil {
		return nil, fmt.Errorf("watching EndpointSlices: %w", err)
	}
	return reg.HasSynced, nil
}
