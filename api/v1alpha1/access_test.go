package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// apiKeyRef is an APIKey known only by its name, to read into or patch.
func apiKeyRef(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("keyward.dev/v1alpha1")
	u.SetKind("APIKey")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// as returns a client that impersonates user, as `kubectl --as` does.
func as(t *testing.T, user string) client.Client {
	t.Helper()
	return testenv.Impersonating(env.Config, user)
}

// bind gives user, in ns, the cluster role clusterRole and, when grants are given, the right to grant those
// scope names (none: every scope).
func bind(t *testing.T, ns, user, clusterRole string, grants ...string) {
	t.Helper()
	ctx := context.Background()
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-" + clusterRole, Namespace: ns},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole}, Subjects: subjects}); err != nil {
		t.Fatal(err)
	}
	if grants == nil {
		return
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user + "-grants", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"keyward.dev"}, Resources: []string{"scopes"}, Verbs: []string{"grant"}, ResourceNames: grants}}}
	if err := env.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-grants", Namespace: ns},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}, Subjects: subjects}); err != nil {
		t.Fatal(err)
	}
}

func TestScopesAreGrantedThroughRBAC(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	bind(t, ns, "alice", "keyward-edit", "orders:read")
	bind(t, ns, "carol", "keyward-edit", "orders:*")
	bind(t, ns, "dave", "keyward-admin")
	bind(t, ns, "erin", "keyward-edit", "*")
	ctx := context.Background()
	cases := []struct {
		name, user, scopes string
		// denied is the scope the error must name, "" when allowed.
		denied string
		index  int
	}{
		{"a scope the user may grant", "alice", "[orders:read]", "", 0},
		{"a scope the user may not grant", "alice", "[orders:read, orders:write]", "orders:write", 1},
		{"unrestricted needs a grant covering *", "alice", `["*"]`, "*", 0},
		{"no scopes need no grant", "alice", "[]", "", 0},
		{"a trailing wildcard grant covers the scopes under it", "carol", "[orders:write, orders:read:own]", "", 0},
		{"a trailing wildcard grant covers nothing else", "carol", "[orders:read, invoices:read]", "invoices:read", 1},
		{"a wildcard scope needs a grant covering it", "carol", `["orders:*"]`, "", 0},
		{"a grant on orders:* does not cover *", "carol", `["*"]`, "*", 0},
		{"keyward-admin grants anything", "dave", `["*", billing:refund]`, "", 0},
		{"a grant on * covers everything", "erin", `[a:b:c:d:e, "*"]`, "", 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := as(t, tc.user).Create(ctx, apiKey(t, ns, "k"+string(rune('a'+i)), "scopes: "+tc.scopes))
			if tc.denied == "" {
				if err != nil {
					t.Fatalf("%s was denied: %v", tc.user, err)
				}
				return
			}
			want := `spec.scopes[` + string(rune('0'+tc.index)) + `]: you may not grant scope "` + tc.denied + `": needs "grant" on scopes.keyward.dev "` +
				tc.denied + `" in namespace "` + ns + `"`
			if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v\nwant one containing %s", err, want)
			}
		})
	}
}

func TestUpdatesAreCheckedOnlyForTheScopesTheyAdd(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	bind(t, ns, "alice", "keyward-edit", "orders:read")
	ctx := context.Background()
	// An admin created this key with scopes alice may not grant.
	ak := apiKey(t, ns, "shared", "scopes: [orders:read, orders:write, invoices:read]")
	if err := env.Client.Create(ctx, ak); err != nil {
		t.Fatal(err)
	}
	alice := as(t, "alice")
	update := func(scopes ...any) error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(ak.GroupVersionKind())
		if err := alice.Get(ctx, client.ObjectKeyFromObject(ak), u); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedSlice(u.Object, scopes, "spec", "scopes"); err != nil {
			t.Fatal(err)
		}
		return alice.Update(ctx, u)
	}
	if err := update("orders:read", "orders:write"); err != nil {
		t.Errorf("removing a scope was denied: %v", err)
	}
	if err := update("orders:read", "orders:write", "orders:delete"); err == nil || !strings.Contains(err.Error(), `"orders:delete"`) {
		t.Errorf("adding a scope alice may not grant: %v", err)
	}
	if err := update("orders:write", "orders:read"); err != nil {
		t.Errorf("reordering scopes (nothing added) was denied: %v", err)
	}
}

func TestKeywardViewCannotReadTheKeysSecret(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	bind(t, ns, "bob", "keyward-view")
	ctx := context.Background()
	if err := env.Client.Create(ctx, apiKey(t, ns, "orders", "{}")); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Data: map[string][]byte{"api-key": []byte("kw_x")}}); err != nil {
		t.Fatal(err)
	}
	bob := as(t, "bob")
	if err := bob.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, apiKeyRef(ns, "orders")); err != nil {
		t.Errorf("keyward-view cannot read APIKeys: %v", err)
	}
	if err := bob.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("keyward-view reading the key's Secret: %v, want Forbidden", err)
	}
	if err := bob.Create(ctx, apiKey(t, ns, "mine", "{}")); !apierrors.IsForbidden(err) {
		t.Errorf("keyward-view creating an APIKey: %v, want Forbidden", err)
	}
}

func TestTheUserRolesAggregateIntoKubernetesRoles(t *testing.T) {
	testenv.Need(t)
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "access", "user_roles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// keyward-approver aggregates into nothing: who approves is a choice a platform team makes per namespace.
	want := map[string]string{"keyward-view": "view", "keyward-edit": "edit", "keyward-admin": "admin", "keyward-approver": ""}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
			t.Fatal(err)
		}
		into, ok := want[role.Name]
		if !ok {
			t.Errorf("unexpected role %q", role.Name)
			continue
		}
		delete(want, role.Name)
		if into == "" {
			for label := range role.Labels {
				if strings.HasPrefix(label, "rbac.authorization.k8s.io/aggregate-to-") {
					t.Errorf("%s aggregates (%s); approvers are bound explicitly", role.Name, label)
				}
			}
		} else if role.Labels["rbac.authorization.k8s.io/aggregate-to-"+into] != "true" {
			t.Errorf("%s does not aggregate into %s: %v", role.Name, into, role.Labels)
		}
		for _, r := range role.Rules {
			for _, res := range r.Resources {
				if res == "secrets" || res == "*" {
					t.Errorf("%s grants %v on %s", role.Name, r.Verbs, res)
				}
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("roles missing: %v", want)
	}
}

func TestAChangeAddsAtMostTwelveScopesUnlessItsAuthorMayGrantEveryScope(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	var twelve, names []string
	for i := range 13 {
		twelve = append(twelve, fmt.Sprintf("s%d:read", i))
	}
	names, twelve = twelve, twelve[:12]
	bind(t, ns, "frank", "keyward-edit", names...)
	bind(t, ns, "grace", "keyward-edit", "unrelated")
	bind(t, ns, "dave", "keyward-admin")
	ctx := context.Background()
	list := func(s []string) string { return "[" + strings.Join(s, ", ") + "]" }
	if err := as(t, "frank").Create(ctx, apiKey(t, ns, "twelve", "scopes: "+list(twelve))); err != nil {
		t.Errorf("twelve scopes, each granted: %v", err)
	}
	// The worst case for the policy's budget: every one of twelve scopes needs both checks, and fails.
	err := as(t, "grace").Create(ctx, apiKey(t, ns, "denied", "scopes: "+list(twelve)))
	if err == nil || !strings.Contains(err.Error(), `you may not grant scope "s0:read"`) || strings.Contains(err.Error(), "cost") {
		t.Errorf("twelve scopes, none granted: %v", err)
	}
	err = as(t, "frank").Create(ctx, apiKey(t, ns, "thirteen", "scopes: "+list(names)))
	if err == nil || !strings.Contains(err.Error(), "this change adds 13 scopes") {
		t.Errorf("thirteen scopes without a grant on *: %v", err)
	}
	if err := as(t, "dave").Create(ctx, apiKey(t, ns, "many", manyScopes(256))); err != nil {
		t.Errorf("256 scopes by someone who may grant every scope: %v", err)
	}
}

func TestOnlyTheManagerMayChangeStatusBeyondUsage(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	if err := env.Client.Create(ctx, apiKey(t, ns, "orders", "{}")); err != nil {
		t.Fatal(err)
	}
	// A tenant whose role allows writing status, as a careless Role might.
	if err := env.Client.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "status-writer", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"keyward.dev"}, Resources: []string{"apikeys", "apikeys/status"}, Verbs: []string{"get", "patch"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mallory", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "status-writer"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "mallory"}}}); err != nil {
		t.Fatal(err)
	}
	patch := func(c client.Client, status map[string]any) error {
		body, _ := json.Marshal(map[string]any{"status": status})
		return c.Status().Patch(ctx, apiKeyRef(ns, "orders"), client.RawPatch(types.MergePatchType, body))
	}
	hash := "sha256:" + strings.Repeat("ab", 32)
	planted := map[string]any{"keyHash": hash, "previousKeys": []any{map[string]any{"keyID": "kid_abababababab", "keyHash": hash, "validUntil": "2099-01-01T00:00:00Z"}}}
	manager, verifier := testenv.Impersonating(env.Config, testenv.ManagerUser), testenv.Impersonating(env.Config, testenv.VerifierUser)
	if err := patch(manager, map[string]any{"keyHash": "sha256:" + strings.Repeat("cd", 32), "revision": 1}); err != nil {
		t.Errorf("the manager writing status: %v", err)
	}
	if err := patch(verifier, map[string]any{"usage": map[string]any{"requests": 5}}); err != nil {
		t.Errorf("the verifier reporting usage: %v", err)
	}
	for name, c := range map[string]client.Client{"the verifier": verifier, "an admin": env.Client, "a tenant with status access": as(t, "mallory")} {
		for field, value := range planted {
			err := patch(c, map[string]any{field: value})
			if err == nil || !strings.Contains(err.Error(), "may not change status."+field) {
				t.Errorf("%s writing status.%s: %v", name, field, err)
			}
		}
	}
	if err := patch(verifier, map[string]any{"usage": map[string]any{"requests": 6}, "revision": 9}); err == nil {
		t.Error("the verifier changed status.revision alongside usage")
	}
}

func TestTheManagersIdentityWritesOnlyKeywardSecrets(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	owner := apiKey(t, ns, "orders", "{}")
	if err := env.Client.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-db", Namespace: ns},
		Data: map[string][]byte{"password": []byte("theirs")}}); err != nil {
		t.Fatal(err)
	}
	manager := testenv.Impersonating(env.Config, testenv.ManagerUser)
	ours := func(name string, mutate ...func(*corev1.Secret)) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{"keyward.dev/apikey": "orders"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "keyward.dev/v1alpha1", Kind: "APIKey", Name: "orders",
				UID: owner.GetUID(), Controller: ptr.To(true)}}}, Type: corev1.SecretTypeOpaque}
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	cases := []struct {
		name   string
		secret *corev1.Secret
		want   string // "" = allowed
	}{
		{"a labelled Opaque Secret controlled by an APIKey", ours("orders"), ""},
		{"a service-account token in kube-system", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "steal", Namespace: "kube-system",
			Annotations: map[string]string{"kubernetes.io/service-account.name": "default"}}, Type: corev1.SecretTypeServiceAccountToken},
			"only Opaque Secrets"},
		{"a Secret without Keyward's label", ours("unlabelled", func(s *corev1.Secret) { s.Labels = nil }), "labelled keyward.dev/apikey"},
		{"a labelled Secret no APIKey controls", ours("orphan", func(s *corev1.Secret) { s.OwnerReferences = nil }), "controlled by an APIKey"},
		{"its record signing key", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "keyward-record-signing-key", Namespace: testenv.SystemNamespace},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"key": make([]byte, 32)}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := manager.Create(ctx, tc.secret)
			if tc.want == "" && err != nil {
				t.Errorf("denied: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	theirs := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-db"}, theirs); err != nil {
		t.Fatal(err)
	}
	theirs.Data["password"] = []byte("mine now")
	if err := manager.Update(ctx, theirs); err == nil || !strings.Contains(err.Error(), "keyward-manager-secrets") {
		t.Errorf("the manager rewriting an application's Secret: %v", err)
	}
}

// A stolen manager token that dresses an application's Secret up as Keyward's, or moves Keyward's Secrets
// between APIKeys, or writes labels another controller acts on, is refused.
func TestTheManagersIdentityUpdatesOnlySecretsAlreadyKeywardsAndWritesOnlyKeywardsMetadata(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	owner := apiKey(t, ns, "orders", "{}")
	other := apiKey(t, ns, "payments", "{}")
	for _, ak := range []*unstructured.Unstructured{owner, other} {
		if err := env.Client.Create(ctx, ak); err != nil {
			t.Fatal(err)
		}
	}
	manager := testenv.Impersonating(env.Config, testenv.ManagerUser)
	controlledBy := func(ak *unstructured.Unstructured) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "keyward.dev/v1alpha1", Kind: "APIKey", Name: ak.GetName(), UID: ak.GetUID(), Controller: ptr.To(true)}}
	}
	keywards := func(name string, mutate ...func(*corev1.Secret)) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels:          map[string]string{"keyward.dev/apikey": "orders", "app.kubernetes.io/managed-by": "keyward", "team": "billing"},
			Annotations:     map[string]string{"keyward.dev/template-labels": "team", "keyward.dev/key-hash": "sha256:x"},
			OwnerReferences: controlledBy(owner)}, Type: corev1.SecretTypeOpaque}
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	// What an admin (or an application) created, which the manager then tries to update.
	existing := map[string]*corev1.Secret{
		"app-db":  {ObjectMeta: metav1.ObjectMeta{Name: "app-db", Namespace: ns}, Type: corev1.SecretTypeOpaque},
		"orders":  keywards("orders", func(s *corev1.Secret) { s.Labels["someone-elses"] = "kept" }),
		"orphan":  keywards("orphan", func(s *corev1.Secret) { s.OwnerReferences = nil }),
		"nolabel": keywards("nolabel", func(s *corev1.Secret) { delete(s.Labels, "keyward.dev/apikey") }),
	}
	for _, s := range existing {
		if err := env.Client.Create(ctx, s.DeepCopy()); err != nil {
			t.Fatal(err)
		}
	}
	updates := []struct {
		name   string
		secret string
		change func(*corev1.Secret)
		want   string // "" = allowed
	}{
		{"an application's Secret given Keyward's label and a made-up owner", "app-db", func(s *corev1.Secret) {
			s.Labels = map[string]string{"keyward.dev/apikey": "orders"}
			s.OwnerReferences = controlledBy(owner)
			s.Data = map[string][]byte{"password": []byte("mine now")}
		}, "already Keyward's"},
		{"Keyward's Secret moved to another APIKey", "orders", func(s *corev1.Secret) { s.Labels["keyward.dev/apikey"] = "payments" },
			"another APIKey"},
		{"Keyward's Secret given another controller", "orders", func(s *corev1.Secret) { s.OwnerReferences = controlledBy(other) },
			"controller of a Secret"},
		{"a label neither Keyward's nor the template's", "orders", func(s *corev1.Secret) { s.Labels["injected"] = "yes" },
			"not injected"},
		{"an annotation neither Keyward's nor the template's", "orders", func(s *corev1.Secret) {
			s.Annotations["reflector.v1.k8s.emberstack.com/reflection-auto-namespaces"] = "prod"
		}, "reflector.v1.k8s.emberstack.com"},
		{"Argo CD's label, even when the template lists it", "orders", func(s *corev1.Secret) {
			s.Labels["argocd.argoproj.io/secret-type"] = "cluster"
			s.Annotations["keyward.dev/template-labels"] = "argocd.argoproj.io/secret-type,team"
		}, "argocd.argoproj.io/secret-type"},
		{"a new key in Keyward's Secret, keeping someone else's label", "orders", func(s *corev1.Secret) {
			s.Data = map[string][]byte{"api-key": []byte("new")}
			s.Annotations["keyward.dev/key-hash"] = "sha256:y"
		}, ""},
		{"a template label that the template lists", "orders", func(s *corev1.Secret) {
			s.Labels["tier"] = "gold"
			s.Annotations["keyward.dev/template-labels"] = "team,tier"
		}, ""},
		{"adopting an orphan", "orphan", func(s *corev1.Secret) { s.OwnerReferences = controlledBy(owner) }, ""},
		{"putting back the label of a Secret it controls", "nolabel", func(s *corev1.Secret) { s.Labels["keyward.dev/apikey"] = "orders" }, ""},
	}
	for _, tc := range updates {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Secret{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: tc.secret}, s); err != nil {
				t.Fatal(err)
			}
			tc.change(s)
			err := manager.Update(ctx, s, client.DryRunAll)
			if tc.want == "" && err != nil {
				t.Errorf("denied: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	// Creating, in Argo CD's namespace, a cluster Secret that Argo CD would act on.
	argo := keywards("cluster-prod", func(s *corev1.Secret) {
		s.Namespace = "default"
		s.Labels["argocd.argoproj.io/secret-type"] = "cluster"
		s.Annotations["keyward.dev/template-labels"] = "argocd.argoproj.io/secret-type"
	})
	if err := manager.Create(ctx, argo, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "argocd.argoproj.io/secret-type") {
		t.Errorf("the manager creating an Argo CD cluster Secret: %v", err)
	}
}

func TestTheCRDAndTheManagerPolicyRefuseTheSameForeignControllerKeys(t *testing.T) {
	// The CEL sources escape each backslash once more than the Go pattern.
	want := strings.ReplaceAll(keywardv1alpha1.ForeignControllerKeyPattern, `\`, `\\`)
	for _, file := range []string{filepath.Join("config", "crd", "bases", "keyward.dev_apikeys.yaml"), filepath.Join("config", "admission", "manager_secrets_policy.yaml")} {
		raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), want) {
			t.Errorf("%s does not refuse ForeignControllerKeyPattern %s", file, keywardv1alpha1.ForeignControllerKeyPattern)
		}
	}
}

// The admission policy protects exactly the status fields the manager owns (StatusFieldOwners): the key
// controller's and the delivery controller's; the verifier's usage stays writable by whoever may update
// apikeys/status.
func TestTheStatusPolicyProtectsEveryStatusFieldTheManagerOwns(t *testing.T) {
	testenv.Need(t)
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "admission", "status_writers_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The verifier's usage and the approvers' decisions are written by others (the approvers' under
	// keyward-apikey-approval); the rest is the manager's.
	managers := map[keywardv1alpha1.StatusOwner]bool{keywardv1alpha1.StatusOwnerKeyController: true, keywardv1alpha1.StatusOwnerDelivery: true}
	st := reflect.TypeFor[keywardv1alpha1.APIKeyStatus]()
	for i := range st.NumField() {
		name := keywardv1alpha1.StatusFieldName(st.Field(i))
		owner, ok := keywardv1alpha1.StatusFieldOwners[name]
		protected := strings.Contains(string(raw), "'status."+name+"': object.?status.?"+name+" == oldObject.?status.?"+name)
		switch {
		case !ok:
			t.Errorf("status.%s has no owner in StatusFieldOwners", name)
		case !managers[owner] && protected:
			t.Errorf("status.%s is the %s's, but keyward-status-writers lets only the manager change it", name, owner)
		case managers[owner] && !protected:
			t.Errorf("status.%s is the manager's (%s), but keyward-status-writers does not protect it: anyone who may patch status could change it", name, owner)
		}
	}
	if len(keywardv1alpha1.StatusFieldOwners) != st.NumField() {
		t.Errorf("StatusFieldOwners names %d fields; APIKeyStatus has %d", len(keywardv1alpha1.StatusFieldOwners), st.NumField())
	}
}

func TestInNamespacedModeTheManagerCannotTouchSecretsOfOtherNamespaces(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	assets := testenv.Binaries(t)
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(testenv.RepoRoot(), "config", "namespaced")).Output()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := testenv.DecodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// The overlay's bindings of the manager's role, given to a service account of their own so that the
	// default install's cluster-wide binding (which testenv installed) cannot mask what they allow.
	const sa = "keyward-manager-namespaced"
	bindings, args := 0, ""
	for _, o := range objs {
		if o.GetKind() == "ClusterRoleBinding" && o.GetName() == "keyward-manager-rolebinding" {
			t.Error("namespaced mode still binds the manager's role cluster-wide")
		}
		if o.GetKind() == "Deployment" && o.GetName() == "keyward-manager" {
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			list, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
			args = strings.Join(list, " ")
		}
		if o.GetKind() != "RoleBinding" || o.GetName() != "keyward-manager" {
			continue
		}
		var rb rbacv1.RoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &rb); err != nil {
			t.Fatal(err)
		}
		rb.Name, rb.Subjects[0].Name = sa, sa
		if err := env.Client.Create(ctx, &rb); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		bindings++
	}
	if bindings != 3 || !strings.Contains(args, "--namespaces=team-a,team-b") {
		t.Fatalf("the overlay has %d manager RoleBindings (want team-a, team-b, keyward-system) and args %q", bindings, args)
	}
	manager := testenv.Impersonating(env.Config, "system:serviceaccount:keyward-system:"+sa)
	if err := manager.List(ctx, &corev1.SecretList{}, client.InNamespace("team-a")); err != nil {
		t.Errorf("listing Secrets in a managed namespace: %v", err)
	}
	if err := manager.Get(ctx, client.ObjectKey{Namespace: "team-c", Name: "anything"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading a Secret in an unmanaged namespace: %v, want Forbidden", err)
	}
	if err := manager.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets cluster-wide: %v, want Forbidden", err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted", Namespace: "kube-system"}}
	if err := manager.Create(ctx, s); !apierrors.IsForbidden(err) {
		t.Errorf("creating a Secret in kube-system: %v, want Forbidden", err)
	}
}

func TestAWebhookIsSignedOnlyWithASecretItsAuthorMayRead(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	// Another service's signing Secret, which neither the APIKey editors nor Keyward own.
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "payments-whsec", Namespace: ns},
		Data: map[string][]byte{"secret": []byte("whsec_cGF5bWVudHMgc2VydmljZSBzaWduaW5nIGtleQ==")}}); err != nil {
		t.Fatal(err)
	}
	bind(t, ns, "mallory", "keyward-edit") // may edit APIKeys, may not read Secrets
	bind(t, ns, "olivia", "keyward-edit")
	if err := env.Client.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "read-payments-whsec", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: []string{"payments-whsec"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "olivia-reads-payments-whsec", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-payments-whsec"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "olivia"}}}); err != nil {
		t.Fatal(err)
	}
	hook := func(url string) string {
		return "webhook: {url: " + url + ", signingSecretRef: {name: payments-whsec}}"
	}
	denial := `spec.webhook.signingSecretRef: you may not read Secret "payments-whsec" in namespace "` + ns + `"`
	denied := func(err error) bool { return err != nil && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) }

	err := as(t, "mallory").Create(ctx, apiKey(t, ns, "stolen", hook("https://mallory.example.com/")))
	if !denied(err) || !strings.Contains(err.Error(), denial) {
		t.Fatalf("mallory pointing a webhook at a Secret she cannot read: %v; want a denial containing %s", err, denial)
	}
	if err := as(t, "olivia").Create(ctx, apiKey(t, ns, "payments", hook("https://payments.example.com/"))); err != nil {
		t.Fatalf("olivia, who may read the Secret, was denied: %v", err)
	}
	// Mallory may still edit what does not choose where, or with what, the manager signs ...
	desc := []byte(`{"spec":{"description":"edited by mallory"}}`)
	if err := as(t, "mallory").Patch(ctx, apiKeyRef(ns, "payments"), client.RawPatch(types.MergePatchType, desc)); err != nil {
		t.Errorf("mallory editing the description: %v", err)
	}
	// ... but not send the Secret's signatures to a receiver of hers, nor change the CA it trusts.
	for name, patch := range map[string]string{
		"url":      `{"spec":{"webhook":{"url":"https://mallory.example.com/"}}}`,
		"caBundle": `{"spec":{"webhook":{"caBundle":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}}`,
	} {
		err := as(t, "mallory").Patch(ctx, apiKeyRef(ns, "payments"), client.RawPatch(types.MergePatchType, []byte(patch)))
		if !denied(err) || !strings.Contains(err.Error(), denial) {
			t.Errorf("mallory changing spec.webhook.%s: %v; want the denial", name, err)
		}
	}
}
