// Command runlocal starts a local control plane (etcd and kube-apiserver from the cache that
// hack/controlplane.sh fills), installs Keyward's CRDs, writes an admin kubeconfig and runs the manager in
// the foreground. Ctrl-C stops the manager, then the control plane. The control plane's data lives in a
// temporary directory and is gone when it stops.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/keyward-dev/keyward/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "run-local:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".local", "Directory for the kubeconfig and the kubectl link.")
	manager := flag.String("manager", "bin/manager", "Manager binary to run.")
	verifierBin := flag.String("verifier", "bin/verifier", "Verifier binary to run; empty to skip it.")
	flag.Parse()

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set; start this through `make run-local`")
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(absDir, "bin"), 0o755); err != nil {
		return err
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	fmt.Fprintln(os.Stderr, "run-local: starting etcd and kube-apiserver from", assets)
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "run-local: stopping the control plane")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "run-local: stopping the control plane:", err)
		}
	}()

	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	if err := testenv.InstallAdmission(context.Background(), cfg, c); err != nil {
		return err
	}
	// The manager keeps its record signing key in its own namespace, as it does in a cluster.
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "keyward-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace keyward-system: %w", err)
	}

	user, err := env.AddUser(envtest.User{Name: "local-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("creating the admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	kubeconfigPath := filepath.Join(absDir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	kubectlLink := filepath.Join(absDir, "bin", "kubectl")
	_ = os.Remove(kubectlLink)
	if err := os.Symlink(filepath.Join(assets, "kubectl"), kubectlLink); err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, `run-local: the control plane is up and the APIKey CRD is installed. In another shell:

    export KUBECONFIG=%s PATH=%s:$PATH
    kubectl apply -f config/samples/
    kubectl get apikeys
    key=$(kubectl get secret example -o jsonpath='{.data.api-key}' | base64 -d)
    curl -i -H "Authorization: Bearer $key" http://127.0.0.1:8090/v1/auth

run-local: starting the manager (metrics on http://127.0.0.1:8080/metrics) and the verifier (forward auth and
JSON on http://127.0.0.1:8090, ext_authz on 127.0.0.1:9001, metrics on http://127.0.0.1:8091/metrics);
Ctrl-C stops everything
`, kubeconfigPath, filepath.Dir(kubectlLink))

	// The manager and the verifier run as their service accounts, with the bundle's RBAC and admission
	// policies, as in a cluster.
	managerKubeconfig, err := impersonating(kubeconfig, absDir, "manager", testenv.ManagerUser)
	if err != nil {
		return err
	}
	verifierKubeconfig, err := impersonating(kubeconfig, absDir, "verifier", testenv.VerifierUser)
	if err != nil {
		return err
	}
	procs := []*exec.Cmd{exec.Command(*manager, "--metrics-bind-address=127.0.0.1:8080", "--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:8081", "--signing-key-secret=keyward-system/keyward-record-signing-key")}
	if *verifierBin != "" {
		args := []string{"--http-bind-address=127.0.0.1:8090",
			"--grpc-bind-address=127.0.0.1:9001", "--metrics-bind-address=127.0.0.1:8091", "--metrics-secure=false",
			"--health-probe-bind-address=127.0.0.1:8092", "--usage-flush-interval=10s"}
		// A Redis on loopback, when one is installed, so that rate limits are enforced the way they are
		// with several replicas.
		if redisServer, err := exec.LookPath("redis-server"); err == nil {
			procs = append(procs, exec.Command(redisServer, "--port", "6390", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"))
			args = append(args, "--rate-limit-redis=redis://127.0.0.1:6390/0")
			fmt.Fprintln(os.Stderr, "run-local: redis-server on 127.0.0.1:6390 holds the verifier's rate limits (--rate-limit-redis)")
		} else {
			fmt.Fprintln(os.Stderr, "run-local: no redis-server installed (apt-get install redis-server); rate limits are kept per verifier")
		}
		procs = append(procs, exec.Command(*verifierBin, args...))
	}
	kubeconfigs := map[string]string{*manager: managerKubeconfig, *verifierBin: verifierKubeconfig}
	for _, p := range procs {
		p.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigs[p.Path], "POD_NAMESPACE="+testenv.SystemNamespace)
	}
	return runUntilSignal(procs)
}

// impersonating writes a kubeconfig that acts as the service account user (with its groups) and returns its path.
func impersonating(adminKubeconfig []byte, dir, name, user string) (string, error) {
	cfg, err := clientcmd.Load(adminKubeconfig)
	if err != nil {
		return "", err
	}
	ns := strings.Split(user, ":")[2]
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
		auth.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	}
	path := filepath.Join(dir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// runUntilSignal runs the processes until Ctrl-C or until one of them exits, then stops the others.
func runUntilSignal(procs []*exec.Cmd) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exited := make(chan error, len(procs))
	var started []*exec.Cmd
	defer func() {
		for _, p := range started {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for range started {
			fmt.Fprintln(os.Stderr, "run-local:", <-exited)
		}
	}()
	for _, p := range procs {
		p.Stdout, p.Stderr = os.Stdout, os.Stderr
		// Each child gets its own process group so that Ctrl-C reaches it once, through us, after which we
		// stop the control plane it depends on.
		p.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := p.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", p.Path, err)
		}
		started = append(started, p)
		go func() { exited <- fmt.Errorf("%s exited: %w", p.Path, p.Wait()) }()
	}
	select {
	case err := <-exited:
		started = slices.DeleteFunc(started, func(p *exec.Cmd) bool { return p.ProcessState != nil })
		return err
	case <-ctx.Done():
		return nil
	}
}
