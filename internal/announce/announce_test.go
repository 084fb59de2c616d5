package announce

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/policy"
)

// constants reads, from the Go source in dir, the values of every constant declared of type typeName: a
// transition kind or webhook event added there without an entry here fails the tests below, instead of
// being silently dropped.
func constants(t *testing.T, dir, typeName string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				v := spec.(*ast.ValueSpec)
				if id, ok := v.Type.(*ast.Ident); !ok || id.Name != typeName {
					continue
				}
				for _, value := range v.Values {
					lit, ok := value.(*ast.BasicLit)
					if !ok {
						t.Fatalf("a %s constant that is not a literal: %v", typeName, v.Names)
					}
					out = append(out, strings.Trim(lit.Value, `"`))
				}
			}
		}
	}
	if len(out) < 5 {
		t.Fatalf("found only %d %s constants in %s: %v", len(out), typeName, dir, out)
	}
	return out
}

func transitionKinds(t *testing.T) []policy.TransitionKind {
	var out []policy.TransitionKind
	for _, k := range constants(t, filepath.Join("..", "policy"), "TransitionKind") {
		out = append(out, policy.TransitionKind(k))
	}
	return out
}

func TestEveryTransitionKindHasAnAnnouncement(t *testing.T) {
	kinds := transitionKinds(t)
	for _, k := range kinds {
		a, ok := table[k]
		switch {
		case !ok:
			t.Errorf("transition %s has no entry in the announcement table", k)
		case a.Event == nil && a.Webhook == "":
			t.Errorf("transition %s is announced by nothing", k)
		case a.Mint && (a.Event == nil || a.Event.Log == nil || a.Webhook == ""):
			t.Errorf("the mint %s lacks its event, log line or webhook event", k)
		case a.Event != nil && (a.Event.Note == nil || a.Event.Reason == "" || a.Event.Action == "" ||
			(a.Event.Type != corev1.EventTypeNormal && a.Event.Type != corev1.EventTypeWarning)):
			t.Errorf("transition %s has an incomplete event %+v", k, a.Event)
		}
	}
	for k := range table {
		if !slices.Contains(kinds, k) {
			t.Errorf("the table has an entry for %s, which internal/policy does not declare", k)
		}
	}
}

// Every webhook event the API declares is sent by some transition, or by the delivery controller (the test
// delivery and the deletion), and a webhook may subscribe to every one but the test (the CRD's enum).
func TestEveryWebhookEventIsSentBySomething(t *testing.T) {
	sent := map[keywardv1alpha1.WebhookEvent]bool{keywardv1alpha1.WebhookEventKeyDeleted: true, keywardv1alpha1.WebhookEventTest: true}
	for _, a := range table {
		sent[a.Webhook] = true
	}
	source, err := os.ReadFile(filepath.Join("..", "..", "api", "v1alpha1", "apikey_types.go"))
	if err != nil {
		t.Fatal(err)
	}
	_, enum, _ := strings.Cut(string(source), "+kubebuilder:validation:Enum=key.")
	enum, _, _ = strings.Cut("key."+enum, "\n")
	subscribable := strings.Split(enum, ";")
	for _, e := range constants(t, filepath.Join("..", "..", "api", "v1alpha1"), "WebhookEvent") {
		if !sent[keywardv1alpha1.WebhookEvent(e)] {
			t.Errorf("nothing sends %s", e)
		}
		if e != string(keywardv1alpha1.WebhookEventTest) && !slices.Contains(subscribable, e) {
			t.Errorf("spec.webhook.events cannot subscribe to %s: the WebhookEvent enum marker lacks it (%v)", e, subscribable)
		}
	}
}

// The notes name what happened with the transition's and the write's facts.
func TestAnnouncementNotesNameTheKeysAndTheSecret(t *testing.T) {
	until := metav1.NewTime(time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC))
	f := Facts{Secret: "orders", KeyID: "kid_new", Revision: 4, Ready: "Secret orders is immutable", Tampered: "data api-key",
		TamperError: "the Secret was changed", ReplacedFate: "the last genuine key kid_old stays valid until then",
		DroppedByZeroGrace: []string{"kid_older"}}
	cases := []struct {
		t    policy.Transition
		want []string
	}{
		{policy.Transition{Kind: policy.TransitionKeyCreated, Reason: keywardv1alpha1.RotationInitial}, []string{"kid_new", "revision 4", "Secret orders"}},
		{policy.Transition{Kind: policy.TransitionKeyRotated, Reason: keywardv1alpha1.RotationManual, PreviousKeyID: "kid_old", PreviousValidUntil: &until},
			[]string{"kid_new", "kid_old", "stays valid until 2026-12-01T11:00:00Z", "kid_older were revoked too"}},
		{policy.Transition{Kind: policy.TransitionKeyRevoked, Reason: keywardv1alpha1.RotationRevoked, Revoked: []string{"kid_old"}},
			[]string{"Revoked key kid_old", keywardv1alpha1.RevokeAnnotation, "kid_new"}},
		{policy.Transition{Kind: policy.TransitionSecretTampered, Reason: keywardv1alpha1.RotationSecretTampered},
			[]string{"Secret orders was changed", "data api-key", "kid_new", "kid_old stays valid"}},
		{policy.Transition{Kind: policy.TransitionKeyWithdrawn, Reason: keywardv1alpha1.RotationRevoked, PreviousKeyID: "kid_old"},
			[]string{"Key kid_old is no longer accepted", "revoked by", "immutable"}},
		{policy.Transition{Kind: policy.TransitionPreviousKeysDropped, Dropped: []string{"kid_a", "kid_b"}}, []string{"At most 10", "kid_a, kid_b"}},
		{policy.Transition{Kind: policy.TransitionStatusRestored, Fields: []string{"status.keyHash"}}, []string{"status.keyHash"}},
		{policy.Transition{Kind: policy.TransitionSecretUnwritable}, []string{"immutable"}},
	}
	for _, tc := range cases {
		note := Of(tc.t.Kind).Event.Note(tc.t, f)
		for _, w := range tc.want {
			if !strings.Contains(note, w) {
				t.Errorf("%s: note %q does not say %q", tc.t.Kind, note, w)
			}
		}
	}
}
