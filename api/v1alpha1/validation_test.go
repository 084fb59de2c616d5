package v1alpha1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env) }

// apiKey builds an APIKey from a YAML spec body.
func apiKey(t *testing.T, ns, name, spec string) *unstructured.Unstructured {
	t.Helper()
	doc := fmt.Sprintf("apiVersion: keyward.dev/v1alpha1\nkind: APIKey\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, ns, indent(spec))
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("test YAML does not parse: %v\n%s", err, doc)
	}
	return u
}

func indent(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || s == "{}" {
		return "  {}\n"
	}
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

func manyScopes(n int) string {
	var b strings.Builder
	b.WriteString("scopes:\n")
	for i := range n {
		fmt.Fprintf(&b, "- s%d:read\n", i)
	}
	return b.String()
}

func TestAPIServerRejectsInvalidAPIKeysNamingTheField(t *testing.T) {
	testenv.Need(t)
	webhook := func(url string) string {
		return fmt.Sprintf("webhook:\n  url: %q\n  signingSecretRef: {name: hook}", url)
	}
	cases := []struct {
		name string
		spec string
		// field is the path the error must name; message is part of the explanation it must give.
		field, message string
	}{
		{"validity below one hour in minutes", "validity: 30m", "spec.validity", "at least 1h"},
		{"validity of zero", "validity: 0h", "spec.validity", "at least 1h"},
		{"validity in seconds below one hour", "validity: 3599s", "spec.validity", "at least 1h"},
		{"validity above ten years", "validity: 11y", "spec.validity", "at most 10y"},
		{"validity with a unit word", "validity: 90days", "spec.validity", "for example 90d"},
		{"validity with a fraction", "validity: 1.5d", "spec.validity", "for example 90d"},
		{"validity without unit", "validity: \"90\"", "spec.validity", "for example 90d"},
		{"validity and expiresAt together", "validity: 30d\nexpiresAt: \"2030-01-01T00:00:00Z\"", "spec.expiresAt", "mutually exclusive"},
		{"expiresAt not a timestamp", "expiresAt: tomorrow", "spec.expiresAt", "date-time"},
		{"renewBefore equal to the default validity", "rotation: {renewBefore: 90d}", "spec.rotation.renewBefore", "shorter than validity"},
		{"renewBefore longer than validity", "validity: 7d\nrotation: {renewBefore: 30d}", "spec.rotation.renewBefore", "shorter than validity"},
		{"renewBefore with a fixed expiry", "expiresAt: \"2030-01-01T00:00:00Z\"\nrotation: {renewBefore: 1d}", "spec.rotation.renewBefore", "cannot be combined with expiresAt"},
		{"renewBefore malformed", "rotation: {renewBefore: soon}", "spec.rotation.renewBefore", "for example 90d"},
		// 28 days before a one-month expiry is the issue time itself in February: a renewal loop.
		{"renewBefore 4w with a validity of one calendar month", "validity: 1mo\nrotation: {renewBefore: 4w}", "spec.rotation.renewBefore", "28 in validity"},
		// One month before an expiry 30 days out reaches back before the issue time after a 31-day month.
		{"renewBefore 1mo with a validity of 30 days", "validity: 30d\nrotation: {renewBefore: 1mo}", "spec.rotation.renewBefore", "31 days in renewBefore"},
		{"renewBefore 12mo with a validity of one year", "validity: 1y\nrotation: {renewBefore: 12mo}", "spec.rotation.renewBefore", "shorter than validity"},
		{"unknown rotation policy", "rotation: {policy: Sometimes}", "spec.rotation.policy", "Unsupported value"},
		{"gracePeriod above thirty days", "rotation: {gracePeriod: 31d}", "spec.rotation.gracePeriod", "at most 30d"},
		{"prefix with uppercase", "prefix: Ord", "spec.prefix", "should match"},
		{"prefix of one character", "prefix: o", "spec.prefix", "should match"},
		{"prefix longer than sixteen", "prefix: abcdefghijklmnopq", "spec.prefix", "should match"},
		{"prefix starting with a digit", "prefix: 1ord", "spec.prefix", "should match"},
		{"prefix with an underscore", "prefix: or_d", "spec.prefix", "should match"},
		{"scope with a space", "scopes: [\"orders read\"]", "spec.scopes[0]", "should match"},
		{"empty scope", "scopes: [\"\"]", "spec.scopes[0]", "at least 1 chars long"},
		{"scope with an empty segment", "scopes: [\"orders::read\"]", "spec.scopes[0]", "should match"},
		{"scope starting with a colon", "scopes: [\":read\"]", "spec.scopes[0]", "should match"},
		{"more than 256 scopes", manyScopes(257), "spec.scopes", "must have at most 256 items"},
		{"duplicate scopes", "scopes: [orders:read, orders:read]", "spec.scopes[1]", "Duplicate value"},
		{"webhook over plain http", webhook("http://hooks.example.com/keyward"), "spec.webhook.url", "must use https"},
		{"webhook over ftp to a service", webhook("ftp://hooks.billing.svc/keyward"), "spec.webhook.url", "must use https"},
		{"webhook url not a url", webhook("hooks example"), "spec.webhook.url", "absolute URL"},
		{"webhook without signing secret", "webhook: {url: \"https://hooks.example.com\"}", "spec.webhook.signingSecretRef", "Required value"},
		{"webhook signing secret with a bad name", "webhook: {url: \"https://hooks.example.com\", signingSecretRef: {name: Hook_Secret}}", "spec.webhook.signingSecretRef.name", "should match"},
		{"webhook unknown event", webhook("https://hooks.example.com") + "\n  events: [key.stolen]", "spec.webhook.events[0]", "Unsupported value"},
		{"webhook expiringBefore malformed", webhook("https://hooks.example.com") + "\n  expiringBefore: 1 week", "spec.webhook.expiringBefore", "for example 90d"},
		{"webhook caBundle neither PEM nor base64 PEM", webhook("https://hooks.example.com") + "\n  caBundle: not a certificate", "spec.webhook.caBundle", "caBundle must be PEM certificates"},
		{"webhook caBundle base64 of something else", webhook("https://hooks.example.com") + "\n  caBundle: aGVsbG8gd29ybGQ=", "spec.webhook.caBundle", "caBundle must be PEM certificates"},
		{"reserved label in secretTemplate", "secretTemplate: {labels: {keyward.dev/apikey: x}}", "spec.secretTemplate.labels", "reserved"},
		{"reserved subdomain label in secretTemplate", "secretTemplate: {labels: {team.keyward.dev/owner: x}}", "spec.secretTemplate.labels", "reserved"},
		{"reserved annotation in secretTemplate", "secretTemplate: {annotations: {keyward.dev/rotate: now}}", "spec.secretTemplate.annotations", "reserved"},
		{"Argo CD's label in secretTemplate", "secretTemplate: {labels: {argocd.argoproj.io/secret-type: cluster}}", "spec.secretTemplate.labels", "another controller acts on"},
		{"a reflector's annotation in secretTemplate", "secretTemplate: {annotations: {reflector.v1.k8s.emberstack.com/reflection-allowed: \"true\"}}",
			"spec.secretTemplate.annotations", "another controller acts on"},
		{"a secretTemplate annotation value over 1024 characters", "secretTemplate: {annotations: {a: " + strings.Repeat("x", 1025) + "}}",
			"spec.secretTemplate.annotations", "at most 1024 characters"},
		{"a secretTemplate label value over 63 characters", "secretTemplate: {labels: {a: " + strings.Repeat("x", 64) + "}}",
			"spec.secretTemplate.labels", "at most 63 characters"},
		{"a secretTemplate key over 317 characters", "secretTemplate: {annotations: {" + strings.Repeat("x", 318) + ": v}}",
			"spec.secretTemplate.annotations", "keys must be at most 317"},
		{"a secretTemplate over 4096 characters in all", "secretTemplate: {annotations: {a: " + strings.Repeat("x", 1024) + ", b: " +
			strings.Repeat("x", 1024) + ", c: " + strings.Repeat("x", 1024) + ", d: " + strings.Repeat("x", 1024) + "}}",
			"spec.secretTemplate", "at most 4096 characters"},
		{"secretName not a DNS name", "secretName: Orders_Key", "spec.secretName", "should match"},
		{"rate limit of zero requests", "rateLimit: {requests: 0, period: 1m}", "spec.rateLimit.requests", "greater than or equal to 1"},
		{"rate limit period of zero", "rateLimit: {requests: 10, period: 0s}", "spec.rateLimit.period", "at least 1s"},
		{"rate limit period above a day", "rateLimit: {requests: 10, period: 2d}", "spec.rateLimit.period", "at most 1d"},
		{"rate limit without period", "rateLimit: {requests: 10}", "spec.rateLimit.period", "Required value"},
		{"displayName too long", "displayName: " + strings.Repeat("x", 129), "spec.displayName", "may not be more than 128"},
		{"description too long", "description: " + strings.Repeat("x", 1025), "spec.description", "may not be more than 1024"},
	}
	ns := env.Namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := apiKey(t, ns, fmt.Sprintf("bad-%d", i), tc.spec)
			err := env.Client.Create(context.Background(), obj)
			if err == nil {
				t.Fatalf("the API server accepted an invalid APIKey:\n%s", tc.spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("error does not name the field %s: %v", tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error does not say %q: %v", tc.message, err)
			}
		})
	}
}

// A malformed duration gets one error, naming the field and showing the format, not the format and then
// every other rule on the field failing on what it cannot read.
func TestAMalformedDurationGetsOneErrorThatNamesTheFieldAndShowsTheFormat(t *testing.T) {
	testenv.Need(t)
	cases := []struct{ name, spec, field string }{
		{"a unit word", "validity: 90 days", "spec.validity"},
		{"an upper-case unit", "validity: 90D", "spec.validity"},
		{"a unit word in renewBefore beside a validity", "validity: 30d\nrotation: {renewBefore: 1 week}", "spec.rotation.renewBefore"},
		{"a malformed validity beside a renewBefore", "validity: 30 days\nrotation: {renewBefore: 7d}", "spec.validity"},
		{"a fraction in gracePeriod", "rotation: {gracePeriod: 1.5h}", "spec.rotation.gracePeriod"},
		{"a rate limit period without a number", "rateLimit: {requests: 10, period: m}", "spec.rateLimit.period"},
	}
	ns := env.Namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), apiKey(t, ns, fmt.Sprintf("duration-%d", i), tc.spec))
			var status apierrors.APIStatus
			if !errors.As(err, &status) || status.Status().Details == nil {
				t.Fatalf("want an Invalid error with details, got %v", err)
			}
			causes := status.Status().Details.Causes
			if len(causes) != 1 {
				t.Fatalf("%d errors for one mistake: %v", len(causes), err)
			}
			if c := causes[0]; c.Field != tc.field || !strings.Contains(c.Message, "for example 90d") {
				t.Errorf("the error %q on %s does not name %s and show the format", c.Message, c.Field, tc.field)
			}
		})
	}
}

func TestAPIServerAcceptsBoundaryValues(t *testing.T) {
	testenv.Need(t)
	cases := []struct{ name, spec string }{
		{"empty spec", "{}"},
		{"validity of exactly one hour", "validity: 1h"},
		{"validity of 60 minutes", "validity: 60m"},
		{"validity of ten years", "validity: 10y"},
		{"calendar months", "validity: 6mo\nrotation: {renewBefore: 1mo}"},
		{"calendar months in the same unit, one apart", "validity: 12mo\nrotation: {renewBefore: 11mo}"},
		{"a year renewed 52 weeks before", "validity: 1y\nrotation: {renewBefore: 52w}"},
		{"two months renewed five weeks before", "validity: 2mo\nrotation: {renewBefore: 5w}"},
		{"fixed expiry nine years ahead", "expiresAt: \"" + time.Now().UTC().AddDate(9, 0, 0).Format(time.RFC3339) + "\""},
		{"renewBefore just below the default validity", "rotation: {renewBefore: 89d}"},
		{"fixed expiry with rotation policy", "expiresAt: \"2030-01-01T00:00:00Z\"\nrotation: {policy: Disabled}"},
		{"zero grace period", "rotation: {gracePeriod: 0s}"},
		{"wildcard scopes", "scopes: [\"*\", \"orders:*\", \"calls:recording-download\", meeting_create]"},
		{"exactly 256 scopes", manyScopes(256)},
		{"http webhook to an in-cluster service", "webhook: {url: \"http://hooks.billing.svc:8080/keyward\", signingSecretRef: {name: hook}}"},
		{"webhook caBundle in PEM", "webhook: {url: \"https://hooks.example.com\", signingSecretRef: {name: hook}, caBundle: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"}"},
		{"webhook caBundle in base64-encoded PEM", "webhook: {url: \"https://hooks.example.com\", signingSecretRef: {name: hook}, caBundle: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=}"},
		{"http webhook to a fully qualified service", "webhook: {url: \"http://hooks.billing.svc.cluster.local/k\", signingSecretRef: {name: hook}}"},
		{"a secretTemplate at its bounds", "secretTemplate: {labels: {" + strings.Repeat("l", 317) + ": " + strings.Repeat("v", 63) +
			"}, annotations: {a: " + strings.Repeat("x", 1024) + ", b: " + strings.Repeat("x", 1024) + ", c: " + strings.Repeat("x", 1024) +
			", d: " + strings.Repeat("x", 1024-317-63-4) + "}}"},
		{"unreserved secretTemplate keys", "secretTemplate: {labels: {team: billing}, annotations: {reloader.stakater.com/match: \"true\", notkeyward.dev/x: \"y\"}}"},
	}
	ns := env.Namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), apiKey(t, ns, fmt.Sprintf("ok-%d", i), tc.spec)); err != nil {
				t.Fatalf("the API server rejected a valid APIKey: %v\n%s", err, tc.spec)
			}
		})
	}
}

func TestAdmissionRejectsAFixedExpiryMoreThanTenYearsAhead(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	for i, expiry := range []string{"9999-12-31T00:00:00Z", time.Now().UTC().AddDate(10, 0, 2).Format(time.RFC3339)} {
		err := env.Client.Create(context.Background(), apiKey(t, ns, fmt.Sprintf("far-%d", i), "expiresAt: \""+expiry+"\""))
		if err == nil {
			t.Fatalf("the API server accepted expiresAt %s", expiry)
		}
		if !strings.Contains(err.Error(), "spec.expiresAt") || !strings.Contains(err.Error(), "more than 10 years") {
			t.Errorf("expiresAt %s: the error does not explain the field and the bound: %v", expiry, err)
		}
	}
	// An update is bounded by the same creation time: moving the expiry of an old APIKey out is refused too.
	ok := apiKey(t, ns, "near", "expiresAt: \""+time.Now().UTC().AddDate(1, 0, 0).Format(time.RFC3339)+"\"")
	if err := env.Client.Create(context.Background(), ok); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(ok.Object, "9999-12-31T00:00:00Z", "spec", "expiresAt"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(context.Background(), ok); err == nil || !strings.Contains(err.Error(), "spec.expiresAt") {
		t.Errorf("moving expiresAt to 9999 on update: %v", err)
	}
}

func TestAdmissionRefusesAFixedExpiryThatHasPassedAtCreation(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	past := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	err := env.Client.Create(context.Background(), apiKey(t, ns, "past", "expiresAt: \""+past+"\""))
	if err == nil {
		t.Fatalf("the API server accepted expiresAt %s, which has passed", past)
	}
	if msg := err.Error(); !strings.Contains(msg, "spec.expiresAt: "+past+" has already passed") || !strings.Contains(msg, "validity") {
		t.Errorf("the error does not name the field, the date and the fix: %v", err)
	}
	// Admission knows the time only at creation; an update to a passed date is the controller's to judge
	// (InvalidSpec, no key minted: TestPlanStalls), so it is not refused here.
	ok := apiKey(t, ns, "later", "expiresAt: \""+time.Now().UTC().Add(time.Hour).Format(time.RFC3339)+"\"")
	if err := env.Client.Create(context.Background(), ok); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(ok.Object, past, "spec", "expiresAt"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(context.Background(), ok); err != nil {
		t.Errorf("an update to a passed expiresAt was refused by admission: %v", err)
	}
}

func TestAdmissionBoundsTheTokensAnAPIKeyAsksWith(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	at := func(n int) string { return strings.Repeat("t", n) }
	cases := []struct {
		annotation string
		value      string
		ok         bool
	}{
		{keywardv1alpha1.RotateAnnotation, at(keywardv1alpha1.MaxTokenLength), true},
		{keywardv1alpha1.RotateAnnotation, at(keywardv1alpha1.MaxTokenLength + 1), false},
		{keywardv1alpha1.WebhookTestAnnotation, at(keywardv1alpha1.MaxTokenLength), true},
		{keywardv1alpha1.WebhookTestAnnotation, at(keywardv1alpha1.MaxTokenLength + 1), false},
		{keywardv1alpha1.RevokeAnnotation, at(1024), true},
		{keywardv1alpha1.RevokeAnnotation, at(1025), false},
	}
	for i, tc := range cases {
		ak := apiKey(t, ns, fmt.Sprintf("tokens-%d", i), "{}")
		ak.SetAnnotations(map[string]string{tc.annotation: tc.value})
		err := env.Client.Create(context.Background(), ak)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s of %d characters was refused: %v", tc.annotation, len(tc.value), err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "metadata.annotations["+tc.annotation+"]")):
			t.Errorf("%s of %d characters: %v, want a refusal naming the annotation", tc.annotation, len(tc.value), err)
		}
	}
	// Adding a long token to an existing APIKey is refused the same way.
	ok := apiKey(t, ns, "tokens-update", "{}")
	if err := env.Client.Create(context.Background(), ok); err != nil {
		t.Fatal(err)
	}
	ok.SetAnnotations(map[string]string{keywardv1alpha1.RotateAnnotation: at(4096)})
	if err := env.Client.Update(context.Background(), ok); err == nil {
		t.Error("a 4096-character rotate token was added on update")
	}
}

func TestAPIServerRejectsNamesLongerThanALabelValue(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	if err := env.Client.Create(context.Background(), apiKey(t, ns, strings.Repeat("a", 63), "{}")); err != nil {
		t.Fatalf("a 63-character name was rejected: %v", err)
	}
	err := env.Client.Create(context.Background(), apiKey(t, ns, strings.Repeat("a", 64), "{}"))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "metadata.name must be at most 63 characters") {
		t.Errorf("a 64-character name: %v", err)
	}
}

func TestSecretNameIsImmutable(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	cases := []struct {
		name             string
		initial, updated string // spec.secretName before and after; "" means unset
		wantRejected     bool
	}{
		{"changing an explicit name", "first", "second", true},
		{"setting a name other than the default", "", "other", true},
		{"removing an explicit name that differs from the default", "other", "", true},
		{"spelling out the default name", "", "SELF", false},
		{"keeping the name", "first", "first", false},
	}
	ns := env.Namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("immutable-%d", i)
			resolve := func(s string) string {
				if s == "SELF" {
					return name
				}
				return s
			}
			spec := "{}"
			if tc.initial != "" {
				spec = "secretName: " + resolve(tc.initial)
			}
			obj := apiKey(t, ns, name, spec)
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("create: %v", err)
			}
			if tc.updated == "" {
				unstructured.RemoveNestedField(obj.Object, "spec", "secretName")
			} else if err := unstructured.SetNestedField(obj.Object, resolve(tc.updated), "spec", "secretName"); err != nil {
				t.Fatal(err)
			}
			err := env.Client.Update(ctx, obj)
			switch {
			case tc.wantRejected && err == nil:
				t.Fatal("the API server accepted a change of the Secret name")
			case tc.wantRejected && !(apierrors.IsInvalid(err) && strings.Contains(err.Error(), "spec.secretName:") && strings.Contains(err.Error(), "immutable")):
				t.Fatalf("want an Invalid error naming spec.secretName as immutable, got %v", err)
			case !tc.wantRejected && err != nil:
				t.Fatalf("the API server rejected an update that keeps the Secret name: %v", err)
			}
		})
	}
}

func TestEverySampleIsAccepted(t *testing.T) {
	testenv.Need(t)
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s (%v)", dir, err)
	}
	ns := env.Namespace(t)
	apiKeys := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.SetNamespace(ns)
			if err := env.Client.Create(context.Background(), obj); err != nil {
				t.Errorf("%s: %s %s rejected: %v", filepath.Base(file), obj.GetKind(), obj.GetName(), err)
			}
			if obj.GetKind() == "APIKey" {
				apiKeys++
			}
		}
	}
	if apiKeys < 3 {
		t.Errorf("the samples hold %d APIKeys; want at least 3 (minimal, full, fixed expiry)", apiKeys)
	}
}
