package serve

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyward-dev/keyward/pkg/verifier"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllertest"
)

// failingList is a cache whose informers deliver events but whose List fails, as a cache that lost its
// store would.
type failingList struct{ *informertest.FakeInformers }

func (failingList) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("the cache cannot list")
}

func TestAFailedNamespaceListTrustsNoNamespaceUntilAListSucceeds(t *testing.T) {
	key := mintKey(t, "kw")
	ix := verifier.NewIndex()
	ix.Upsert(apiKey("billing", "orders", key, t0.Add(time.Hour), nil))
	c := failingList{&informertest.FakeInformers{Scheme: clientgoscheme.Scheme}}
	if _, err := TrustNamespacesMatching(context.Background(), ix, c, labels.Everything(), nil); err != nil {
		t.Fatal(err)
	}
	// A list that succeeded trusts billing.
	trustListed(ix, []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "billing"}}}, nil, nil)
	if got := ix.Verify(key, nil, t0).Code; got != verifier.CodeValid {
		t.Fatalf("a key of a trusted namespace: %s", got)
	}
	// Then a namespace event (billing lost its label, say) whose list fails.
	inf, err := c.FakeInformerFor(context.Background(), &corev1.Namespace{})
	if err != nil {
		t.Fatal(err)
	}
	inf.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}})
	if got := ix.Verify(key, nil, t0).Code; got != verifier.CodeNotFound {
		t.Errorf("after a failed list the key is %s; no namespace may stay trusted on a stale set", got)
	}
	if n := ix.Failures().NamespaceListErrors; n != 1 {
		t.Errorf("NamespaceListErrors = %d, want 1", n)
	}
}

func TestReplicasAreCountedBeforeTheVerifierIsReady(t *testing.T) {
	gvk := schema.GroupVersionKind{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"}
	unsynced := controllertest.NewFakeInformer()
	c := failingList{&informertest.FakeInformers{Scheme: clientgoscheme.Scheme,
		InformersByGVK: map[schema.GroupVersionKind]toolscache.SharedIndexInformer{gvk: unsynced}}}
	ix := verifier.NewIndex()
	synced, err := DividePeersBy(context.Background(), ix, c, "keyward-system", "keyward-verifier")
	if err != nil {
		t.Fatal(err)
	}
	if synced() {
		t.Fatal("synced before the EndpointSlices were seen: every replica would allow the whole limit")
	}
	unsynced.Synced()
	if !synced() {
		t.Error("not synced once the EndpointSlices were seen")
	}
	unsynced.Add(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "keyward-system"}})
	if n := ix.Failures().PeerListErrors; n != 1 {
		t.Errorf("PeerListErrors = %d, want 1", n)
	}
}
