package release

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keyward-dev/keyward/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

var pinned = map[string]string{
	"ghcr.io/keyward-dev/keyward-manager":  "sha256:" + strings.Repeat("a", 64),
	"ghcr.io/keyward-dev/keyward-verifier": "sha256:" + strings.Repeat("b", 64),
}

func TestTheBundleAppliesServerSideAndReapplyingItChangesNothing(t *testing.T) {
	testenv.Need(t)
	assets := testenv.Binaries(t)
	b, err := Render(filepath.Join(assets, "kubectl"), pinned)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"image: ghcr.io/keyward-dev/keyward-manager@sha256:" + strings.Repeat("a", 64),
		"image: ghcr.io/keyward-dev/keyward-verifier@sha256:" + strings.Repeat("b", 64),
		"kind: PodDisruptionBudget", "kind: NetworkPolicy", "kind: ValidatingAdmissionPolicy", "kind: CustomResourceDefinition",
	} {
		if !strings.Contains(string(b.All), want) {
			t.Errorf("the bundle lacks %q", want)
		}
	}
	if strings.Contains(string(b.All), ":latest") {
		t.Error("the bundle refers to an image by a moving tag")
	}
	if !strings.Contains(string(b.CRDs), "name: apikeys.keyward.dev") || strings.Contains(string(b.CRDs), "kind: Deployment") {
		t.Error("keyward-crds.yaml holds something other than the CRDs")
	}
	objs, err := testenv.DecodeManifests(b.All)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	apply := func() map[string]string {
		versions := map[string]string{}
		for _, o := range objs {
			o := o.DeepCopy()
			if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("keyward-release"), client.ForceOwnership); err != nil {
				t.Fatalf("server-side apply of %s %s: %v", o.GetKind(), o.GetName(), err)
			}
			versions[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
		return versions
	}
	first := apply()
	second := apply()
	if len(first) != len(objs) {
		t.Errorf("applied %d objects of %d", len(first), len(objs))
	}
	for k, v := range first {
		if second[k] != v {
			t.Errorf("re-applying the bundle changed %s (resourceVersion %s → %s)", k, v, second[k])
		}
	}
}
