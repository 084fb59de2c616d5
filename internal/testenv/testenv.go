// Package testenv starts a real kube-apiserver and etcd (envtest) with Keyward's CRDs installed, for tests
// that prove behaviour against the API server rather than a fake client.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
)

// Scheme knows the built-in kinds and Keyward's.
var Scheme = newScheme()

func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(keywardv1alpha1.AddToScheme(s))
	return s
}

// RepoRoot is the checkout's top directory, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns the directory with kube-apiserver, etcd and kubectl: KUBEBUILDER_ASSETS when set, else
// the cache that hack/controlplane.sh fills. It does not build anything, so a plain `go test` fails fast
// with a hint instead of compiling Kubernetes inside a test timeout.
func AssetsDir() (string, error) {
	out, err := exec.Command(filepath.Join(RepoRoot(), "hack", "controlplane.sh"), "path").Output()
	if err != nil {
		return "", fmt.Errorf("locating the control plane binaries: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s is missing from %s: run `make controlplane` (or `make test`) first", bin, dir)
		}
	}
	return dir, nil
}

// Binaries returns the directory of the control plane binaries for a test that runs one of them (kubectl
// kustomize) without an API server. It fails with a hint when they are missing, or skips as Need does.
func Binaries(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipEnvVar) == "1" {
		t.Skipf("needs the control plane binaries; %s=1", SkipEnvVar)
	}
	dir, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// Env is a running control plane with Keyward's CRDs.
type Env struct {
	Environment *envtest.Environment
	Config      *rest.Config
	Client      client.Client
	// AuditLog is the kube-apiserver's audit log, written under the shipped config/audit/policy.yaml.
	AuditLog string
}

// Start starts etcd and kube-apiserver and installs the CRDs from config/crd/bases.
func Start() (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	// The API server audits under the shipped policy, so tests can prove what the audit trail holds.
	auditDir, err := os.MkdirTemp("", "keyward-audit-")
	if err != nil {
		return nil, err
	}
	auditLog := filepath.Join(auditDir, "audit.log")
	env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", filepath.Join(RepoRoot(), "config", "audit", "policy.yaml")).
		Set("audit-log-path", auditLog).
		Set("audit-log-mode", "blocking")
	cfg, err := env.Start()
	if err != nil {
		// Start may fail after etcd and kube-apiserver are up (installing an invalid CRD, say): stop them,
		// or they outlive the test binary.
		return nil, errors.Join(fmt.Errorf("starting the control plane from %s: %w", assets, err), env.Stop())
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("creating a client: %w", err), env.Stop())
	}
	if err := InstallAdmission(context.Background(), cfg, c); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	return &Env{Environment: env, Config: cfg, Client: c, AuditLog: auditLog}, nil
}

// Stop stops the control plane and removes its audit log.
func (e *Env) Stop() error {
	if e == nil {
		return nil
	}
	err := e.Environment.Stop()
	if e.AuditLog != "" {
		_ = os.RemoveAll(filepath.Dir(e.AuditLog))
	}
	return err
}

// The control plane of this test binary: started by the first test that needs one (Need), so that the
// unit tests of a package run with nothing but Go, and stopped by Run after the last test.
var (
	shared     **Env
	sharedOnce sync.Once
	sharedErr  error
)

// SkipEnvVar names the environment variable that turns Need into a skip: `make test-unit` sets it to run
// every test that needs no API server, on a machine without the control plane binaries.
const SkipEnvVar = "KEYWARD_SKIP_ENVTEST"

// Run is the body of a TestMain: run the tests, stop the control plane if a test started one, exit. env is
// the package's variable for the control plane; Need fills it.
func Run(m *testing.M, env **Env) {
	shared = env
	code := m.Run()
	if *env != nil {
		if err := (*env).Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stopping the control plane:", err)
		}
	}
	os.Exit(code)
}

// Need starts the test binary's control plane on first use and sets the variable given to Run. A test that
// needs the API server calls it first; without the binaries it fails with a hint, or skips under
// KEYWARD_SKIP_ENVTEST=1.
func Need(t testing.TB) *Env {
	t.Helper()
	if os.Getenv(SkipEnvVar) == "1" {
		t.Skipf("needs the control plane; %s=1", SkipEnvVar)
	}
	if shared == nil {
		t.Fatal("testenv.Need without testenv.Run in TestMain")
	}
	sharedOnce.Do(func() { *shared, sharedErr = Start() })
	if sharedErr != nil {
		t.Fatalf("testenv: %v", sharedErr)
	}
	return *shared
}

// Namespace creates a namespace named after the test and returns its name. Namespaces are not deleted
// (envtest runs no namespace controller); each test gets its own, so nothing leaks between tests.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(name) > 50 {
		name = name[:50]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(name, "-") + "-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a namespace for %s: %v", t.Name(), err)
	}
	return ns.Name
}

// APIKey reads an APIKey from the API server (not from any cache).
func (e *Env) APIKey(t testing.TB, namespace, name string) *keywardv1alpha1.APIKey {
	t.Helper()
	ak := &keywardv1alpha1.APIKey{}
	if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, ak); err != nil {
		t.Fatalf("getting APIKey %s/%s: %v", namespace, name, err)
	}
	return ak
}

// UpdateAPIKey re-reads the APIKey, applies change and writes it, retrying on conflicts with the controller.
// It returns the APIKey as written (its resourceVersion is that of this change).
func (e *Env) UpdateAPIKey(t testing.TB, namespace, name string, change func(*keywardv1alpha1.APIKey)) *keywardv1alpha1.APIKey {
	t.Helper()
	for range 10 {
		ak := e.APIKey(t, namespace, name)
		change(ak)
		err := e.Client.Update(context.Background(), ak)
		if err == nil {
			return ak
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("updating APIKey %s/%s: %v", namespace, name, err)
		}
	}
	t.Fatalf("updating APIKey %s/%s: still conflicting after 10 tries", namespace, name)
	return nil
}

// WaitUntilAllowed waits until the API server's authorizer lets user do what attrs says. An RBAC binding
// takes effect a moment after it is written (the authorizer reads RBAC from a cache), so a test that has
// just bound a role waits for this before it acts as the user.
func (e *Env) WaitUntilAllowed(t testing.TB, user string, attrs authorizationv1.ResourceAttributes) {
	t.Helper()
	eventually.Succeeds(t, fmt.Sprintf("%s may %s %s/%s %q in %q", user, attrs.Verb, attrs.Group, attrs.Resource, attrs.Name, attrs.Namespace), func() error {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs}}
		if err := e.Client.Create(context.Background(), review); err != nil {
			return err
		}
		if !review.Status.Allowed {
			return fmt.Errorf("not yet allowed: %s", review.Status.Reason)
		}
		return nil
	})
}
