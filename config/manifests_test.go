// Package config holds Keyward's deployment manifests; its test checks that they build.
package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestDefaultKustomizationBuildsEveryComponent(t *testing.T) {
	assets := testenv.Binaries(t)
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(testenv.RepoRoot(), "config", "default")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v\n%s", err, out)
	}
	for _, want := range []string{
		"kind: CustomResourceDefinition", "name: apikeys.keyward.dev",
		"kind: Deployment", "name: keyward-manager", "namespace: keyward-system",
		"kind: ClusterRole", "name: keyward-manager-role",
		"kind: ServiceAccount", "kind: Service",
		"kind: ValidatingAdmissionPolicy", "name: keyward-apikey-expiry", "policyName: keyward-apikey-expiry",
		"name: keyward-apikey-annotations", "policyName: keyward-apikey-annotations",
		"name: keyward-scope-grants", "policyName: keyward-scope-grants", "name: keyward-view", "name: keyward-edit", "name: keyward-admin",
		"name: keyward-verifier", "name: keyward-verifier-role",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config/default lacks %q", want)
		}
	}
}

func TestTheVerifierRoleCannotReadSecrets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "verifier", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("the verifier role has no rules")
	}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			if res == "secrets" || res == "*" {
				t.Errorf("the verifier role grants %v on %s", r.Verbs, res)
			}
		}
		for _, v := range r.Verbs {
			if v == "*" || v == "delete" || v == "create" || v == "update" {
				t.Errorf("the verifier role grants %s on %v", v, r.Resources)
			}
		}
	}
}
