// Package chart tests the Helm chart in charts/keyward with the Helm Go SDK against the real API server.
package chart

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keyward-dev/keyward/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

func chartPath() string { return filepath.Join(testenv.RepoRoot(), "charts", "keyward") }

// render is `helm template keyward charts/keyward -n keyward-system` with vals.
func render(t *testing.T, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	ch, err := loader.Load(chartPath())
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = "keyward"
	install.Namespace = "keyward-system"
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("unexpected release type %T", rel)
	}
	return testenv.DecodeManifests([]byte(r.Manifest))
}

func find(objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

func args(t *testing.T, objs []*unstructured.Unstructured, deployment string) string {
	t.Helper()
	d := find(objs, "Deployment", "keyward-system", deployment)
	if d == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	list, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	image, _, _ := unstructured.NestedString(containers[0].(map[string]any), "image")
	return image + " " + strings.Join(list, " ")
}

func TestTheChartLints(t *testing.T) {
	res := action.NewLint().Run([]string{chartPath()}, nil)
	for _, m := range res.Messages {
		t.Logf("lint: %s", m)
	}
	if len(res.Errors) > 0 {
		t.Errorf("helm lint: %v", res.Errors)
	}
}

func TestTheChartRendersItsVariants(t *testing.T) {
	digest := "sha256:" + strings.Repeat("c", 64)
	cases := []struct {
		name  string
		vals  map[string]any
		check func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"default", nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "CustomResourceDefinition", "", "apikeys.keyward.dev").GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Error("the CRD is not kept on uninstall")
			}
			if a := args(t, objs, "keyward-verifier"); !strings.Contains(a, ":v0.1.0 ") || !strings.Contains(a, "--rate-limit-peers-service=keyward-verifier") {
				t.Errorf("verifier %s", a)
			}
			for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "ValidatingAdmissionPolicy", "ClusterRoleBinding"} {
				if !slicesContainsKind(objs, kind) {
					t.Errorf("no %s", kind)
				}
			}
			if find(objs, "Deployment", "keyward-system", "keyward-leak-receiver") != nil {
				t.Error("the leak receiver runs by default")
			}
		}},
		{"namespaced mode", map[string]any{"manager": map[string]any{"namespaces": []any{"team-a", "team-b"}}}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "ClusterRoleBinding", "", "keyward-manager-rolebinding") != nil {
				t.Error("namespaced mode binds the manager's role cluster-wide")
			}
			for _, ns := range []string{"team-a", "team-b", "keyward-system"} {
				if find(objs, "RoleBinding", ns, "keyward-manager") == nil {
					t.Errorf("no manager RoleBinding in %s", ns)
				}
			}
			if a := args(t, objs, "keyward-manager"); !strings.Contains(a, "--namespaces=team-a,team-b") {
				t.Errorf("manager %s", a)
			}
		}},
		{"shared rate limits, pinned images, trusted namespaces", map[string]any{
			"image":    map[string]any{"verifier": map[string]any{"repository": "registry.example/keyward-verifier", "digest": digest}},
			"verifier": map[string]any{"rateLimit": map[string]any{"redisURL": "redis://redis.keyward-system.svc:6379/0", "redisFailure": "closed"}, "namespaceSelector": "keyward.dev/tenant=trusted"},
			"manager":  map[string]any{"webhook": map[string]any{"allowedCIDRs": []any{"10.96.0.0/12"}}},
		}, func(t *testing.T, objs []*unstructured.Unstructured) {
			a := args(t, objs, "keyward-verifier")
			for _, want := range []string{"registry.example/keyward-verifier@" + digest, "--rate-limit-redis=redis://redis.keyward-system.svc:6379/0",
				"--rate-limit-redis-failure=closed", "--namespace-selector=keyward.dev/tenant=trusted"} {
				if !strings.Contains(a, want) {
					t.Errorf("verifier lacks %s: %s", want, a)
				}
			}
			if strings.Contains(a, "peers-service") {
				t.Error("with Redis the verifier still divides limits among peers")
			}
			if !strings.Contains(args(t, objs, "keyward-manager"), "--webhook-allowed-cidrs=10.96.0.0/12") {
				t.Error("manager lacks the webhook allow-list")
			}
		}},
		{"the leak receiver", map[string]any{"leakReceiver": map[string]any{"enabled": true, "reportsPerMinute": 30}}, func(t *testing.T, objs []*unstructured.Unstructured) {
			a := args(t, objs, "keyward-leak-receiver")
			for _, want := range []string{"--leak-reports-bind-address=:8095", "--leak-reports-per-minute=30", "--http-bind-address=127.0.0.1:8080"} {
				if !strings.Contains(a, want) {
					t.Errorf("leak receiver lacks %s: %s", want, a)
				}
			}
			b := find(objs, "ClusterRoleBinding", "", "keyward-leak-receiver")
			if b == nil {
				t.Fatal("no ClusterRoleBinding for the leak receiver")
			}
			if role, _, _ := unstructured.NestedString(b.Object, "roleRef", "name"); role != "keyward-leak-receiver" {
				t.Errorf("the leak receiver is bound to %s", role)
			}
			if find(objs, "NetworkPolicy", "keyward-system", "keyward-leak-receiver") == nil {
				t.Error("no NetworkPolicy for the leak receiver")
			}
		}},
		{"a quota of APIKeys per tenant namespace", map[string]any{
			"apiKeyQuota": map[string]any{"namespaces": []any{"team-a", "team-b"}, "count": 200},
		}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, ns := range []string{"team-a", "team-b"} {
				q := find(objs, "ResourceQuota", ns, "keyward-apikeys")
				if q == nil {
					t.Fatalf("no ResourceQuota in %s", ns)
				}
				if got, _, _ := unstructured.NestedString(q.Object, "spec", "hard", "count/apikeys.keyward.dev"); got != "200" {
					t.Errorf("%s: count/apikeys.keyward.dev %q, want 200", ns, got)
				}
			}
		}},
		{"CRDs elsewhere, monitoring on, no PDB or network policies", map[string]any{
			"crds":            map[string]any{"enabled": false},
			"metrics":         map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
			"prometheusRule":  map[string]any{"enabled": true},
			"networkPolicies": map[string]any{"enabled": false},
			"verifier":        map[string]any{"podDisruptionBudget": map[string]any{"enabled": false}},
		}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for kind, want := range map[string]bool{"CustomResourceDefinition": false, "ServiceMonitor": true, "PrometheusRule": true,
				"NetworkPolicy": false, "PodDisruptionBudget": false} {
				if slicesContainsKind(objs, kind) != want {
					t.Errorf("%s present: %v, want %v", kind, !want, want)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := render(t, tc.vals)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, objs)
		})
	}
}

func slicesContainsKind(objs []*unstructured.Unstructured, kind string) bool {
	for _, o := range objs {
		if o.GetKind() == kind {
			return true
		}
	}
	return false
}

func TestTheSchemaRejectsBadValues(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"unknown key":          {"verifer": map[string]any{}},
		"redis failure mode":   {"verifier": map[string]any{"rateLimit": map[string]any{"redisFailure": "maybe"}}},
		"not a digest":         {"image": map[string]any{"manager": map[string]any{"repository": "x", "digest": "latest"}}},
		"bad namespace":        {"manager": map[string]any{"namespaces": []any{"Team_A"}}},
		"zero verifier copies": {"verifier": map[string]any{"replicas": 0}},
	} {
		if _, err := render(t, vals); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: %v, want a schema error", name, err)
		}
	}
}

func TestTheDefaultRenderAppliesServerSideAndMatchesTheBundlesCRDsAndRBAC(t *testing.T) {
	testenv.Need(t)
	objs, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner("helm"), client.ForceOwnership); err != nil {
			t.Fatalf("server-side apply of %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	bundle, err := testenv.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, b := range bundle {
		var fields [][]string
		switch b.GetKind() {
		case "CustomResourceDefinition":
			fields = [][]string{{"spec"}}
		case "ClusterRole", "Role":
			fields = [][]string{{"rules"}, {"aggregationRule"}}
		case "ClusterRoleBinding", "RoleBinding":
			fields = [][]string{{"roleRef"}, {"subjects"}}
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding":
			fields = [][]string{{"spec"}}
		default:
			continue
		}
		c := find(objs, b.GetKind(), b.GetNamespace(), b.GetName())
		if c == nil {
			t.Errorf("the chart has no %s %s/%s", b.GetKind(), b.GetNamespace(), b.GetName())
			continue
		}
		for _, f := range fields {
			bv, _, _ := unstructured.NestedFieldNoCopy(b.Object, f...)
			cv, _, _ := unstructured.NestedFieldNoCopy(c.Object, f...)
			if !reflect.DeepEqual(bv, cv) {
				t.Errorf("%s %s: %s differs between the chart and the bundle (run make chart-files)", b.GetKind(), b.GetName(), f[0])
			}
		}
		compared++
	}
	if compared < 15 {
		t.Errorf("compared %d objects; want the CRD, every role, binding and policy", compared)
	}
}
