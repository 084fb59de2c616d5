// Command node runs a real one-node Kubernetes cluster on this machine, for the end-to-end tests (make e2e)
// and for a person to try Keyward with Pods (make run-cluster): etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy and a kubelet (from hack/controlplane.sh node) over Debian's containerd, runc and
// CNI plugins.
//
// The whole cluster lives in a network namespace of its own, which this command creates by starting its
// "inner" half with unshare(CLONE_NEWNET|CLONE_NEWNS). That namespace has loopback, a dummy interface holding
// the node's address, and the Pod bridge: no route out of it exists, so no component, leftover process or
// Pod can ever send a packet off this machine, whoever dies when. The namespace, its iptables chains, the
// bridge and every mount the kubelet and containerd make there disappear with the last process in it.
//
// Every process the inner half starts runs in a pids cgroup of the run (the kubelet's cgroup root is below
// it), so the outer half stops each of them by its PID, read from that cgroup, on success, failure or Ctrl-C,
// and removes the run's cgroups and directory. A run whose outer half died (SIGKILL) is swept the same way by
// the next run; runs never share names, so a second run does not collide with a first that died.
//
// Usage:
//
//	node --assets DIR [--images FILE.tar ...] -- COMMAND [ARGS]   run COMMAND inside the cluster's namespace
//	node --assets DIR --serve [-- COMMAND [ARGS]]                  (run COMMAND, then) keep the cluster up until Ctrl-C
//
// COMMAND gets KUBECONFIG (cluster-admin), KEYWARD_NODE_CONTAINERD (containerd's socket),
// KEYWARD_NODE_IP and KEYWARD_NODE_DIR. --serve also listens on 127.0.0.1 of the machine and forwards to the
// API server through a Unix socket, so kubectl works from outside the namespace without a route into it.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The cluster's fixed addresses. They exist only inside the run's network namespace.
const (
	nodeName    = "keyward-e2e"
	nodeIP      = "10.200.0.1"
	podCIDR     = "10.244.0.0/24"
	serviceCIDR = "10.96.0.0/16"
	// apiServiceIP is the first address of serviceCIDR: the kubernetes Service.
	apiServiceIP = "10.96.0.1"
	apiPort      = 6443
	// stateRoot holds one directory per run, named after it; runs whose owner died are swept from here.
	stateRoot  = "/var/tmp/keyward-node"
	cgroupRoot = "/sys/fs/cgroup"
	// runPrefix names each run's cgroups (keyward-node-<id>) in every hierarchy.
	runPrefix = "keyward-node-"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "inner" {
		if err := inner(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "node (inner):", err)
			os.Exit(1)
		}
		return
	}
	code, err := outer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[node %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// outer prepares the run's directory and cgroups, starts the inner half in new network and mount
// namespaces, forwards Ctrl-C to it, then stops whatever is left by PID and removes the run.
func outer() (int, error) {
	assets := flag.String("assets", "", "Directory with kube-apiserver, etcd, kubectl, kubelet, kube-proxy, kube-scheduler, kube-controller-manager (hack/controlplane.sh node).")
	serve := flag.Bool("serve", false, "Keep the cluster up until Ctrl-C and print how to reach it.")
	keep := flag.Bool("keep-logs", false, "Copy the components' logs to --logs even when the command succeeds.")
	logsOut := flag.String("logs", "", "Where to copy the components' logs when the command fails (default: not copied).")
	pause := flag.String("pause", "", "OCI image archive of the sandbox image "+PauseImage+" (nothing can be pulled here).")
	var images multiFlag
	flag.Var(&images, "images", "An OCI image archive to load into containerd before the command runs (repeatable).")
	flag.Parse()
	if *assets == "" || *pause == "" {
		return 2, errors.New("--assets and --pause are required")
	}
	if !*serve && flag.NArg() == 0 {
		return 2, errors.New("give a command after --, or --serve (with an optional command to run first)")
	}
	if os.Geteuid() != 0 {
		return 2, errors.New("a node needs root (namespaces, mounts, cgroups)")
	}
	sweepStale()

	id := randomHex(4)
	dir := filepath.Join(stateRoot, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 1, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(processIdentity(os.Getpid())), 0o644); err != nil {
		return 1, err
	}
	cg := runPrefix + id
	if err := makeCgroups(cg); err != nil {
		removeRun(id)
		return 1, err
	}
	logf("run %s in %s", id, dir)

	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	args := []string{"inner", "--id", id, "--dir", dir, "--assets", *assets, "--serve=" + strconv.FormatBool(*serve)}
	for _, i := range append([]string{*pause}, images...) {
		abs, err := filepath.Abs(i)
		if err != nil {
			return 1, err
		}
		args = append(args, "--images", abs)
	}
	args = append(args, "--")
	args = append(args, flag.Args()...)
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// New network and mount namespaces (Go makes the new mount namespace's mounts private). Pdeathsig: should
	// this process be killed, the inner half tears the cluster down itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGTERM}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		removeRun(id)
		return 1, err
	}
	var fwd *forwarder
	if *serve {
		fwd = startForwarder(filepath.Join(dir, "apiserver.sock"), dir)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	for waiting := true; waiting; {
		select {
		case s := <-sigs:
			logf("%v: stopping the cluster", s)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case waitErr = <-done:
			waiting = false
		}
	}
	if fwd != nil {
		fwd.close()
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(waitErr, &exit) {
		code = exit.ExitCode()
	} else if waitErr != nil {
		code = 1
	}
	if *logsOut != "" && (code != 0 || *keep) {
		if err := copyDir(filepath.Join(dir, "logs"), *logsOut); err != nil {
			logf("copying logs: %v", err)
		} else {
			logf("component logs in %s", *logsOut)
		}
	}
	// The inner half stopped what it started; whatever it could not (a shim or a container it lost track of)
	// is still in the run's cgroup and is stopped here by PID.
	removeRun(id)
	return code, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// processIdentity is a PID and its start time, so a later run can tell a live owner from a reused PID.
func processIdentity(pid int) string {
	return strconv.Itoa(pid) + " " + startTime(pid)
}

func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name may hold spaces and parentheses: fields are counted after its closing parenthesis.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// sweepStale removes every run whose owner is gone: a previous run killed before it could clean up.
func sweepStale() {
	entries, err := os.ReadDir(stateRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		owner, err := os.ReadFile(filepath.Join(stateRoot, e.Name(), "owner"))
		if err == nil {
			f := strings.Fields(string(owner))
			if len(f) == 2 {
				if pid, err := strconv.Atoi(f[0]); err == nil && startTime(pid) == f[1] {
					continue // its owner still runs: not ours to touch
				}
			}
		}
		logf("sweeping run %s, whose owner is gone", e.Name())
		removeRun(e.Name())
	}
}

// hierarchies are the cgroup v1 hierarchies mounted here; the kubelet (cgroupfs driver) needs its cgroup
// root in each.
func hierarchies() []string {
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "unified" {
			out = append(out, e.Name())
		}
	}
	return out
}

func makeCgroups(name string) error {
	for _, h := range hierarchies() {
		d := filepath.Join(cgroupRoot, h, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		if h == "cpuset" {
			// A cpuset cgroup takes no task until it has CPUs and memory nodes: those of its parent.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(cgroupRoot, h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// joinCgroup moves this process into the run's cgroup of every hierarchy; its children inherit them.
func joinCgroup(name string) error {
	for _, h := range hierarchies() {
		if err := os.WriteFile(filepath.Join(cgroupRoot, h, name, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("joining cgroup %s/%s: %w", h, name, err)
		}
	}
	return nil
}

// pidsIn lists every PID in the cgroup directory d and below it.
func pidsIn(d string) []int {
	var pids []int
	_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil //nolint:nilerr // a cgroup that went away has no PIDs left; keep walking
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil //nolint:nilerr // as above
		}
		for _, l := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(l); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeRun stops every process left in run id's cgroups by its PID, removes the cgroups (deepest first) and
// the run's directory. The run's namespaces disappear with their last process.
func removeRun(id string) {
	name := runPrefix + id
	pidsDir := filepath.Join(cgroupRoot, "pids", name)
	if _, err := os.Stat(pidsDir); err == nil {
		// A process may fork while it is being killed, so the cgroup is read until it is empty. The freezer
		// would stop forks too, but a frozen process cannot be reaped: killing and rereading is enough here.
		for round := 0; ; round++ {
			pids := pidsIn(pidsDir)
			if len(pids) == 0 {
				break
			}
			if round == 0 {
				logf("stopping %d leftover processes of run %s by PID", len(pids), id)
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if round > 600 {
				logf("processes %v of run %s do not die", pids, id)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, h := range hierarchies() {
		d := filepath.Join(cgroupRoot, h, name)
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Deepest first: a cgroup is removed only once it has no children.
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, x := range dirs {
			for try := 0; try < 100; try++ {
				if err := syscall.Rmdir(x); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				// A cgroup whose last task just died can be busy for a moment.
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	dir := filepath.Join(stateRoot, id)
	if err := os.RemoveAll(dir); err != nil {
		logf("removing %s: %v", dir, err)
	}
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// forwarder listens on 127.0.0.1 of the machine and forwards each connection to the Unix socket that the
// inner half serves the API server on: a person's kubectl reaches the cluster without any route into its
// namespace.
type forwarder struct {
	ln net.Listener
}

func startForwarder(sock, dir string) *forwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		logf("no forwarder for kubectl: %v", err)
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "forward-port"), []byte(strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
		logf("no forwarder for kubectl: %v", err)
	}
	go relay(ln, "unix", sock)
	return &forwarder{ln: ln}
}

// relay copies every connection ln accepts to and from a new connection to addr, until ln is closed.
func relay(ln net.Listener, network, addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial(network, addr)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c) }()
			_, _ = io.Copy(c, up)
		}()
	}
}

func (f *forwarder) close() {
	if f != nil {
		_ = f.ln.Close()
	}
}

// cluster is the inner half's state: the run's directory and the processes it started, in start order.
type cluster struct {
	id, dir, assets string
	// pause is the OCI archive of the sandbox image, loaded before the kubelet starts.
	pause       string
	procs       []*proc
	kubeletProc *proc
	ca          *authority
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func inner(argv []string) error {
	fs := flag.NewFlagSet("inner", flag.ExitOnError)
	id := fs.String("id", "", "")
	dir := fs.String("dir", "", "")
	assets := fs.String("assets", "", "")
	serve := fs.Bool("serve", false, "")
	var images multiFlag
	fs.Var(&images, "images", "")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	// The first archive is the pause image (see outer).
	pause, images := images[0], images[1:]
	// A child reparents to the nearest subreaper: containerd's shims, which daemonize, stay below this
	// process instead of going to init, and are reaped here.
	if err := setSubreaper(); err != nil {
		return err
	}
	if err := joinCgroup(runPrefix + *id); err != nil {
		return err
	}
	c := &cluster{id: *id, dir: *dir, assets: *assets, pause: pause}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go reapOrphans(ctx)
	err := c.run(ctx, *serve, images, fs.Args())
	c.stop()
	return err
}

func setSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", e)
	}
	return nil
}

// reapOrphans waits for the orphans (shims, containers) that reparent to this subreaper, so none stays a
// zombie. exec.Cmd waits for its own children; an orphan's PID is never one of those.
func reapOrphans(ctx context.Context) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		for _, pid := range childPIDs() {
			if !startedHere(pid) {
				var ws syscall.WaitStatus
				_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			}
		}
	}
}

var (
	startedMu sync.Mutex
	started   = map[int]bool{}
)

func startedHere(pid int) bool {
	startedMu.Lock()
	defer startedMu.Unlock()
	return started[pid]
}

// childPIDs lists this process's children.
func childPIDs() []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/children", os.Getpid()))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func (c *cluster) path(p ...string) string { return filepath.Join(append([]string{c.dir}, p...)...) }

func (c *cluster) run(ctx context.Context, serve bool, images, command []string) error {
	for _, d := range []string{"logs", "pki", "etcd", "kubelet", "pod-logs", "containerd/root", "containerd/state", "cni/net.d", "runc"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := c.network(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := c.remountSys(); err != nil {
		return fmt.Errorf("sysfs: %w", err)
	}
	if err := c.resolution(); err != nil {
		return fmt.Errorf("name resolution: %w", err)
	}
	if err := c.certificates(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := c.controlPlane(ctx); err != nil {
		return err
	}
	if err := c.node(ctx); err != nil {
		return err
	}
	for _, i := range images {
		if err := c.loadImage(ctx, i); err != nil {
			return err
		}
	}
	if err := c.waitNodeReady(ctx); err != nil {
		return err
	}
	env := append(os.Environ(),
		"KUBECONFIG="+c.path("admin.kubeconfig"),
		"KEYWARD_NODE_CONTAINERD="+c.path("containerd", "containerd.sock"),
		"KEYWARD_NODE_IP="+nodeIP,
		"KEYWARD_NODE_DIR="+c.dir,
		"PATH="+c.assets+":"+os.Getenv("PATH"),
	)
	if len(command) > 0 {
		if err := c.runCommand(ctx, env, command); err != nil {
			return err
		}
	}
	if serve {
		return c.serve(ctx)
	}
	return nil
}

// runCommand runs command with the cluster's environment; Ctrl-C or the cluster's stop stops it.
func (c *cluster) runCommand(ctx context.Context, env, command []string) error {
	logf("cluster ready; running %s", strings.Join(command, " "))
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Ctrl-C reaches the command through the terminal's process group; a SIGTERM sent to this process
	// alone cancels ctx, which kills it.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	startedMu.Lock()
	started[cmd.Process.Pid] = true
	startedMu.Unlock()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(command[0]), err)
	}
	return nil
}

// serve keeps the cluster up until Ctrl-C, with the API server reachable from outside the namespace
// through a Unix socket that the outer half forwards to 127.0.0.1.
func (c *cluster) serve(ctx context.Context) error {
	sock := c.path("apiserver.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer ln.Close()
	go relay(ln, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort)))
	// The outer half writes the port it listens on; the kubeconfig for outside uses it.
	var port string
	for port == "" && ctx.Err() == nil {
		if b, err := os.ReadFile(c.path("forward-port")); err == nil {
			port = strings.TrimSpace(string(b))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	outside := c.path("kubeconfig")
	if err := c.kubeconfig(outside, "https://127.0.0.1:"+port, "admin"); err != nil {
		return err
	}
	fmt.Printf(`
Keyward's node is up: a real kubelet, containerd and kube-proxy in a network namespace of their own.

  export KUBECONFIG=%s
  kubectl get nodes

Inside the cluster's namespace (Pod and Service addresses): nsenter --net=/proc/%d/ns/net --mount=/proc/%d/ns/mnt
Ctrl-C stops everything.
`, outside, os.Getpid(), os.Getpid())
	<-ctx.Done()
	return nil
}

func (c *cluster) network() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		// The node's address sits on a bridge with no ports (this kernel has no dummy interfaces): Pods
		// reach it through the Pod bridge, and nothing
		// behind it leads anywhere else.
		{"link", "add", "kwnode0", "type", "bridge"},
		{"addr", "add", nodeIP + "/32", "dev", "kwnode0"},
		{"link", "set", "kwnode0", "up"},
		// Service addresses are DNATed by kube-proxy; this route only lets a process of the node's own
		// namespace (nginx, the tests) pick a source address for them. It points at that port-less bridge, so a
		// packet no rule rewrites is dropped there.
		{"route", "add", serviceCIDR, "dev", "kwnode0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	// Forwarding between the bridge and the node's address, within this namespace only.
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"} {
		if err := os.WriteFile("/proc/sys/"+s, []byte("1"), 0o644); err != nil {
			return err
		}
	}
	// Bridged traffic passes iptables, so a Service answered by a Pod on the same bridge is translated back.
	_ = os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644)
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "keyward-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "kwcni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "loopback"}
  ]
}`, podCIDR, c.path("cni", "ipam"))
	return os.WriteFile(c.path("cni", "net.d", "10-keyward-e2e.conflist"), []byte(conf), 0o644)
}

// remountSys mounts a sysfs of this network namespace (as `ip netns exec` does, so /sys/class/net shows the
// namespace's interfaces) and puts the cgroup hierarchies back under it.
func (c *cluster) remountSys() error {
	keep := c.path("cgroup-bind")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(cgroupRoot, keep, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping the cgroup mounts: %w", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mounting sysfs: %w", err)
	}
	if err := syscall.Mount(keep, cgroupRoot, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("putting the cgroup mounts back: %w", err)
	}
	return syscall.Unmount(keep, syscall.MNT_DETACH)
}

// resolution gives the namespace its own /etc/hosts (the node's name) and an empty /etc/resolv.conf, bound
// over the machine's in this mount namespace only: no name is ever sent to a resolver, which could not be
// reached from here anyway.
func (c *cluster) resolution() error {
	if err := os.WriteFile(c.path("hosts"), []byte("127.0.0.1 localhost\n"+nodeIP+" "+nodeName+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	for _, f := range []string{"hosts", "resolv.conf"} {
		if err := syscall.Mount(c.path(f), "/etc/"+f, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s: %w", f, err)
		}
	}
	return nil
}

// start runs one component with its output in logs/<name>.log. Pdeathsig: should the inner half die, so does
// the component.
func (c *cluster) start(name, bin string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin:"+c.assets)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	startedMu.Lock()
	started[cmd.Process.Pid] = true
	startedMu.Unlock()
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p, nil
}

// stop stops the components by PID, newest first: the kubelet and kube-proxy before containerd, the
// control plane last. What containerd started (shims, containers) is stopped by the outer half from the
// run's cgroup.
func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			logf("%s (PID %d) ignored SIGTERM; killing it", p.name, p.cmd.Process.Pid)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// waitFor polls check until it succeeds, a component it depends on exits, or ctx ends.
func (c *cluster) waitFor(ctx context.Context, what string, deps []*proc, check func() error) error {
	logf("waiting for %s", what)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		for _, d := range deps {
			select {
			case <-d.done:
				return fmt.Errorf("%s exited while waiting for %s (see %s): %w", d.name, what, c.path("logs", d.name+".log"), last)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %w)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *cluster) controlPlane(ctx context.Context) error {
	etcd, err := c.start("etcd", filepath.Join(c.assets, "etcd"), "--data-dir", c.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync")
	if err != nil {
		return err
	}
	pki := func(f string) string { return c.path("pki", f) }
	api, err := c.start("kube-apiserver", filepath.Join(c.assets, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--secure-port", strconv.Itoa(apiPort), "--advertise-address", nodeIP,
		"--service-cluster-ip-range", serviceCIDR,
		"--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
		"--client-ca-file", pki("ca.crt"),
		"--kubelet-client-certificate", pki("admin.crt"), "--kubelet-client-key", pki("admin.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki("sa.key"), "--service-account-signing-key-file", pki("sa.key"),
		"--authorization-mode", "Node,RBAC", "--allow-privileged=false",
		"--kubelet-preferred-address-types", "InternalIP",
		"--endpoint-reconciler-type", "lease")
	if err != nil {
		return err
	}
	if err := c.kubeconfig(c.path("admin.kubeconfig"), fmt.Sprintf("https://127.0.0.1:%d", apiPort), "admin"); err != nil {
		return err
	}
	hc, err := c.adminHTTP()
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver /readyz", []*proc{etcd, api}, func() error {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", apiPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		return err
	}
	kc := c.path("admin.kubeconfig")
	if _, err := c.start("kube-controller-manager", filepath.Join(c.assets, "kube-controller-manager"),
		"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
		"--service-account-private-key-file", pki("sa.key"), "--root-ca-file", pki("ca.crt"),
		"--use-service-account-credentials", "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--controllers", "*"); err != nil {
		return err
	}
	_, err = c.start("kube-scheduler", filepath.Join(c.assets, "kube-scheduler"),
		"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
		"--leader-elect=false", "--bind-address", "127.0.0.1")
	return err
}

func (c *cluster) node(ctx context.Context) error {
	sock := c.path("containerd", "containerd.sock")
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # This machine withholds CAP_SYS_RESOURCE: runc cannot give the pause container a negative OOM score.
  restrict_oom_score_adj = true
  # Pod network namespaces are bind-mounted under the run's state, not /run/netns of the machine.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, c.path("containerd", "root"), c.path("containerd", "state"), sock, sock+".ttrpc", PauseImage,
		c.path("runc"), c.path("cni", "net.d"))
	if err := os.WriteFile(c.path("containerd", "config.toml"), []byte(conf), 0o644); err != nil {
		return err
	}
	ctrd, err := c.start("containerd", "containerd", "--config", c.path("containerd", "config.toml"))
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", []*proc{ctrd}, func() error {
		return exec.Command("ctr", "--address", sock, "version").Run()
	}); err != nil {
		return err
	}
	// Nothing can be pulled here: the pause image is built (make e2e) and loaded before any sandbox.
	if err := c.loadImage(ctx, c.pause); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines run cgroup v1.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
# A Secret volume follows an update within about this long (the default is 1m).
syncFrequency: %s
resolvConf: %q
podLogsDir: %q
clusterDomain: cluster.local
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
protectKernelDefaults: false
`, runPrefix+c.id, sock, nodeIP, c.path("pki", "ca.crt"), syncFrequency(), c.path("resolv.conf"), c.path("pod-logs"))
	if err := os.WriteFile(c.path("kubelet.yaml"), []byte(kubelet), 0o644); err != nil {
		return err
	}
	kl, err := c.start("kubelet", filepath.Join(c.assets, "kubelet"), "--config", c.path("kubelet.yaml"),
		"--kubeconfig", c.path("admin.kubeconfig"), "--root-dir", c.path("kubelet"), "--cert-dir", c.path("kubelet", "pki"),
		"--node-ip", nodeIP, "--hostname-override", nodeName, "--v", "2")
	if err != nil {
		return err
	}
	proxyConf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: %q}
# A network namespace cannot change the machine's conntrack table size: leave it alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {masqueradeAll: false}
`, podCIDR, nodeName, nodeIP, c.path("admin.kubeconfig"))
	if err := os.WriteFile(c.path("kube-proxy.yaml"), []byte(proxyConf), 0o644); err != nil {
		return err
	}
	if _, err := c.start("kube-proxy", filepath.Join(c.assets, "kube-proxy"), "--config", c.path("kube-proxy.yaml")); err != nil {
		return err
	}
	c.kubeletProc = kl
	return nil
}

// syncFrequency is the kubelet's sync period (KEYWARD_NODE_SYNC_FREQUENCY, default 10s): how often it
// refreshes a mounted Secret, at most.
func syncFrequency() string {
	if v := os.Getenv("KEYWARD_NODE_SYNC_FREQUENCY"); v != "" {
		return v
	}
	return "10s"
}

// PauseImage is the sandbox image containerd runs for every Pod; hack/node builds it, since nothing can be
// pulled here.
const PauseImage = "keyward.local/pause:e2e"

func (c *cluster) loadImage(ctx context.Context, archive string) error {
	logf("loading image archive %s", archive)
	cmd := exec.CommandContext(ctx, "ctr", "--address", c.path("containerd", "containerd.sock"), "-n", "k8s.io",
		"images", "import", "--digests", "--no-unpack=false", archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr import %s: %w: %s", archive, err, out)
	}
	return nil
}

func (c *cluster) waitNodeReady(ctx context.Context) error {
	deps := []*proc{}
	if c.kubeletProc != nil {
		deps = append(deps, c.kubeletProc)
	}
	kubectl := filepath.Join(c.assets, "kubectl")
	// The controller manager gives every namespace its default ServiceAccount; no Pod is admitted before.
	if err := c.waitFor(ctx, "the default ServiceAccount", nil, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", c.path("admin.kubeconfig"), "-n", "default", "get", "serviceaccount", "default").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}); err != nil {
		return err
	}
	return c.waitFor(ctx, "node "+nodeName+" Ready", deps, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", c.path("admin.kubeconfig"), "get", "node", nodeName,
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		}
		if string(out) != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

// authority is the cluster's CA; every certificate of the run is signed by it.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (c *cluster) certificates() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward-e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	c.ca = &authority{cert: cert, key: key}
	if err := c.writePair("ca", der, key); err != nil {
		return err
	}
	if err := c.issue("apiserver", "kube-apiserver", nil, []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "localhost"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(nodeIP), net.ParseIP(apiServiceIP)}); err != nil {
		return err
	}
	// One cluster-admin identity for every component and the tests: this cluster lives for one run in a
	// namespace nobody else can reach.
	if err := c.issue("admin", "keyward-e2e-admin", []string{"system:masters"}, nil, nil); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	b, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	return os.WriteFile(c.path("pki", "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600)
}

func (c *cluster) issue(name, cn string, orgs, dns []string, ips []net.IP) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: dns, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca.cert, &key.PublicKey, c.ca.key)
	if err != nil {
		return err
	}
	return c.writePair(name, der, key)
}

func (c *cluster) writePair(name string, der []byte, key *ecdsa.PrivateKey) error {
	if err := os.WriteFile(c.path("pki", name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(c.path("pki", name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600)
}

func (c *cluster) kubeconfig(file, server, user string) error {
	read := func(f string) string {
		b, _ := os.ReadFile(c.path("pki", f))
		return string(b)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: keyward-e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: keyward-e2e
  context: {cluster: keyward-e2e, user: %s}
current-context: keyward-e2e
`, server, b64(read("ca.crt")), user, b64(read("admin.crt")), b64(read("admin.key")), user)
	return os.WriteFile(file, []byte(kc), 0o600)
}

func (c *cluster) adminHTTP() (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(c.path("pki", "admin.crt"), c.path("pki", "admin.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.cert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool}}}, nil
}
