package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/argocdhealth"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func TestTheArgoCDHealthScriptJudgesLiveAPIKeys(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	if err := env.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: h.ns}}); err != nil {
		t.Fatal(err)
	}
	h.startManager(managerOptions{})
	h.create("healthy", "")
	h.create("disabled", "disabled: true")
	h.create("conflict", "secretName: taken")
	h.create("lagging", "")
	h.waitReady("healthy")
	h.waitReady("lagging")
	h.waitFor("disabled", "Disabled", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonDisabled))
	h.waitFor("conflict", "SecretConflict", readyIs(metav1.ConditionFalse, keywardv1alpha1.ReasonSecretConflict))
	h.stopManager()
	h.update("lagging", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Description = "edited while Keyward is down" })

	for name, want := range map[string]string{"healthy": "Healthy", "disabled": "Suspended", "conflict": "Degraded", "lagging": "Progressing"} {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(h.get(name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := argocdhealth.EvaluateShipped(obj)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want || got.Message == "" {
			t.Errorf("%s: Argo CD health %+v, want %s with a message", name, got, want)
		}
	}
}
