package v1alpha1_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestEveryCRDFieldHasADescription(t *testing.T) {
	testenv.Need(t)
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", "keyward.dev_apikeys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	var undocumented []string
	var walk func(path string, s apiextensionsv1.JSONSchemaProps)
	walk = func(path string, s apiextensionsv1.JSONSchemaProps) {
		if strings.TrimSpace(s.Description) == "" && path != "" && !strings.HasPrefix(path, ".metadata") {
			undocumented = append(undocumented, path)
		}
		for name, prop := range s.Properties {
			walk(path+"."+name, prop)
		}
		if s.Items != nil && s.Items.Schema != nil && len(s.Items.Schema.Properties) > 0 {
			for name, prop := range s.Items.Schema.Properties {
				walk(path+"[]."+name, prop)
			}
		}
	}
	for _, v := range crd.Spec.Versions {
		walk("", *v.Schema.OpenAPIV3Schema)
	}
	if len(undocumented) > 0 {
		t.Errorf("fields without a description (kubectl explain shows them blank): %v", undocumented)
	}
}

func TestKubectlExplainDescribesTheSpec(t *testing.T) {
	testenv.Need(t)
	user, err := env.Environment.AddUser(envtest.User{Name: "docs-reader", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	assets := testenv.Binaries(t)
	// The API server publishes a new CRD's OpenAPI schema a few seconds after the CRD is established.
	text := eventually.Get(t, "kubectl explain apikey.spec answers", func() (string, error) {
		out, err := exec.Command(filepath.Join(assets, "kubectl"), "--kubeconfig", path, "explain", "apikey.spec").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, out)
		}
		return string(out), nil
	})
	for _, want := range []string{
		"secretName\t<string>", "Defaults to the APIKey's own name",
		"validity\t<string>", "from 1h to 10y",
		"rotation\t<Object>", "scopes\t<[]string>", "rateLimit\t<Object>", "webhook\t<Object>",
		"disabled\t<boolean>", "expiresAt\t<string>", "prefix\t<string>", "secretTemplate\t<Object>",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("kubectl explain apikey.spec lacks %q:\n%s", want, text)
		}
	}
}
