// Command runlocal starts a local control plane (etcd, kube-apiserver and kube-controller-manager from the
// cache that hack/controlplane.sh fills), installs Keyward's CRDs, RBAC and admission policies, writes an
// admin kubeconfig, serves a local webhook receiver and runs the manager and the verifier in the foreground;
// it prints a ready line once they answer. Ctrl-C stops them, then the control plane. The control plane's
// data lives in a temporary directory and is gone when it stops.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "run-local:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".local", "Directory for the kubeconfig, the kubectl link, logs and the receiver's record.")
	manager := flag.String("manager", "bin/manager", "Manager binary to run.")
	verifierBin := flag.String("verifier", "bin/verifier", "Verifier binary to run; empty to skip it.")
	managerFlags := flag.String("manager-flags", "", "Extra flags for the manager, space-separated (make run-local MANAGER_FLAGS=...).")
	verifierFlags := flag.String("verifier-flags", "", "Extra flags for the verifier, space-separated (make run-local VERIFIER_FLAGS=...).")
	receiverAddr := flag.String("receiver-address", "127.0.0.1:8093", "Where the local webhook receiver listens (https); empty to skip it.")
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
	var procs []*process
	// kube-controller-manager, for what a cluster does around Keyward: the garbage collector deletes a
	// deleted APIKey's Secret (its owner), ClusterRole aggregation puts keyward-view into view, the namespace
	// controller empties a deleted namespace. Its many lines go to a log file.
	if kcm := filepath.Join(assets, "kube-controller-manager"); fileExists(kcm) {
		procs = append(procs, &process{name: "kube-controller-manager", log: filepath.Join(absDir, "kube-controller-manager.log"),
			cmd: exec.Command(kcm, "--kubeconfig", kubeconfigPath, "--leader-elect=false", "--secure-port=0",
				"--controllers=garbagecollector,clusterrole-aggregation,namespace")})
	} else {
		fmt.Fprintln(os.Stderr, "run-local: no kube-controller-manager in", assets, "(hack/controlplane.sh local builds it): nothing is garbage-collected")
	}
	managerArgs := []string{"--metrics-bind-address=127.0.0.1:8080", "--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:8081", "--signing-key-secret=keyward-system/keyward-record-signing-key"}
	managerEnv := []string{"KUBECONFIG=" + managerKubeconfig}
	var receiverLine string
	if *receiverAddr != "" {
		// The receiver listens on loopback, which the manager's webhook guard refuses unless allowed; and it
		// serves a certificate of its own, which the manager trusts beside the system's roots.
		tlsCfg, err := selfSignedTLS(filepath.Join(absDir, "receiver"))
		if err != nil {
			return fmt.Errorf("the webhook receiver's certificate: %w", err)
		}
		record, err := os.Create(filepath.Join(absDir, "webhooks.jsonl"))
		if err != nil {
			return err
		}
		defer record.Close()
		ln, err := tls.Listen("tcp", *receiverAddr, tlsCfg)
		if err != nil {
			return fmt.Errorf("the webhook receiver: %w", err)
		}
		srv := &http.Server{Handler: &receiver{client: c, lines: os.Stderr, record: record}, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		managerArgs = append(managerArgs, "--webhook-allowed-cidrs=127.0.0.1/32")
		managerEnv = append(managerEnv, "SSL_CERT_DIR="+trustingAlso(filepath.Join(absDir, "receiver")))
		receiverLine = fmt.Sprintf("\n  webhooks:  https://%s/ (signatures checked; each delivery printed here and kept in %s)",
			*receiverAddr, record.Name())
	}
	procs = append(procs, &process{name: "manager", env: managerEnv,
		cmd: exec.Command(*manager, append(managerArgs, strings.Fields(*managerFlags)...)...)})
	if *verifierBin != "" {
		args := []string{"--http-bind-address=127.0.0.1:8090",
			"--grpc-bind-address=127.0.0.1:9001", "--metrics-bind-address=127.0.0.1:8091", "--metrics-secure=false",
			"--health-probe-bind-address=127.0.0.1:8092", "--usage-flush-interval=10s"}
		// A Redis on loopback, when one is installed, so that rate limits are enforced the way they are
		// with several replicas.
		if redisServer, err := exec.LookPath("redis-server"); err == nil {
			procs = append(procs, &process{name: "redis-server", log: filepath.Join(absDir, "redis.log"),
				cmd: exec.Command(redisServer, "--port", "6390", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")})
			args = append(args, "--rate-limit-redis=redis://127.0.0.1:6390/0")
			fmt.Fprintln(os.Stderr, "run-local: redis-server on 127.0.0.1:6390 holds the verifier's rate limits (--rate-limit-redis)")
		} else {
			fmt.Fprintln(os.Stderr, "run-local: no redis-server installed (apt-get install redis-server); rate limits are kept per verifier")
		}
		procs = append(procs, &process{name: "verifier", env: []string{"KUBECONFIG=" + verifierKubeconfig},
			cmd: exec.Command(*verifierBin, append(args, strings.Fields(*verifierFlags)...)...)})
	}
	ready := func(ctx context.Context) error {
		probes := []string{"http://127.0.0.1:8081/readyz"}
		if *verifierBin != "" {
			probes = append(probes, "http://127.0.0.1:8092/readyz")
		}
		for _, u := range probes {
			if err := waitFor(ctx, func(ctx context.Context) error { return httpOK(ctx, u) }); err != nil {
				return err
			}
		}
		// ClusterRole aggregation is kube-controller-manager's first visible work.
		return waitFor(ctx, func(ctx context.Context) error { return aggregated(ctx, c) })
	}
	banner := fmt.Sprintf(`run-local: ready. In another shell:

    export KUBECONFIG=%s PATH=%s:%s:$PATH
    kubectl apply -f config/samples/

  manager:   metrics on http://127.0.0.1:8080/metrics
  verifier:  forward auth and JSON on http://127.0.0.1:8090, ext_authz on 127.0.0.1:9001, metrics on http://127.0.0.1:8091/metrics%s
  logs:      %s (kube-controller-manager); Ctrl-C stops everything
`, kubeconfigPath, filepath.Dir(kubectlLink), pluginDir(*manager), receiverLine, absDir)
	return runUntilSignal(procs, ready, banner)
}

// process is one program run-local runs: its command, extra environment and, for the noisy ones, a log file
// instead of the terminal.
type process struct {
	name string
	cmd  *exec.Cmd
	env  []string
	log  string
}

// pluginDir is where make run-local built kubectl-keyward: beside the manager.
func pluginDir(manager string) string {
	abs, err := filepath.Abs(filepath.Dir(manager))
	if err != nil {
		return filepath.Dir(manager)
	}
	return abs
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// waitFor polls check until it passes or ctx ends.
func waitFor(ctx context.Context, check func(context.Context) error) error {
	return wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return check(ctx) == nil, nil
	})
}

func httpOK(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return nil
}

// aggregated passes once the built-in view ClusterRole holds keyward-view's rules.
func aggregated(ctx context.Context, c client.Client) error {
	view := &rbacv1.ClusterRole{}
	if err := c.Get(ctx, client.ObjectKey{Name: "view"}, view); err != nil {
		return err
	}
	for _, r := range view.Rules {
		if slices.Contains(r.APIGroups, keywardv1alpha1.GroupVersion.Group) {
			return nil
		}
	}
	return errors.New("view does not aggregate keyward-view yet")
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

// runUntilSignal runs the processes until Ctrl-C or until one of them exits, then stops the others; once
// ready passes it prints banner.
func runUntilSignal(procs []*process, ready func(context.Context) error, banner string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exited := make(chan error, len(procs))
	var started []*process
	defer func() {
		for _, p := range started {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		for range started {
			fmt.Fprintln(os.Stderr, "run-local:", <-exited)
		}
	}()
	var logs []*os.File
	defer func() {
		for _, f := range logs {
			_ = f.Close()
		}
	}()
	for _, p := range procs {
		p.cmd.Env = append(os.Environ(), append(p.env, "POD_NAMESPACE="+testenv.SystemNamespace)...)
		p.cmd.Stdout, p.cmd.Stderr = os.Stdout, os.Stderr
		if p.log != "" {
			f, err := os.Create(p.log)
			if err != nil {
				return err
			}
			logs = append(logs, f)
			p.cmd.Stdout, p.cmd.Stderr = f, f
		}
		// Each child gets its own process group so that Ctrl-C reaches it once, through us, after which we
		// stop the control plane it depends on.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := p.cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", p.name, err)
		}
		started = append(started, p)
		go func() {
			err := p.cmd.Wait()
			if err == nil {
				err = errors.New("status 0")
			}
			exited <- fmt.Errorf("%s (pid %d) exited: %w", p.name, p.cmd.Process.Pid, err)
		}()
	}
	go func() {
		if ready(ctx) == nil {
			fmt.Fprint(os.Stderr, banner)
		}
	}()
	select {
	case err := <-exited:
		started = slices.DeleteFunc(started, func(p *process) bool { return p.cmd.ProcessState != nil })
		return err
	case <-ctx.Done():
		return nil
	}
}
