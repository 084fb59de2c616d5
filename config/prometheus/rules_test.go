// Package prometheus holds Keyward's alerting rules and Grafana dashboard; its tests run promtool on them.
package prometheus

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestPrometheusRulesPassPromtool extracts the groups of the shipped PrometheusRule into a plain rules file
// and runs `promtool test rules` (Debian's prometheus package; .ci/run installs it) with rules_test.yaml.
func TestPrometheusRulesPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (.ci/run installs it)")
	}
	raw, err := os.ReadFile("prometheus_rule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	groups, err := yaml.Marshal(rule.Spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "rules_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestTheDashboardQueriesParseAndUseKeywardsMetrics checks every panel query of the shipped dashboard with
// promtool (as recording rules) and that each names a metric Keyward exports.
func TestTheDashboardQueriesParseAndUseKeywardsMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (.ci/run installs it)")
	}
	raw, err := os.ReadFile("grafana_dashboard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Error("the ConfigMap lacks the grafana_dashboard=1 label the sidecar looks for")
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["keyward.json"]), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	exported := []string{"keyward_apikey_ready_status", "keyward_apikey_expiration_timestamp_seconds", "keyward_apikey_rotations_total",
		"keyward_verifier_verifications_total", "keyward_webhook_deliveries_total", "keyward_apikey_webhook_pending_events"}
	var rules []map[string]string
	for i, p := range dash.Panels {
		for _, target := range p.Targets {
			if !slices.ContainsFunc(exported, func(m string) bool { return strings.Contains(target.Expr, m) }) {
				t.Errorf("panel %q queries no metric Keyward exports: %s", p.Title, target.Expr)
			}
			rules = append(rules, map[string]string{"record": fmt.Sprintf("keyward:panel_%d", i),
				"expr": strings.ReplaceAll(target.Expr, "$__rate_interval", "5m")})
		}
	}
	if len(rules) < 5 {
		t.Fatalf("%d panel queries; want keys by state, expiries, rotations, verifications and webhook deliveries", len(rules))
	}
	file, _ := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	path := filepath.Join(t.TempDir(), "dashboard_rules.yaml")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("a dashboard query does not parse: %v\n%s", err, out)
	}
}
