package argocdhealth

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestTheShippedHealthScriptPassesItsArgoCDTestCases runs health_test.yaml, in Argo CD's format.
func TestTheShippedHealthScriptPassesItsArgoCDTestCases(t *testing.T) {
	dir := filepath.Dir(ScriptPath())
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases struct {
		Tests []struct {
			HealthStatus Health `json:"healthStatus"`
			InputPath    string `json:"inputPath"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tc := range cases.Tests {
		t.Run(tc.InputPath, func(t *testing.T) {
			input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
			if err != nil {
				t.Fatal(err)
			}
			obj := map[string]any{}
			if err := yaml.Unmarshal(input, &obj); err != nil {
				t.Fatal(err)
			}
			got, err := EvaluateShipped(obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.HealthStatus {
				t.Errorf("health %+v, want %+v", got, tc.HealthStatus)
			}
			seen[got.Status] = true
		})
	}
	for _, status := range []string{"Healthy", "Suspended", "Degraded", "Progressing"} {
		if !seen[status] {
			t.Errorf("no test case is %s", status)
		}
	}
}
