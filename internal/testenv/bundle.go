package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
)

// installedKinds are the kinds of the release bundle (config/default) that the test environment and
// run-local install, in this order: everything but the CRDs (envtest installs those) and the workloads
// (nothing runs them here).
var installedKinds = []string{"Namespace", "ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}

// Identities of Keyward's own components in the bundle (config/default).
const (
	SystemNamespace = "keyward-system"
	ManagerUser     = "system:serviceaccount:keyward-system:keyward-manager"
	VerifierUser    = "system:serviceaccount:keyward-system:keyward-verifier"
)

// Bundle renders config/default with the control plane's kubectl, as `kubectl apply -k config/default` would.
func Bundle() ([]*unstructured.Unstructured, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(RepoRoot(), "config", "default")).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/default: %w", err)
	}
	return DecodeManifests(out)
}

// InstallAdmission creates the bundle's namespace, service accounts, RBAC and admission policies exactly as
// shipped, and waits until the API server enforces the policies (a policy takes effect a moment after it is
// created). Tests then prove behaviour with the permissions and policies a real install has.
func InstallAdmission(ctx context.Context, cfg *rest.Config, c client.Client) error {
	objs, err := Bundle()
	if err != nil {
		return err
	}
	for _, kind := range installedKinds {
		for _, o := range objs {
			if o.GetKind() != kind {
				continue
			}
			if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
			}
		}
	}
	return WaitForPolicies(ctx, cfg, c)
}

// WaitForPolicies waits until the API server enforces every admission policy of the bundle: for each, a dry
// run that only that policy refuses is refused by it. (Policies take effect a moment after they are created,
// and envtest runs no controller that would report them type-checked.)
func WaitForPolicies(ctx context.Context, cfg *rest.Config, c client.Client) error {
	const ns = "default"
	probe := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe", Namespace: ns}}
	// The first APIKey write after the bundle's install may be answered 503 for a while: the mutating
	// admission policy's plugin learns the CRD's schema from the API server's OpenAPI a moment after the CRD
	// is established ("Resource kind ... not found. There can be a delay ...").
	if err := eventually.Poll(func() error {
		if err := c.Create(ctx, probe.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("creating the probe APIKey: %w", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
		return err
	}
	// A user who may edit APIKeys in the probe namespace but grant no scope.
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "keyward-admission-probe", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "keyward-admission-probe"}}}
	if err := c.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// An APIKeyPolicy that selects only the probe namespace and allows only probe:* scopes (which the other
	// probes keep to).
	guardrail := &keywardv1alpha1.APIKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "keyward-admission-probe"},
		Spec: keywardv1alpha1.APIKeyPolicySpec{AllowedScopes: []keywardv1alpha1.Scope{"probe:*"},
			ApprovalRequiredScopes: []keywardv1alpha1.Scope{"probe:admin"},
			NamespaceSelector:      &keywardv1alpha1.PolicyNamespaceSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}}}
	if err := c.Create(ctx, guardrail); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	defer func() {
		_ = c.Delete(ctx, binding)
		_ = c.Delete(ctx, probe)
	}()
	// The probe's APIKeyPolicy must be gone from the admission plugin's cache, not only from the API server,
	// before anyone uses the probe namespace (run-local's users apply the samples there at once).
	defer func() {
		_ = c.Delete(ctx, guardrail)
		_ = eventually.Poll(func() error {
			other := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-other", Namespace: ns},
				Spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"other:read"}}}
			return c.Create(ctx, other, client.DryRunAll)
		})
	}()
	as := func(user string) client.Client {
		return Impersonating(cfg, user)
	}
	// The mutating policy first: the approval probes below need the author it records.
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return fmt.Errorf("asking the API server who the test client is: %w", err)
	}
	self := review.Status.UserInfo.Username
	if err := eventually.Poll(func() error {
		dry := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-author", Namespace: ns}}
		if err := c.Create(ctx, dry, client.DryRunAll); err != nil {
			return err
		}
		if got := dry.Annotations[keywardv1alpha1.RequestedByAnnotation]; got != self {
			return fmt.Errorf("%s is %q, want %q", keywardv1alpha1.RequestedByAnnotation, got, self)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("mutating admission policy keyward-apikey-requested-by is not applied: %w", err)
	}
	asking := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-asking", Namespace: ns},
		Spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"probe:admin"}}}
	if err := c.Create(ctx, asking); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the approval probe APIKey: %w", err)
	}
	defer func() { _ = c.Delete(ctx, asking) }()
	approve := func(ak *keywardv1alpha1.APIKey, by string) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(ak), ak); err != nil {
			return err
		}
		a := ak.DeepCopy()
		a.Status.Approval = &keywardv1alpha1.ApprovalStatus{Approved: &keywardv1alpha1.ApprovalDecision{
			By: by, At: metav1.Now(), Covers: keywardv1alpha1.ApprovedSpec{Scopes: a.Spec.Scopes}}}
		return c.Status().Update(ctx, a, client.DryRunAll)
	}
	probes := map[string]func() error{
		"keyward-apikey-expiry": func() error {
			far := probe.DeepCopy()
			far.ResourceVersion, far.Name = "", "admission-probe-far"
			far.Spec.ExpiresAt = &metav1.Time{Time: time.Now().AddDate(50, 0, 0)}
			return c.Create(ctx, far, client.DryRunAll)
		},
		"keyward-apikey-annotations": func() error {
			long := probe.DeepCopy()
			long.ResourceVersion, long.Name = "", "admission-probe-long"
			long.Annotations = map[string]string{keywardv1alpha1.RotateAnnotation: strings.Repeat("x", keywardv1alpha1.MaxTokenLength+1)}
			return c.Create(ctx, long, client.DryRunAll)
		},
		"keyward-scope-grants": func() error {
			scoped := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-scoped", Namespace: ns},
				Spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"probe:read"}}}
			return as("keyward-admission-probe").Create(ctx, scoped, client.DryRunAll)
		},
		"keyward-webhook-signing-secret": func() error {
			hooked := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-hooked", Namespace: ns},
				Spec: keywardv1alpha1.APIKeySpec{Webhook: &keywardv1alpha1.WebhookSpec{URL: "https://hooks.example.com/keyward",
					SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "admission-probe"}}}}
			return as("keyward-admission-probe").Create(ctx, hooked, client.DryRunAll)
		},
		"keyward-apikey-policies": func() error {
			other := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe-other", Namespace: ns},
				Spec: keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{"other:read"}}}
			return c.Create(ctx, other, client.DryRunAll)
		},
		// In someone else's name, for an APIKey that asks for nothing that needs approval (so that
		// keyward-apikey-approval-duties, which would refuse it too and answer first, has nothing to say).
		"keyward-apikey-approval": func() error { return approve(probe.DeepCopy(), "someone-else") },
		// The author (the test client, which created it) approving its own request.
		"keyward-apikey-approval-duties": func() error { return approve(asking, self) },
		"keyward-status-writers": func() error {
			forged := probe.DeepCopy()
			forged.Status.KeyHash = "sha256:" + strings.Repeat("0", 64)
			return c.Status().Update(ctx, forged, client.DryRunAll)
		},
		"keyward-manager-secrets": func() error {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "admission-probe", Namespace: ns}}
			return as(ManagerUser).Create(ctx, s, client.DryRunAll)
		},
	}
	for name, try := range probes {
		if err := eventually.Poll(func() error {
			err := try()
			if err != nil && strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+name+"'") {
				return nil
			}
			return fmt.Errorf("the probe's answer is %w", err)
		}); err != nil {
			return fmt.Errorf("admission policy %s is not enforced: %w", name, err)
		}
	}
	return nil
}

// ReadManifests decodes every YAML document in file into unstructured objects.
func ReadManifests(file string) ([]*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	objs, err := DecodeManifests(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", file, err)
	}
	return objs, nil
}

// DecodeManifests decodes every YAML document in raw into unstructured objects.
func DecodeManifests(raw []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// ImpersonatingConfig is cfg acting as user (as kubectl --as does). A service account's username brings its
// groups, as the API server gives them to its tokens.
func ImpersonatingConfig(cfg *rest.Config, user string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	if parts := strings.Split(user, ":"); len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + parts[2], "system:authenticated"}
	}
	return cfg
}

// Impersonating returns a client that acts as user; see ImpersonatingConfig.
func Impersonating(cfg *rest.Config, user string) client.Client {
	c, err := client.New(ImpersonatingConfig(cfg, user), client.Options{Scheme: Scheme})
	if err != nil {
		panic(err) // only a malformed config fails here, and cfg came from a running control plane
	}
	return c
}
