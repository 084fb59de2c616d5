package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
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
	o := CreateOptions{Scopes: []string{"orders:read, orders:write "}, Validity: "30d", Description: "billing worker",
		DisplayName: "Billing → Orders", Prefix: "ord", RateLimit: "100/1m",
		WebhookURL: "https://hooks.example.com/k", WebhookSecret: "hooks", DryRun: true}
	if err := p.Create(context.Background(), ns, "orders", o); err != nil {
		t.Fatal(err)
	}
	var printed keywardv1alpha1.APIKey
	if err := yaml.Unmarshal(out.Bytes(), &printed); err != nil || printed.Kind != "APIKey" || printed.Spec.Validity != "30d" ||
		printed.Spec.Webhook == nil || !slices.Equal(printed.Spec.Scopes, []keywardv1alpha1.Scope{"orders:read", "orders:write"}) ||
		printed.Spec.DisplayName != "Billing → Orders" || printed.Spec.Prefix != "ord" ||
		printed.Spec.RateLimit == nil || printed.Spec.RateLimit.Requests != 100 || printed.Spec.RateLimit.Period != "1m" {
		t.Errorf("--dry-run=client -o yaml printed %s (%v)", out, err)
	}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "orders"}, &keywardv1alpha1.APIKey{}); err == nil {
		t.Error("a dry run created the APIKey")
	}
	o.DryRun = false
	if err := p.Create(context.Background(), ns, "orders", o); err != nil {
		t.Fatal(err)
	}
	if ak := get(t, ns, "orders"); ak.Spec.Description != "billing worker" || ak.Spec.Webhook.SigningSecretRef.Name != "hooks" ||
		len(ak.Spec.Scopes) != 2 || ak.Spec.RateLimit == nil {
		t.Errorf("created %+v", ak.Spec)
	}
	fixed := CreateOptions{ExpiresAt: now.AddDate(1, 0, 0).Format(time.RFC3339)}
	if err := p.Create(context.Background(), ns, "trial", fixed); err != nil {
		t.Fatal(err)
	}
	if ak := get(t, ns, "trial"); ak.Spec.ExpiresAt == nil || !ak.Spec.ExpiresAt.Time.Equal(now.AddDate(1, 0, 0)) {
		t.Errorf("--expires-at: created %+v", ak.Spec)
	}
	for _, bad := range []CreateOptions{{ExpiresAt: "next year"}, {RateLimit: "100 per minute"}, {RateLimit: "x/1m"}} {
		if err := p.Create(context.Background(), ns, "bad", bad); err == nil || !strings.Contains(err.Error(), "for example") {
			t.Errorf("%+v: %v; want an error with an example", bad, err)
		}
	}
}

func TestRotateRevokeDisableEnableAndWebhookTestExpressIntentOnTheAPIKey(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	withKey(t, ns, "orders")
	p, _ := newPlugin(env.Client)
	ctx := context.Background()
	if err := p.Rotate(ctx, ns, "orders", RotateOptions{Grace: "0s"}); err != nil {
		t.Fatal(err)
	}
	ak := get(t, ns, "orders")
	if ak.Annotations[keywardv1alpha1.RotateAnnotation] != "2026-11-24T10:00:00.000Z" || ak.Spec.Rotation.GracePeriod != "0s" {
		t.Errorf("rotate --grace 0s: annotations %v rotation %+v", ak.Annotations, ak.Spec.Rotation)
	}
	if err := p.Revoke(ctx, ns, "orders", "kid_0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if err := p.Revoke(ctx, ns, "orders", ak.Status.KeyID); err != nil {
		t.Fatal(err)
	}
	if got := get(t, ns, "orders").Annotations[keywardv1alpha1.RevokeAnnotation]; got != "kid_0123456789ab,"+ak.Status.KeyID {
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

func TestRevokeRefusesAKeyIDTheAPIKeyDoesNotHaveAndNamesThoseItHas(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ak, _ := withKey(t, ns, "orders")
	p, out := newPlugin(env.Client)
	err := p.Revoke(context.Background(), ns, "orders", "kid_000000000000")
	if err == nil {
		t.Fatalf("revoking a key the APIKey never had succeeded: %s", out)
	}
	for _, want := range []string{"has no key kid_000000000000", ak.Status.KeyID + " (current)", "kid_0123456789ab (previous, valid until"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	if got, ok := get(t, ns, "orders").Annotations[keywardv1alpha1.RevokeAnnotation]; ok || out.Len() != 0 {
		t.Errorf("the refused revoke wrote the annotation %q or printed %q", got, out)
	}
}

func TestRotateWaitsForTheNewKeyAndPrintsItsID(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	ak, _ := withKey(t, ns, "orders")
	oldID := ak.Status.KeyID
	// The manager's part, played by the test: once the rotation is asked for, a new key in status and the
	// replaced one among the previous keys.
	manager := make(chan error, 1)
	go func() {
		manager <- wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			cur := &keywardv1alpha1.APIKey{}
			if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orders"}, cur); err != nil {
				return false, err
			}
			token := cur.Annotations[keywardv1alpha1.RotateAnnotation]
			if token == "" {
				return false, nil
			}
			base := cur.DeepCopy()
			cur.Status.LastHandledRotateToken, cur.Status.KeyID, cur.Status.Revision = token, "kid_feedfacecafe", 2
			cur.Status.PreviousKeys = []keywardv1alpha1.PreviousKey{{KeyID: oldID, KeyHash: cur.Status.KeyHash, ValidUntil: metav1.NewTime(now.Add(time.Hour))}}
			return true, testenv.Impersonating(env.Config, testenv.ManagerUser).Status().Patch(ctx, cur, client.MergeFrom(base))
		})
	}()
	p, out := newPlugin(env.Client)
	if err := p.Rotate(ctx, ns, "orders", RotateOptions{Wait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := <-manager; err != nil {
		t.Fatal(err)
	}
	want := "apikey.keyward.dev/orders: new key kid_feedfacecafe; " + oldID + " keeps working until " + now.Add(time.Hour).Format(time.RFC3339) + "\n"
	if !strings.HasSuffix(out.String(), want) {
		t.Errorf("rotate printed %q; want it to end with %q", out, want)
	}
	// A manager that judged the spec and refused it: rotate says why instead of waiting out its time.
	cur := get(t, ns, "orders")
	base := cur.DeepCopy()
	cur.Status.ObservedGeneration = cur.Generation
	cur.Status.Conditions = []metav1.Condition{{Type: keywardv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: "InvalidSpec",
		Message: "spec.expiresAt has passed", LastTransitionTime: metav1.NewTime(now)}}
	if err := testenv.Impersonating(env.Config, testenv.ManagerUser).Status().Patch(ctx, cur, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	p.Now = func() time.Time { return now.Add(time.Second) }
	if err := p.Rotate(ctx, ns, "orders", RotateOptions{Wait: time.Hour}); err == nil || !strings.Contains(err.Error(), "InvalidSpec: spec.expiresAt has passed") {
		t.Errorf("rotate of a stalled APIKey: %v", err)
	}
}

func TestRevealPrintsTheKeyToATerminalAndSaysWhatIsMissing(t *testing.T) {
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
	srv := httptest.NewServer((&serve.HTTPServer{Index: ix, Clock: clocktesting.NewFakePassiveClock(time.Now())}).Handler())
	defer srv.Close()
	p, out := newPlugin(nil)
	ctx := context.Background()
	if err := p.Verify(ctx, "kw_notakey", nil, ""); err == nil || !strings.Contains(out.String(), "MALFORMED") {
		t.Errorf("a malformed key: %v %s", err, out)
	}
	out.Reset()
	if err := p.Verify(ctx, key, []string{"orders:read"}, ""); !errors.Is(err, ErrScopesNeedVerifier) || out.Len() != 0 {
		t.Errorf("--scopes without a verifier: %v, printed %q; want it refused, not ignored", err, out)
	}
	if err := p.Verify(ctx, key, []string{" orders:read, orders:write "}, srv.URL); err != nil || !strings.Contains(out.String(), `"VALID"`) {
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

// hostile is text a tenant controls that a terminal would act on: an OSC 52 clipboard write, a colour
// change, a carriage return and a newline that forge a line, and a right-to-left override.
const hostile = "ok\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07\x1b[31m\rReady=True\nEvent:\tNormal KeyRotated: forged\u202egnp.exe\u009b"

// assertPrintable fails when out holds a byte a terminal acts on, or the forged line.
func assertPrintable(t *testing.T, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		if c := out[i]; (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("the output holds control byte %#x at %d:\n%q", c, i, out)
		}
	}
	for _, bad := range []string{"\u202e", "\u009b", "\nEvent:\tNormal KeyRotated: forged"} {
		if strings.Contains(out, bad) {
			t.Errorf("the output holds %q:\n%q", bad, out)
		}
	}
}

func TestStatusEscapesWhatTenantsWrote(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	ak, _ := withKey(t, ns, "orders")
	// The Secret's metadata, a condition message, the webhook's last error and an event note, each holding
	// what a tenant (or a receiver) chose.
	s := &corev1.Secret{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orders"}, s); err != nil {
		t.Fatal(err)
	}
	s.Annotations["keyward.dev/revision"] = hostile
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	base := ak.DeepCopy()
	ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: "https://hooks.example.com/x", SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "hook"}}
	if err := env.Client.Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	base = ak.DeepCopy()
	ak.Status.Conditions[0].Message = hostile
	ak.Status.Webhook = &keywardv1alpha1.WebhookStatus{LastError: hostile}
	manager := testenv.Impersonating(env.Config, testenv.ManagerUser)
	if err := manager.Status().Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "orders.hostile", Namespace: ns},
		EventTime: metav1.NewMicroTime(now), ReportingController: "tenant", ReportingInstance: "tenant", Action: "Write", Reason: "Hostile",
		Type: corev1.EventTypeNormal, Note: hostile, Regarding: corev1.ObjectReference{Kind: "APIKey", Name: "orders", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	p, out := newPlugin(env.Client)
	if err := p.Status(ctx, ns, "orders"); err != nil {
		t.Fatal(err)
	}
	assertPrintable(t, out.String())
	if n := strings.Count(out.String(), `\x1b]52;c;`); n != 4 {
		t.Errorf("the clipboard write shows escaped %d times, want 4 (Secret, condition, webhook error, event):\n%s", n, out)
	}
}

func TestEscapeMakesEveryControlCharacterVisible(t *testing.T) {
	for in, want := range map[string]string{
		"plain kid_0123 …":    "plain kid_0123 …",
		"a\nb\tc\rd":          `a\nb\tc\rd`,
		"\x1b[2J\x07\x7f":     `\x1b[2J\x07\x7f`,
		"\u009b31m":           `\x9b31m`,
		"abc\u202eexe.gnp":    `abc\u202eexe.gnp`,
		"\u2066isolate\u2069": `\u2066isolate\u2069`,
		"bad \xff utf-8":      `bad \xff utf-8`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(terminalWriter{w: &b}, "row\t%s\n", "\x1b]0;title\x07")
	if got := b.String(); got != "row\t\\x1b]0;title\\x07\n" {
		t.Errorf("terminalWriter wrote %q; it keeps only newlines and tabs", got)
	}
}

func TestReadKeyTakesTheFirstLineOfABoundedInput(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{"kw_abc\n", "kw_abc", ""},
		{"  kw_abc  \r\nsecond line\n", "kw_abc", ""},
		{"", "", "no key"},
		{strings.Repeat("k", MaxKeyInput+1), "", "longer than"},
	}
	for _, tc := range cases {
		got, err := ReadKey(strings.NewReader(tc.in))
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ReadKey(%.20q) = %q, %v; want %q, error %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestUsagePrintsCountsAndLastUsePerKeyID(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	ak, _ := withKey(t, ns, "orders")
	// status.usage as the verifier reports it, written as the verifier's identity.
	base := ak.DeepCopy()
	used, earlier := metav1.NewTime(now.Add(-time.Minute)), metav1.NewTime(now.Add(-time.Hour))
	// 10 in all: 2 by a key that is no longer accepted, whose per-key use status no longer keeps.
	ak.Status.Usage = &keywardv1alpha1.UsageStatus{Requests: 10, LastUsedAt: &used, Keys: []keywardv1alpha1.KeyUsage{
		{KeyID: ak.Status.KeyID, Valid: 5, RateLimited: 1, LastUsedAt: &used},
		{KeyID: "kid_0123456789ab", Valid: 3, LastUsedAt: &earlier, Rejected: map[string]int64{"INSUFFICIENT_SCOPE": 2, "EXPIRED": 1}},
	}}
	if err := testenv.Impersonating(env.Config, testenv.VerifierUser).Status().Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	p, out := newPlugin(env.Client)
	if err := p.Usage(ctx, ns, "orders"); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"10 valid requests in all, last " + used.UTC().Format(time.RFC3339),
		"-                 earlier keys, no longer accepted",
		ak.Status.KeyID + "  current",
		used.UTC().Format(time.RFC3339) + "  5      1             -",
		"kid_0123456789ab  previous, valid until",
		earlier.UTC().Format(time.RFC3339) + "  3      0             EXPIRED=1,INSUFFICIENT_SCOPE=2",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("usage lacks %q:\n%s", want, text)
		}
	}
	p, out = newPlugin(env.Client)
	if err := p.Status(ctx, ns, "orders"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "last used "+used.UTC().Format(time.RFC3339)) ||
		!strings.Contains(out.String(), "last used "+earlier.UTC().Format(time.RFC3339)) {
		t.Errorf("status does not show each key's last use:\n%s", out)
	}
}

// labelledNamespace is a namespace of the test with the label key=value (value "": the namespace's name).
func labelledNamespace(t *testing.T, key, value string) string {
	t.Helper()
	ns := env.Namespace(t)
	n := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Name: ns}, n); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		value = ns
	}
	n.Labels[key] = value
	if err := env.Client.Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestPolicyShowsWhichAPIKeyPoliciesApplyToTheNamespace(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	ns := labelledNamespace(t, "tier", "prod")
	// An APIKey created before the policies, without the rate limit plugin-prod requires.
	withKey(t, ns, "legacy", "orders:read")
	for _, pol := range []*keywardv1alpha1.APIKeyPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "plugin-prod"}, Spec: keywardv1alpha1.APIKeyPolicySpec{MaxValidity: "90d", RequireAutoRotation: true,
			AllowedScopes: []keywardv1alpha1.Scope{"orders:*"}, MaxRateLimit: &keywardv1alpha1.PolicyRateLimit{Requests: 100, Period: "1m", Required: true},
			ApprovalRequiredScopes: []keywardv1alpha1.Scope{"orders:delete"},
			NamespaceSelector: &keywardv1alpha1.PolicyNamespaceSelector{MatchExpressions: []keywardv1alpha1.PolicyNamespaceRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod"}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plugin-staging"}, Spec: keywardv1alpha1.APIKeyPolicySpec{MaxGracePeriod: "10m",
			NamespaceSelector: &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"tier": "staging"}}}},
	} {
		if err := env.Client.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, pol) })
	}
	p, out := newPlugin(env.Client)
	if err := p.Policies(ctx, ns); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"APIKeyPolicies for namespace " + ns + ":",
		"plugin-prod yes 90d true - orders:* at most 100/1m, required any orders:delete",
		"plugin-staging no - false 10m any any any -",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("policy lacks %q:\n%s", want, out)
		}
	}
	// A namespace's user cannot read its labels, but may read the policies: each is shown, applying or not
	// left open.
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "carol", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "carol"}}}); err != nil {
		t.Fatal(err)
	}
	// list marks the APIKey that breaks a policy applying to its namespace; status says how.
	out.Reset()
	if err := p.List(ctx, ns, false, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Ready,PolicyViolation") {
		t.Errorf("list does not mark the APIKey that breaks plugin-prod:\n%s", out)
	}
	out.Reset()
	if err := p.Status(ctx, ns, "legacy"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), "Policy violation: APIKeyPolicy plugin-prod: spec.rateLimit is required (maxRateLimit.required)") {
		t.Errorf("status does not say how the APIKey breaks plugin-prod:\n%s", out)
	}
	carol, carolOut := newPlugin(testenv.Impersonating(env.Config, "carol"))
	if err := carol.Policies(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(carolOut.String()), " "), "plugin-prod unknown (cannot read the namespace's labels) 90d") {
		t.Errorf("policy as a namespace user:\n%s", carolOut)
	}
	carolOut.Reset()
	if err := carol.List(ctx, ns, false, ""); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(carolOut.String(), "PolicyViolation") || !strings.Contains(carolOut.String(), "legacy") {
		t.Errorf("list as a user who cannot read the namespace's labels guessed:\n%s", carolOut)
	}
}

func TestApproveAndDenyWriteADecisionInTheCallersNameForTheSpecAsItIs(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	ns := labelledNamespace(t, "approvals", "")
	pol := &keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "plugin-approval-" + ns},
		Spec: keywardv1alpha1.APIKeyPolicySpec{ApprovalRequiredScopes: []keywardv1alpha1.Scope{"payments:*"},
			NamespaceSelector: &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{"approvals": ns}}}}
	if err := env.Client.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, pol) })
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "refunds", Namespace: ns},
		Spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"payments:refund"}, Validity: "30d",
			RateLimit: &keywardv1alpha1.RateLimit{Requests: 10, Period: "1s"}}}
	if err := env.Client.Create(ctx, ak); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"bob", ak.Annotations[keywardv1alpha1.RequestedByAnnotation]} {
		if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "approver-" + strings.ReplaceAll(user, ":", "-"), Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-approver"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}); err != nil {
			t.Fatal(err)
		}
	}
	author, _ := newPlugin(env.Client)
	if err := eventually.Poll(func() error {
		if err := author.Approve(ctx, ns, "refunds"); err == nil || !strings.Contains(err.Error(), "separation of duties") {
			return fmt.Errorf("the author approving: %w; want it refused for the separation of duties", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	bob, out := newPlugin(testenv.Impersonating(env.Config, "bob"))
	if err := bob.Deny(ctx, ns, "refunds", "  "); !errors.Is(err, ErrDenyNeedsReason) {
		t.Errorf("a denial without a reason: %v", err)
	}
	if err := eventually.Poll(func() error { return bob.Approve(ctx, ns, "refunds") }); err != nil {
		t.Fatal(err)
	}
	if want := "apikey.keyward.dev/refunds approved by bob: scopes [payments:refund], validity 30d, rate limit 10/1s"; !strings.Contains(out.String(), want) {
		t.Errorf("approve printed %q; want %q", out.String(), want)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), ak); err != nil {
		t.Fatal(err)
	}
	if a := ak.Status.Approval; a == nil || a.Approved == nil || a.Approved.By != "bob" || !a.Approved.At.Time.Equal(now.UTC().Truncate(time.Second)) {
		t.Errorf("status.approval: %+v", a)
	}
	out.Reset()
	if err := bob.Deny(ctx, ns, "refunds", "payouts go through treasury"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ak), ak); err != nil {
		t.Fatal(err)
	}
	if d := ak.Status.Approval.Denied; d == nil || d.By != "bob" || d.Reason != "payouts go through treasury" || ak.Status.Approval.Approved == nil {
		t.Errorf("status.approval after the denial: %+v", ak.Status.Approval)
	}
	out.Reset()
	if err := bob.Status(ctx, ns, "refunds"); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"Approved: by bob at " + now.UTC().Truncate(time.Second).Format(time.RFC3339) + ": scopes [payments:refund], validity 30d, rate limit 10/1s",
		"Denied: by bob", "(payouts go through treasury)", "Requested by: " + ak.Annotations[keywardv1alpha1.RequestedByAnnotation]} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestReportLeakFindsTheKeysAPIKeyByHashAndReportsItInTheCallersName(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	_, key := withKey(t, ns, "orders", "orders:read")
	const editor = "leak-finder"
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: editor, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: editor}}}); err != nil {
		t.Fatal(err)
	}
	stranger, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	found, err := ReadKeys(strings.NewReader("\n" + key + "\n\n" + stranger + "\n"))
	if err != nil || len(found) != 2 {
		t.Fatalf("ReadKeys: %v %v", found, err)
	}
	if _, err := ReadKeys(strings.NewReader(key + "\nnot a key at all\n")); err == nil || !strings.Contains(err.Error(), "line 2") ||
		strings.Contains(err.Error(), "not a key at all") {
		t.Errorf("a line that is not a key: %v; want its number, not its text", err)
	}
	p, out := newPlugin(testenv.Impersonating(env.Config, editor))
	if err := eventually.Poll(func() error {
		out.Reset()
		err := p.ReportLeak(ctx, ns, false, found, "https://tickets.example.com/T-1")
		if err == nil || !strings.Contains(err.Error(), "1 of 2 keys belong to no APIKey") {
			return fmt.Errorf("reporting: %w", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	id := keys.Sum(key).ID()
	if !strings.Contains(out.String(), id+" of apikey.keyward.dev/orders (namespace "+ns+") reported leaked") || strings.Contains(out.String(), key) {
		t.Errorf("report-leak printed %q", out.String())
	}
	ak := get(t, ns, "orders")
	if len(ak.Status.Leaks) != 1 || ak.Status.Leaks[0].KeyID != id || ak.Status.Leaks[0].Reporter != editor ||
		ak.Status.Leaks[0].URL != "https://tickets.example.com/T-1" {
		t.Errorf("status.leaks: %+v", ak.Status.Leaks)
	}
	out.Reset()
	if err := p.ReportLeak(ctx, ns, false, found[:1], ""); err != nil || !strings.Contains(out.String(), "already reported") {
		t.Errorf("reporting it again: %v, %q", err, out.String())
	}
}
