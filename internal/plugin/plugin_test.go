package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

var now = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func newPlugin(c client.Client) (*Plugin, *bytes.Buffer) {
	var out bytes.Buffer
	return &Plugin{Client: c, Out: &out, Now: func() time.Time { return now }}, &out
}

// withKey creates an APIKey with a key in its Secret and in status, as the manager writes them.
func withKey(t *testing.T, ns, name string, scopes ...keywardv1alpha1.Scope) (*keywardv1alpha1.APIKey, string) {
	t.Helper()
	ctx := context.Background()
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"team": "billing"}},
		Spec: keywardv1alpha1.APIKeySpec{Scopes: scopes}}
	if err := env.Client.Create(ctx, ak); err != nil {
		t.Fatal(err)
	}
	key, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Annotations: map[string]string{"keyward.dev/revision": "1"}}, Data: map[string][]byte{"api-key": []byte(key)}}); err != nil {
		t.Fatal(err)
	}
	base := ak.DeepCopy()
	exp := metav1.NewTime(now.Add(90 * 24 * time.Hour))
	ak.Status = keywardv1alpha1.APIKeyStatus{SecretName: name, KeyHash: keys.Hash(key), KeyID: keys.Sum(key).ID(), KeyHint: keys.Hint(key),
		Revision: 1, ExpiresAt: &exp, ObservedGeneration: ak.Generation,
		PreviousKeys: []keywardv1alpha1.PreviousKey{{KeyID: "kid_0123456789ab", KeyHash: "sha256:" + strings.Repeat("0", 64), ValidUntil: metav1.NewTime(now.Add(time.Hour))}},
		Conditions:   []metav1.Condition{{Type: "Ready", Status: "True", Reason: "KeyReady", Message: "valid", LastTransitionTime: metav1.NewTime(now)}}}
	if err := testenv.Impersonating(env.Config, testenv.ManagerUser).Status().Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	return ak, key
}

func get(t *testing.T, ns, name string) *keywardv1alpha1.APIKey {
	t.Helper()
	ak := &keywardv1alpha1.APIKey{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, ak); err != nil {
		t.Fatal(err)
	}
	return ak
}

func TestListShowsIDMaskedKeyScopesAndState(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ak, key := withKey(t, ns, "orders", "*")
	withKey(t, ns, "reports", "reports:read")
	p, out := newPlugin(env.Client)
	if err := p.List(context.Background(), ns, false, ""); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"NAME", "KEY ID", "orders", ak.Status.KeyID, ak.Status.KeyHint, "unrestricted", "reports:read", "Ready"} {
		if !strings.Contains(text, want) {
			t.Errorf("list lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, key) {
		t.Error("list shows the key")
	}
	out.Reset()
	if err := p.List(context.Background(), "", true, "team=nobody"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "orders") || !strings.Contains(out.String(), "NAMESPACE") {
		t.Errorf("-A -l team=nobody:\n%s", out)
	}
}

func TestCreateCreatesOrPrintsYAMLForGitOps(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	p, out := newPlugin(env.Client)
	o := CreateOptions{Scopes: []string{"orders:read"}, Validity: "30d", Description: "billing worker",
		WebhookURL: "https://hooks.example.com/k", WebhookSecret: "hooks", DryRun: true}
	if err := p.Create(context.Background(), ns, "orders", o); err != nil {
		t.Fatal(err)
	}
	var printed keywardv1alpha1.APIKey
	if err := yaml.Unmarshal(out.Bytes(), &printed); err != nil || printed.Kind != "APIKey" || printed.Spec.Validity != "30d" ||
		printed.Spec.Webhook == nil || printed.Spec.Scopes[0] != "orders:read" {
		t.Errorf("--dry-run=client -o yaml printed %s (%v)", out, err)
	}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "orders"}, &keywardv1alpha1.APIKey{}); err == nil {
		t.Error("a dry run created the APIKey")
	}
	o.DryRun = false
	if err := p.Create(context.Background(), ns, "orders", o); err != nil {
		t.Fatal(err)
	}
	if ak := get(t, ns, "orders"); ak.Spec.Description != "billing worker" || ak.Spec.Webhook.SigningSecretRef.Name != "hooks" {
		t.Errorf("created %+v", ak.Spec)
	}
}

func TestRotateRevokeDisableEnableAndWebhookTestExpressIntentOnTheAPIKey(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	withKey(t, ns, "orders")
	p, _ := newPlugin(env.Client)
	ctx := context.Background()
	if err := p.Rotate(ctx, ns, "orders", "0s"); err != nil {
		t.Fatal(err)
	}
	ak := get(t, ns, "orders")
	if ak.Annotations[keywardv1alpha1.RotateAnnotation] != "2026-11-24T10:00:00Z" || ak.Spec.Rotation.GracePeriod != "0s" {
		t.Errorf("rotate --grace 0s: annotations %v rotation %+v", ak.Annotations, ak.Spec.Rotation)
	}
	if err := p.Revoke(ctx, ns, "orders", "kid_0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if err := p.Revoke(ctx, ns, "orders", "kid_ba9876543210"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, ns, "orders").Annotations[keywardv1alpha1.RevokeAnnotation]; got != "kid_0123456789ab,kid_ba9876543210" {
		t.Errorf("revoke twice: %q", got)
	}
	if err := p.Revoke(ctx, ns, "orders", "sha256:nope"); err == nil {
		t.Error("revoke took something that is not a key ID")
	}
	if err := p.SetDisabled(ctx, ns, "orders", true); err != nil || !get(t, ns, "orders").Spec.Disabled {
		t.Errorf("disable: %v", err)
	}
	if err := p.SetDisabled(ctx, ns, "orders", false); err != nil || get(t, ns, "orders").Spec.Disabled {
		t.Errorf("enable: %v", err)
	}
	if err := p.TestWebhook(ctx, ns, "orders"); err != nil || get(t, ns, "orders").Annotations[keywardv1alpha1.WebhookTestAnnotation] == "" {
		t.Errorf("webhook test: %v", err)
	}
}

func TestRevealPrintsTheKeyOnceToATerminalAndSaysWhatIsMissing(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	_, key := withKey(t, ns, "orders")
	p, out := newPlugin(env.Client)
	ctx := context.Background()
	if err := p.Reveal(ctx, ns, "orders", false, false); !errors.Is(err, ErrNotATerminal) || out.Len() != 0 {
		t.Errorf("reveal to a pipe: %v, printed %q", err, out)
	}
	if err := p.Reveal(ctx, ns, "orders", true, false); err != nil || strings.TrimSpace(out.String()) != key {
		t.Errorf("reveal to a terminal: %v", err)
	}
	// Someone with keyward-view may see the APIKey but not its key.
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"}}}); err != nil {
		t.Fatal(err)
	}
	bob, bobOut := newPlugin(testenv.Impersonating(env.Config, "bob"))
	err := bob.Reveal(ctx, ns, "orders", true, false)
	if err == nil || !strings.Contains(err.Error(), `needs "get" on secrets in namespace`) || bobOut.Len() != 0 {
		t.Errorf("reveal without Secret access: %v", err)
	}
}

func TestVerifyChecksOfflineThenAsksTheVerifier(t *testing.T) {
	key, _ := keys.Generate("kw", rand.Reader)
	ix := verifier.NewIndex()
	exp := metav1.NewTime(time.Now().Add(time.Hour))
	ix.Upsert(&keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "orders"},
		Spec:   keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"orders:*"}},
		Status: keywardv1alpha1.APIKeyStatus{KeyHash: keys.Hash(key), ExpiresAt: &exp}})
	srv := httptest.NewServer((&verifier.HTTPServer{Index: ix, Clock: clocktesting.NewFakePassiveClock(time.Now())}).Handler())
	defer srv.Close()
	p, out := newPlugin(nil)
	ctx := context.Background()
	if err := p.Verify(ctx, "kw_notakey", nil, ""); err == nil || !strings.Contains(out.String(), "MALFORMED") {
		t.Errorf("a malformed key: %v %s", err, out)
	}
	out.Reset()
	if err := p.Verify(ctx, key, []string{"orders:read"}, srv.URL); err != nil || !strings.Contains(out.String(), `"VALID"`) {
		t.Errorf("a valid key with the verifier: %v %s", err, out)
	}
	if err := p.Verify(ctx, key, []string{"invoices:read"}, srv.URL); err == nil {
		t.Error("a scope the key lacks was accepted")
	}
}

func TestStatusShowsTheKeySecretMetadataPreviousKeysAndNoKey(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ak, key := withKey(t, ns, "orders")
	p, out := newPlugin(env.Client)
	if err := p.Status(context.Background(), ns, "orders"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{ak.Status.KeyID, "revision 1", "Previous key:", "kid_0123456789ab", "Secret:", "Ready=True"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), key) {
		t.Error("status shows the key")
	}
}
