package controllers

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/notify"
)

// rotationsTotal counts minted keys by reason. It is registered once per process with controller-runtime's
// registry, which the manager serves on /metrics.
var rotationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "keyward_apikey_rotations_total",
	Help: "Keys minted, by reason (Initial, Expiring, Manual, Revoked, SecretMissing, SecretTampered).",
}, []string{"reason"})

func init() { crmetrics.Registry.MustRegister(rotationsTotal) }

var (
	expirationDesc = prometheus.NewDesc("keyward_apikey_expiration_timestamp_seconds",
		"When the current key of the APIKey expires, in seconds since the epoch.", []string{"namespace", "name"}, nil)
	renewalDesc = prometheus.NewDesc("keyward_apikey_renewal_timestamp_seconds",
		"When Keyward will mint the APIKey's next key, in seconds since the epoch (absent when never).", []string{"namespace", "name"}, nil)
	readyDesc = prometheus.NewDesc("keyward_apikey_ready_status",
		"The APIKey's Ready condition: 1 for the series whose condition label matches its status.", []string{"namespace", "name", "condition"}, nil)
	webhookFailuresDesc = prometheus.NewDesc("keyward_apikey_webhook_consecutive_failures",
		"Failed webhook delivery attempts since the APIKey's last success (status.webhook.consecutiveFailures).", []string{"namespace", "name"}, nil)
	webhookPendingDesc = prometheus.NewDesc("keyward_apikey_webhook_pending_events",
		"Webhook events queued for the APIKey and not yet delivered.", []string{"namespace", "name"}, nil)
	previousInUseDesc = prometheus.NewDesc("keyward_apikey_previous_keys_in_use",
		"Previous keys of the APIKey whose grace period is about to end and that were used recently (status.previousKeysInUse).",
		[]string{"namespace", "name"}, nil)
	policyViolationsDesc = prometheus.NewDesc("keyward_apikey_policy_violations",
		"1 while the APIKey breaks an APIKeyPolicy that selects its namespace (its PolicyViolation condition); absent otherwise.",
		[]string{"namespace", "name"}, nil)
	awaitingApprovalDesc = prometheus.NewDesc("keyward_apikey_awaiting_approval",
		"1 while the APIKey waits for an approval that an APIKeyPolicy asks for (Ready reason AwaitingApproval); absent otherwise.",
		[]string{"namespace", "name"}, nil)
	leakedAcceptedDesc = prometheus.NewDesc("keyward_apikey_leaked_keys_accepted",
		"Keys of the APIKey reported leaked (status.leaks) that are still accepted: with leakResponse Notify, or for the moment before a rotation lands; absent when none.",
		[]string{"namespace", "name"}, nil)
	approvalRequestedDesc = prometheus.NewDesc("keyward_apikey_approval_requested_timestamp_seconds",
		"Since when the APIKey has waited for an approval (its Ready condition's transition time), in seconds since the epoch; absent when it does not wait.",
		[]string{"namespace", "name"}, nil)
)

// StatusCollector exports APIKey expiry, renewal and readiness, read from the cache at scrape time, so
// the numbers are never staler than the cache and cost nothing between scrapes. Labels are namespace and
// name only: never key material, never key IDs.
type StatusCollector struct {
	Reader client.Reader
}

// Describe implements prometheus.Collector.
func (c StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expirationDesc
	ch <- renewalDesc
	ch <- readyDesc
	ch <- webhookFailuresDesc
	ch <- webhookPendingDesc
	ch <- previousInUseDesc
	ch <- policyViolationsDesc
	ch <- awaitingApprovalDesc
	ch <- approvalRequestedDesc
	ch <- leakedAcceptedDesc
}

// Collect implements prometheus.Collector.
func (c StatusCollector) Collect(ch chan<- prometheus.Metric) {
	var list keywardv1alpha1.APIKeyList
	if err := c.Reader.List(context.Background(), &list); err != nil {
		// An empty scrape would look like "no APIKeys"; an invalid metric fails the scrape visibly instead.
		ch <- prometheus.NewInvalidMetric(expirationDesc, fmt.Errorf("listing APIKeys: %w", err))
		return
	}
	for i := range list.Items {
		ak := &list.Items[i]
		if t := ak.Status.ExpiresAt; t != nil {
			ch <- prometheus.MustNewConstMetric(expirationDesc, prometheus.GaugeValue, float64(t.Unix()), ak.Namespace, ak.Name)
		}
		if t := ak.Status.RenewalTime; t != nil {
			ch <- prometheus.MustNewConstMetric(renewalDesc, prometheus.GaugeValue, float64(t.Unix()), ak.Namespace, ak.Name)
		}
		if n := len(ak.Status.PreviousKeysInUse); n > 0 {
			ch <- prometheus.MustNewConstMetric(previousInUseDesc, prometheus.GaugeValue, float64(n), ak.Namespace, ak.Name)
		}
		leaked := 0
		for _, l := range ak.Status.Leaks {
			if ak.Status.AcceptsKeyID(l.KeyID) {
				leaked++
			}
		}
		if leaked > 0 {
			ch <- prometheus.MustNewConstMetric(leakedAcceptedDesc, prometheus.GaugeValue, float64(leaked), ak.Namespace, ak.Name)
		}
		if meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionPolicyViolation) {
			ch <- prometheus.MustNewConstMetric(policyViolationsDesc, prometheus.GaugeValue, 1, ak.Namespace, ak.Name)
		}
		status := "Unknown"
		if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil {
			status = string(c.Status)
			if c.Reason == string(keywardv1alpha1.ReasonAwaitingApproval) {
				ch <- prometheus.MustNewConstMetric(awaitingApprovalDesc, prometheus.GaugeValue, 1, ak.Namespace, ak.Name)
				ch <- prometheus.MustNewConstMetric(approvalRequestedDesc, prometheus.GaugeValue, float64(c.LastTransitionTime.Unix()), ak.Namespace, ak.Name)
			}
		}
		if w := ak.Status.Webhook; ak.Spec.Webhook != nil && w != nil {
			pending := len(notify.Pending(w))
			ch <- prometheus.MustNewConstMetric(webhookFailuresDesc, prometheus.GaugeValue, float64(w.ConsecutiveFailures), ak.Namespace, ak.Name)
			ch <- prometheus.MustNewConstMetric(webhookPendingDesc, prometheus.GaugeValue, float64(pending), ak.Namespace, ak.Name)
		}
		for _, s := range []string{"True", "False", "Unknown"} {
			v := 0.0
			if s == status {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, ak.Namespace, ak.Name, s)
		}
	}
}
