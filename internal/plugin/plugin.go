// Package plugin is the logic of the kubectl-keyward plugin: the everyday actions of the dashboards our users
// come from (list keys with ID, masked hint, creation and scopes; create; rotate; revoke; disable and enable;
// reveal; verify; test the webhook; status), as calls on a controller-runtime client that
// cmd/kubectl-keyward wires to kubectl's flags.
package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/approval"
	"github.com/keyward-dev/keyward/internal/guardrail"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/notify"
)

// Scheme knows the kinds the plugin reads: Keyward's and the built-in ones.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(keywardv1alpha1.AddToScheme(s))
	return s
}

// Plugin runs the verbs against one cluster.
type Plugin struct {
	Client client.Client
	Out    io.Writer
	// Now is the clock for ages and rotate tokens.
	Now func() time.Time
}

// out is where the plugin prints: Out, with every control character escaped but its own layout's.
func (p *Plugin) out() io.Writer { return terminalWriter{w: p.Out} }

// List prints the APIKeys of namespace (every namespace when allNamespaces) matching selector: name, key ID,
// masked key, created, expires, scopes (or unrestricted), state.
func (p *Plugin) List(ctx context.Context, namespace string, allNamespaces bool, selector string) error {
	sel, err := labels.Parse(selector)
	if err != nil {
		return fmt.Errorf("-l %q: %w", selector, err)
	}
	opts := []client.ListOption{client.MatchingLabelsSelector{Selector: sel}}
	if !allNamespaces {
		opts = append(opts, client.InNamespace(namespace))
	}
	var list keywardv1alpha1.APIKeyList
	if err := p.Client.List(ctx, &list, opts...); err != nil {
		return err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	w := tabwriter.NewWriter(p.out(), 0, 4, 2, ' ', 0)
	header := "NAME\tKEY ID\tKEY\tCREATED\tEXPIRES\tSCOPES\tSTATE"
	if allNamespaces {
		header = "NAMESPACE\t" + header
	}
	fmt.Fprintln(w, header)
	judge := p.policyJudge(ctx)
	for _, ak := range list.Items {
		state := State(&ak)
		if meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionPolicyViolation) || len(judge(&ak)) > 0 {
			state += ",PolicyViolation"
		}
		row := []string{ak.Name, dash(ak.Status.KeyID), dash(ak.Status.KeyHint), ak.CreationTimestamp.UTC().Format("2006-01-02"),
			timeOrDash(ak.Status.ExpiresAt), scopesOf(ak), state}
		if allNamespaces {
			row = append([]string{ak.Namespace}, row...)
		}
		for i := range row {
			row[i] = Escape(row[i])
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

// policyJudge returns what judges an APIKey against the APIKeyPolicies that apply to its namespace, as
// admission would judge it now (internal/guardrail): an APIKey created before a policy it breaks is marked.
// Which policies apply depends on the namespace's labels; where the plugin may not read them (or the
// policies), it judges nothing rather than guess.
func (p *Plugin) policyJudge(ctx context.Context) func(*keywardv1alpha1.APIKey) []guardrail.Violation {
	var policies keywardv1alpha1.APIKeyPolicyList
	if err := p.Client.List(ctx, &policies); err != nil || len(policies.Items) == 0 {
		return func(*keywardv1alpha1.APIKey) []guardrail.Violation { return nil }
	}
	applying := map[string][]keywardv1alpha1.APIKeyPolicy{}
	return func(ak *keywardv1alpha1.APIKey) []guardrail.Violation {
		ps, ok := applying[ak.Namespace]
		if !ok {
			n := &corev1.Namespace{}
			if err := p.Client.Get(ctx, types.NamespacedName{Name: ak.Namespace}, n); err == nil {
				ps = guardrail.Applying(policies.Items, n.Labels)
			}
			applying[ak.Namespace] = ps
		}
		return guardrail.Check(ps, ak.Spec, ak.CreationTimestamp.Time)
	}
}

// State is a one-word summary of an APIKey's conditions.
func State(ak *keywardv1alpha1.APIKey) string {
	if ak.Status.ObservedGeneration < ak.Generation {
		return "Reconciling"
	}
	if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionReady); c != nil {
		if c.Status == metav1.ConditionTrue {
			return "Ready"
		}
		return c.Reason
	}
	return "Pending"
}

// joinScopes joins scopes with sep.
func joinScopes(scopes []keywardv1alpha1.Scope, sep string) string {
	out := make([]string, len(scopes))
	for i, sc := range scopes {
		out[i] = string(sc)
	}
	return strings.Join(out, sep)
}

func scopesOf(ak keywardv1alpha1.APIKey) string {
	var s []string
	for _, sc := range ak.Spec.Scopes {
		if sc == "*" {
			return "unrestricted"
		}
		s = append(s, string(sc))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// CreateOptions are what `create` sets.
type CreateOptions struct {
	Scopes                []string
	Validity, Description string
	DisplayName, Prefix   string
	// ExpiresAt is a fixed expiry in RFC 3339 (instead of Validity).
	ExpiresAt string
	// RateLimit is REQUESTS/PERIOD, for example 100/1m.
	RateLimit                 string
	WebhookURL, WebhookSecret string
	DryRun                    bool
}

// SplitScopes is the scopes of a comma-separated flag, each without surrounding space, empty ones dropped:
// "orders:read, orders:write" is two scopes.
func SplitScopes(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// parseRateLimit reads REQUESTS/PERIOD (100/1m) into a RateLimit; the API server judges the bounds.
func parseRateLimit(v string) (*keywardv1alpha1.RateLimit, error) {
	n, period, ok := strings.Cut(strings.ReplaceAll(v, " ", ""), "/")
	requests, err := strconv.ParseInt(n, 10, 32)
	if !ok || err != nil || period == "" {
		return nil, fmt.Errorf("--rate-limit %q: write REQUESTS/PERIOD, for example 100/1m or 10/1s", v)
	}
	return &keywardv1alpha1.RateLimit{Requests: int32(requests), Period: keywardv1alpha1.RatePeriod(period)}, nil
}

// Create builds an APIKey and creates it, or with DryRun prints it as YAML (to commit to a GitOps repository).
func (p *Plugin) Create(ctx context.Context, namespace, name string, o CreateOptions) error {
	ak := &keywardv1alpha1.APIKey{TypeMeta: metav1.TypeMeta{APIVersion: keywardv1alpha1.GroupVersion.String(), Kind: "APIKey"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: keywardv1alpha1.APIKeySpec{Description: o.Description, DisplayName: o.DisplayName, Prefix: o.Prefix,
			Validity: keywardv1alpha1.Duration(o.Validity)}}
	for _, s := range SplitScopes(o.Scopes) {
		ak.Spec.Scopes = append(ak.Spec.Scopes, keywardv1alpha1.Scope(s))
	}
	if o.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, o.ExpiresAt)
		if err != nil {
			return fmt.Errorf("--expires-at %q: write a time in RFC 3339, for example 2027-03-31T00:00:00Z", o.ExpiresAt)
		}
		ak.Spec.ExpiresAt = &metav1.Time{Time: t}
	}
	if o.RateLimit != "" {
		rl, err := parseRateLimit(o.RateLimit)
		if err != nil {
			return err
		}
		ak.Spec.RateLimit = rl
	}
	if o.WebhookURL != "" {
		ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: o.WebhookURL, SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: o.WebhookSecret}}
	}
	if o.DryRun {
		out, err := yaml.Marshal(struct {
			APIVersion string                     `json:"apiVersion"`
			Kind       string                     `json:"kind"`
			Metadata   map[string]string          `json:"metadata"`
			Spec       keywardv1alpha1.APIKeySpec `json:"spec"`
		}{ak.APIVersion, ak.Kind, map[string]string{"name": name, "namespace": namespace}, ak.Spec})
		if err != nil {
			return err
		}
		_, err = p.out().Write(out)
		return err
	}
	if err := p.Client.Create(ctx, ak); err != nil {
		return err
	}
	printf(p.out(), "apikey.keyward.dev/%s created; `kubectl keyward reveal %s` prints the key once it is minted\n", name, name)
	return nil
}

// RotateOptions are what `rotate` sets.
type RotateOptions struct {
	// Grace, when set, is the previous key's grace period ("0s" for a leaked key).
	Grace string
	// Wait is how long to wait for the manager to mint the new key and print its ID; 0 returns at once.
	Wait time.Duration
}

// Rotate asks for a new key now and, unless o.Wait is 0, waits for it and prints its key ID.
func (p *Plugin) Rotate(ctx context.Context, namespace, name string, o RotateOptions) error {
	token := p.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	var before keywardv1alpha1.APIKey
	if err := p.patch(ctx, namespace, name, func(ak *keywardv1alpha1.APIKey) {
		before = *ak.DeepCopy()
		if o.Grace != "" {
			if ak.Spec.Rotation == nil {
				ak.Spec.Rotation = &keywardv1alpha1.RotationSpec{}
			}
			ak.Spec.Rotation.GracePeriod = keywardv1alpha1.Duration(o.Grace)
		}
		setAnnotation(ak, keywardv1alpha1.RotateAnnotation, token)
	}, "rotation requested"); err != nil || o.Wait == 0 {
		return err
	}
	var ak *keywardv1alpha1.APIKey
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, o.Wait, true, func(ctx context.Context) (bool, error) {
		ak = &keywardv1alpha1.APIKey{}
		if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
			return false, err
		}
		if ak.Status.LastHandledRotateToken == token && ak.Status.KeyID != before.Status.KeyID {
			return true, nil
		}
		// A spec the manager judged and refused will not mint whatever we wait for.
		if c := meta.FindStatusCondition(ak.Status.Conditions, keywardv1alpha1.ConditionStalled); c != nil &&
			c.Status == metav1.ConditionTrue && ak.Status.ObservedGeneration >= ak.Generation {
			return false, fmt.Errorf("no new key: %s: %s", c.Reason, c.Message)
		}
		return false, nil
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("no new key after %s (the manager has not answered; see `kubectl keyward status %s`)", o.Wait, name)
	}
	if err != nil {
		return err
	}
	printf(p.out(), "apikey.keyward.dev/%s: new key %s", name, ak.Status.KeyID)
	for _, pk := range ak.Status.PreviousKeys {
		if pk.KeyID == before.Status.KeyID {
			printf(p.out(), "; %s keeps working until %s", pk.KeyID, pk.ValidUntil.UTC().Format(time.RFC3339))
		}
	}
	if before.Status.KeyID != "" && !slices.ContainsFunc(ak.Status.PreviousKeys, func(pk keywardv1alpha1.PreviousKey) bool { return pk.KeyID == before.Status.KeyID }) {
		printf(p.out(), "; %s stopped", before.Status.KeyID)
	}
	printf(p.out(), "\n")
	return nil
}

// Revoke stops one key by ID at once, adding it to the keyward.dev/revoke annotation. A key ID that is neither
// the APIKey's current key nor one of its previous keys is refused, naming those that are.
func (p *Plugin) Revoke(ctx context.Context, namespace, name, keyID string) error {
	if !strings.HasPrefix(keyID, keys.IDPrefix) {
		return fmt.Errorf("%q is not a key ID (kid_…)", keyID)
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	var known []string
	if ak.Status.KeyID != "" {
		known = append(known, ak.Status.KeyID+" (current)")
	}
	for _, pk := range ak.Status.PreviousKeys {
		known = append(known, pk.KeyID+" (previous, valid until "+pk.ValidUntil.UTC().Format(time.RFC3339)+")")
	}
	if !slices.ContainsFunc(known, func(k string) bool { return strings.HasPrefix(k, keyID+" ") }) {
		return fmt.Errorf("APIKey %s has no key %s; its keys are: %s", name, keyID, dash(strings.Join(known, ", ")))
	}
	return p.patch(ctx, namespace, name, func(ak *keywardv1alpha1.APIKey) {
		ids := strings.Split(ak.Annotations[keywardv1alpha1.RevokeAnnotation], ",")
		ids = append(ids, keyID)
		var kept []string
		for _, id := range ids {
			if id = strings.TrimSpace(id); id != "" && !contains(kept, id) {
				kept = append(kept, id)
			}
		}
		setAnnotation(ak, keywardv1alpha1.RevokeAnnotation, strings.Join(kept, ","))
	}, keyID+" revoked")
}

// SetDisabled disables or enables every key of the APIKey.
func (p *Plugin) SetDisabled(ctx context.Context, namespace, name string, disabled bool) error {
	what := "enabled"
	if disabled {
		what = "disabled"
	}
	return p.patch(ctx, namespace, name, func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = disabled }, what)
}

// TestWebhook sends one webhook.test.
func (p *Plugin) TestWebhook(ctx context.Context, namespace, name string) error {
	token := p.Now().UTC().Format("20060102T150405.000Z")
	return p.patch(ctx, namespace, name, func(ak *keywardv1alpha1.APIKey) {
		setAnnotation(ak, keywardv1alpha1.WebhookTestAnnotation, token)
	}, "webhook.test "+token+" requested; `kubectl keyward status "+name+"` shows the answer")
}

// ErrNotATerminal is returned by Reveal when the output is not a terminal and force is not set.
var ErrNotATerminal = errors.New("refusing to print a key to something that is not a terminal; pass --force to do it anyway")

// Reveal prints the current key (every time it is run: the key stays in its Secret) to a terminal
// (isTerminal), or anywhere with force.
func (p *Plugin) Reveal(ctx context.Context, namespace, name string, isTerminal, force bool) error {
	if !isTerminal && !force {
		return ErrNotATerminal
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	secretName := ak.Status.SecretName
	if secretName == "" {
		return fmt.Errorf("APIKey %s has no key yet", name)
	}
	s := &corev1.Secret{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: secretName}, s); err != nil {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("you may not read Secret %s: revealing a key needs \"get\" on secrets in namespace %q (keyward-view and view do not grant it)", secretName, namespace)
		}
		return err
	}
	key := string(s.Data["api-key"])
	if key == "" || keys.Hash(key) != ak.Status.KeyHash {
		return fmt.Errorf("Secret %s does not hold the key status describes (%s); Keyward is replacing it", secretName, ak.Status.KeyID)
	}
	_, err := fmt.Fprintln(p.out(), key)
	return err
}

// MaxKeyInput bounds what ReadKey reads: a key is well under 100 bytes.
const MaxKeyInput = 4 << 10

// ReadKey reads a key from r (standard input or a file): its first line, without surrounding space. The key
// is never an argument, which shell history and every process listing would keep.
func ReadKey(r io.Reader) (string, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxKeyInput+1))
	if err != nil {
		return "", fmt.Errorf("reading the key: %w", err)
	}
	if len(raw) > MaxKeyInput {
		return "", fmt.Errorf("the input is longer than %d bytes; pass only the key", MaxKeyInput)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", errors.New("no key on the input: pipe it in (kubectl keyward reveal NAME --force | kubectl keyward verify) or pass --file")
	}
	return line, nil
}

// ErrScopesNeedVerifier is returned by Verify when scopes are asked for without a verifier: the offline check
// knows the key's shape, not what it grants.
var ErrScopesNeedVerifier = errors.New("--scopes needs --verifier-url: only the verifier knows what a key grants (the offline check reads its shape and checksum)")

// Verify checks a key offline (shape and checksum) and, with verifierURL, asks the verifier's JSON API.
func (p *Plugin) Verify(ctx context.Context, key string, scopes []string, verifierURL string) error {
	scopes = SplitScopes(scopes)
	if len(scopes) > 0 && verifierURL == "" {
		return ErrScopesNeedVerifier
	}
	if _, err := keys.Parse(key); err != nil {
		printf(p.out(), "MALFORMED: %v (checked offline)\n", err)
		return errors.New("the key is malformed")
	}
	printf(p.out(), "well-formed key %s (checksum valid)\n", keys.Sum(key).ID())
	if verifierURL == "" {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"key": key, "scopes": scopes})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(verifierURL, "/")+"/v1/verify", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("asking the verifier: %w", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return fmt.Errorf("the verifier answered %s: %w", resp.Status, err)
	}
	pretty, _ := json.MarshalIndent(out, "", "  ")
	fmt.Fprintln(p.out(), string(pretty))
	if out["valid"] != true {
		return fmt.Errorf("the verifier says %v", out["code"])
	}
	return nil
}

// Status prints an APIKey, its Secret's metadata (never its data), previous keys, recent events and webhook state.
func (p *Plugin) Status(ctx context.Context, namespace, name string) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	st := ak.Status
	w := tabwriter.NewWriter(p.out(), 0, 4, 2, ' ', 0)
	printf(w, "APIKey:\t%s/%s\n", namespace, name)
	printf(w, "State:\t%s\n", State(ak))
	for _, c := range st.Conditions {
		printf(w, "  %s=%s\t%s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	printf(w, "Key:\t%s %s (revision %d, %s), last used %s\n", dash(st.KeyID), dash(st.KeyHint), st.Revision,
		dash(string(st.LastRotationReason)), timeOrDash(keyUsageOf(st, st.KeyID).LastUsedAt))
	printf(w, "Issued / expires / renews:\t%s / %s / %s\n", timeOrDash(st.IssuedAt), timeOrDash(st.ExpiresAt), timeOrDash(st.RenewalTime))
	printf(w, "Scopes:\t%s\n", scopesOf(*ak))
	for _, v := range p.policyJudge(ctx)(ak) {
		printf(w, "Policy violation:\t%s\n", v.String())
	}
	if a := st.Approval; a != nil {
		for _, d := range []struct {
			what string
			d    *keywardv1alpha1.ApprovalDecision
		}{{"Approved", a.Approved}, {"Denied", a.Denied}} {
			if d.d == nil {
				continue
			}
			printf(w, "%s:\tby %s at %s: scopes [%s], %s, rate limit %s", d.what, d.d.By, d.d.At.UTC().Format(time.RFC3339),
				joinScopes(d.d.Covers.Scopes, ", "), validityOf(d.d.Covers), rateOf(d.d.Covers.RateLimit))
			if d.d.Reason != "" {
				printf(w, " (%s)", d.d.Reason)
			}
			printf(w, "\n")
		}
	}
	if by := ak.Annotations[keywardv1alpha1.RequestedByAnnotation]; by != "" {
		printf(w, "Requested by:\t%s\n", by)
	}
	for _, pk := range st.PreviousKeys {
		printf(w, "Previous key:\t%s valid until %s, last used %s\n", pk.KeyID, pk.ValidUntil.UTC().Format(time.RFC3339),
			timeOrDash(keyUsageOf(st, pk.KeyID).LastUsedAt))
	}
	if st.SecretName != "" {
		s := &metav1.PartialObjectMetadata{}
		s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		switch err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: st.SecretName}, s); {
		case err == nil:
			printf(w, "Secret:\t%s (revision %s, issued %s, APIKey %s)\n", st.SecretName,
				dash(s.Annotations["keyward.dev/revision"]), dash(s.Annotations["keyward.dev/issued-at"]), dash(s.Labels[keywardv1alpha1.APIKeyNameLabel]))
		case apierrors.IsForbidden(err):
			printf(w, "Secret:\t%s (you may not read its metadata)\n", st.SecretName)
		default:
			printf(w, "Secret:\t%s (%v)\n", st.SecretName, err)
		}
	}
	if u := st.Usage; u != nil {
		printf(w, "Usage:\t%d requests, last %s\n", u.Requests, timeOrDash(u.LastUsedAt))
	}
	if wh := st.Webhook; ak.Spec.Webhook != nil && wh != nil {
		printf(w, "Webhook:\t%s: delivered revision %d at %s, %d failing, %d waiting\n", ak.Spec.Webhook.URL, wh.LastDeliveredRevision,
			timeOrDash(wh.LastDeliveryTime), wh.ConsecutiveFailures, len(notify.Pending(wh)))
		if wh.LastError != "" {
			printf(w, "  last error:\t%s\n", wh.LastError)
		}
		if t := wh.LastTest; t != nil {
			printf(w, "  last test:\t%s at %s: %s\n", t.Token, t.Time.UTC().Format(time.RFC3339), t.Result)
		}
	}
	var evs eventsv1.EventList
	if err := p.Client.List(ctx, &evs, client.InNamespace(namespace)); err == nil {
		sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].EventTime.Before(&evs.Items[j].EventTime) })
		for _, e := range evs.Items {
			if e.Regarding.Kind == "APIKey" && e.Regarding.Name == name {
				printf(w, "Event:\t%s %s: %s\n", e.Type, e.Reason, e.Note)
			}
		}
	}
	return w.Flush()
}

// Usage prints what the verifiers reported of an APIKey's use: in all, and per key still accepted, when it
// was last accepted and how often it was accepted, rate limited and refused by code.
func (p *Plugin) Usage(ctx context.Context, namespace, name string) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	st := ak.Status
	w := tabwriter.NewWriter(p.out(), 0, 4, 2, ' ', 0)
	total, last := int64(0), (*metav1.Time)(nil)
	if st.Usage != nil {
		total, last = st.Usage.Requests, st.Usage.LastUsedAt
	}
	printf(w, "APIKey %s/%s: %d valid requests in all, last %s\n", namespace, name, total, timeOrDash(last))
	printf(w, "KEY ID\tKEY\tLAST USED\tVALID\tRATE LIMITED\tREJECTED\n")
	row := func(keyID, role string) {
		u := keyUsageOf(st, keyID)
		codes := make([]string, 0, len(u.Rejected))
		for _, c := range slices.Sorted(maps.Keys(u.Rejected)) {
			codes = append(codes, fmt.Sprintf("%s=%d", c, u.Rejected[c]))
		}
		printf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", keyID, role, timeOrDash(u.LastUsedAt), u.Valid, u.RateLimited, dash(strings.Join(codes, ",")))
	}
	if st.KeyID != "" {
		row(st.KeyID, "current")
	}
	listed := int64(0)
	for _, pk := range st.PreviousKeys {
		row(pk.KeyID, "previous, valid until "+pk.ValidUntil.UTC().Format(time.RFC3339))
	}
	for _, id := range append([]string{st.KeyID}, previousKeyIDs(st)...) {
		listed += keyUsageOf(st, id).Valid
	}
	// Requests counts every key the APIKey ever had; status keeps per-key use only of keys still accepted,
	// so the rest is one row and the VALID column adds up to the header.
	if earlier := total - listed; earlier > 0 {
		printf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", "-", "earlier keys, no longer accepted", "-", earlier, "-", "-")
	}
	return w.Flush()
}

func previousKeyIDs(st keywardv1alpha1.APIKeyStatus) []string {
	ids := make([]string, 0, len(st.PreviousKeys))
	for _, pk := range st.PreviousKeys {
		ids = append(ids, pk.KeyID)
	}
	return ids
}

// keyUsageOf is what status.usage says of one key; empty when nothing.
func keyUsageOf(st keywardv1alpha1.APIKeyStatus, keyID string) keywardv1alpha1.KeyUsage {
	if st.Usage != nil {
		for _, k := range st.Usage.Keys {
			if k.KeyID == keyID {
				return k
			}
		}
	}
	return keywardv1alpha1.KeyUsage{KeyID: keyID}
}

func (p *Plugin) patch(ctx context.Context, namespace, name string, change func(*keywardv1alpha1.APIKey), done string) error {
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	base := ak.DeepCopy()
	change(ak)
	if err := p.Client.Patch(ctx, ak, client.MergeFrom(base)); err != nil {
		return err
	}
	printf(p.out(), "apikey.keyward.dev/%s: %s\n", name, done)
	return nil
}

func setAnnotation(ak *keywardv1alpha1.APIKey, k, v string) {
	if ak.Annotations == nil {
		ak.Annotations = map[string]string{}
	}
	ak.Annotations[k] = v
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *metav1.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// Policies prints the APIKeyPolicies and whether each applies to namespace: what an APIKey there must
// keep to. Reading the namespace's labels needs "get" on namespaces, which namespace users seldom have;
// without it, every policy is shown with its selector and "unknown".
func (p *Plugin) Policies(ctx context.Context, namespace string) error {
	var list keywardv1alpha1.APIKeyPolicyList
	if err := p.Client.List(ctx, &list); err != nil {
		return err
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	var nsLabels labels.Set
	n := &corev1.Namespace{}
	known := true
	switch err := p.Client.Get(ctx, types.NamespacedName{Name: namespace}, n); {
	case err == nil:
		nsLabels = n.Labels
	case apierrors.IsForbidden(err):
		known = false
	default:
		return err
	}
	w := tabwriter.NewWriter(p.out(), 0, 4, 2, ' ', 0)
	printf(w, "APIKeyPolicies for namespace %s:\n", Escape(namespace))
	printf(w, "NAME\tAPPLIES\tMAX VALIDITY\tAUTO ROTATION\tMAX GRACE\tSCOPES\tRATE LIMIT\tPREFIXES\tAPPROVAL FOR\n")
	for _, pol := range list.Items {
		applies := "unknown (cannot read the namespace's labels)"
		if known {
			applies = "no"
			if guardrail.Selects(pol.Spec.NamespaceSelector, nsLabels) {
				applies = "yes"
			}
		}
		s := pol.Spec
		scopes := "any"
		if s.AllowedScopes != nil {
			scopes = dash(joinScopes(s.AllowedScopes, ","))
		}
		rate := "any"
		if r := s.MaxRateLimit; r != nil {
			rate = ""
			if r.Requests > 0 {
				rate = fmt.Sprintf("at most %d/%s", r.Requests, r.Period)
			}
			if r.Required {
				rate = strings.TrimPrefix(rate+", required", ", ")
			}
		}
		prefixes := "any"
		if s.AllowedPrefixes != nil {
			prefixes = dash(strings.Join(s.AllowedPrefixes, ","))
		}
		approvalFor := "-"
		if len(s.ApprovalRequiredScopes) > 0 {
			approvalFor = joinScopes(s.ApprovalRequiredScopes, ",")
			if s.AllowSelfApproval {
				approvalFor += " (self-approval allowed)"
			}
		}
		row := []string{pol.Name, applies, dash(string(s.MaxValidity)), strconv.FormatBool(s.RequireAutoRotation),
			dash(string(s.MaxGracePeriod)), scopes, dash(rate), prefixes, approvalFor}
		for i := range row {
			row[i] = Escape(row[i])
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

// ErrDenyNeedsReason is Deny's answer without a reason: the author needs one to change the spec.
var ErrDenyNeedsReason = errors.New("a denial needs --reason, so that whoever asked knows what to change")

// Approve approves the APIKey's spec as it is now (its scopes, validity, expiresAt and rate limit), in the
// name the API server knows the caller by. It prints what it approved. Admission refuses it unless the
// caller holds the approve verb on apikeys in the namespace and did not make the change.
func (p *Plugin) Approve(ctx context.Context, namespace, name string) error {
	return p.decide(ctx, namespace, name, "")
}

// Deny denies the APIKey's spec as it is now, with a reason; the APIKey stalls until its spec changes.
func (p *Plugin) Deny(ctx context.Context, namespace, name, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return ErrDenyNeedsReason
	}
	return p.decide(ctx, namespace, name, reason)
}

// decide writes a decision (a denial when reason is set) into status.approval with optimistic locking, so
// that it covers the spec the caller was shown: when the spec changed in between, the write fails.
func (p *Plugin) decide(ctx context.Context, namespace, name, reason string) error {
	review := &authenticationv1.SelfSubjectReview{}
	if err := p.Client.Create(ctx, review); err != nil {
		return fmt.Errorf("asking the API server who you are: %w", err)
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ak); err != nil {
		return err
	}
	base := ak.DeepCopy()
	d := &keywardv1alpha1.ApprovalDecision{By: review.Status.UserInfo.Username, At: metav1.NewTime(p.Now().UTC().Truncate(time.Second)),
		Reason: strings.TrimSpace(reason), Covers: approval.Of(ak.Spec)}
	if ak.Status.Approval == nil {
		ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{}
	}
	verb := "approved"
	if reason != "" {
		ak.Status.Approval.Denied, verb = d, "denied"
	} else {
		ak.Status.Approval.Approved = d
	}
	if err := p.Client.Status().Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Errorf("APIKey %s changed while it was being %s; look at it again (%w)", name, verb, err)
		}
		return err
	}
	printf(p.out(), "apikey.keyward.dev/%s %s by %s: scopes [%s], %s, rate limit %s\n", name, verb, d.By, joinScopes(d.Covers.Scopes, ", "),
		validityOf(d.Covers), rateOf(d.Covers.RateLimit))
	return nil
}

func validityOf(c keywardv1alpha1.ApprovedSpec) string {
	switch {
	case c.ExpiresAt != nil:
		return "expires at " + c.ExpiresAt.UTC().Format(time.RFC3339)
	case c.Validity != "":
		return "validity " + string(c.Validity)
	}
	return "validity 90d (the default)"
}

func rateOf(r *keywardv1alpha1.RateLimit) string {
	if r == nil {
		return "none"
	}
	return fmt.Sprintf("%d/%s", r.Requests, r.Period)
}

// MaxLeakedKeys bounds how many keys one report-leak reads.
const MaxLeakedKeys = 100

// ReadKeys reads keys, one per line, for report-leak: at most MaxLeakedKeys, blank lines skipped, each
// checked for Keyward's shape and checksum (a line that is not a key is refused, naming only its number).
func ReadKeys(r io.Reader) ([]string, error) {
	raw, err := io.ReadAll(io.LimitReader(r, int64(MaxLeakedKeys*(MaxKeyInput+1))+1))
	if err != nil {
		return nil, fmt.Errorf("reading the keys: %w", err)
	}
	if len(raw) > MaxLeakedKeys*(MaxKeyInput+1) {
		return nil, fmt.Errorf("the input is longer than %d keys; pass one key per line", MaxLeakedKeys)
	}
	var out []string
	for i, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		if _, err := keys.Parse(line); err != nil {
			return nil, fmt.Errorf("line %d is not a Keyward key (%w)", i+1, err)
		}
		if len(out) == MaxLeakedKeys {
			return nil, fmt.Errorf("more than %d keys; report them in batches", MaxLeakedKeys)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errors.New("no key on the input: pipe the keys in, one per line, or pass --file")
	}
	return out, nil
}

// ReportLeak reports each key as leaked: it finds the APIKey (in namespace, or in every namespace the
// caller may list) whose current or previous key it is, by hash, and adds a report to its status.leaks in
// the caller's name; the APIKey's leakResponse decides what follows. where says where the keys were found.
// Keys that no visible APIKey has are counted, not named. The keys never leave this process: only their
// IDs are written.
func (p *Plugin) ReportLeak(ctx context.Context, namespace string, allNamespaces bool, leaked []string, where string) error {
	review := &authenticationv1.SelfSubjectReview{}
	if err := p.Client.Create(ctx, review); err != nil {
		return fmt.Errorf("asking the API server who you are: %w", err)
	}
	var opts []client.ListOption
	if !allNamespaces {
		opts = append(opts, client.InNamespace(namespace))
	}
	var list keywardv1alpha1.APIKeyList
	if err := p.Client.List(ctx, &list, opts...); err != nil {
		return err
	}
	unknown := 0
	for _, key := range leaked {
		hash := keys.Hash(key)
		id := keys.IDFromHash(hash)
		i := slices.IndexFunc(list.Items, func(ak keywardv1alpha1.APIKey) bool {
			return ak.Status.KeyHash == hash || slices.ContainsFunc(ak.Status.PreviousKeys, func(pk keywardv1alpha1.PreviousKey) bool { return pk.KeyHash == hash })
		})
		if i < 0 {
			unknown++
			continue
		}
		ak := &list.Items[i]
		if slices.ContainsFunc(ak.Status.Leaks, func(l keywardv1alpha1.LeakReport) bool { return l.KeyID == id }) {
			printf(p.out(), "%s of apikey.keyward.dev/%s (namespace %s) was already reported leaked\n", id, ak.Name, ak.Namespace)
			continue
		}
		base := ak.DeepCopy()
		ak.Status.Leaks = append(ak.Status.Leaks, keywardv1alpha1.LeakReport{KeyID: id, ReportedAt: metav1.NewTime(p.Now().UTC().Truncate(time.Second)),
			URL: where, Source: "kubectl keyward report-leak", Reporter: review.Status.UserInfo.Username})
		if err := p.Client.Status().Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("reporting %s of APIKey %s/%s: %w", id, ak.Namespace, ak.Name, err)
		}
		response := ak.Spec.LeakResponse
		if response == "" {
			response = "the manager's default, Rotate unless --leak-response says otherwise"
		}
		printf(p.out(), "%s of apikey.keyward.dev/%s (namespace %s) reported leaked; leakResponse: %s\n", id, ak.Name, ak.Namespace, response)
	}
	if unknown > 0 {
		return fmt.Errorf("%d of %d keys belong to no APIKey you can see here (try -A, or they were already replaced long ago)", unknown, len(leaked))
	}
	return nil
}
