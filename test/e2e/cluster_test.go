package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/selfsigned"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// release is the Helm release every step installs, upgrades or uninstalls, in systemNamespace.
const (
	release         = "keyward"
	systemNamespace = "keyward-system"
	tenant          = "shop"
	// route is what the gateway requires of a key: nginx asks the verifier for it on every request.
	routeScope = "orders:read"
)

// pinned is hack/e2e's images.json: Keyward's images (repo@sha256:...) and chart, of the working tree and
// of an earlier commit of main.
type pinned struct {
	Manager, Verifier         string
	BaseManager, BaseVerifier string
	BaseChart, BaseCommit     string
}

// suite is the cluster the steps share: clients, the gateway in front of the verifier, its upstream and a
// webhook receiver, all inside the node's network namespace.
type suite struct {
	// t is the running step's; root the whole story's, which owns what outlives a step (nginx, servers).
	t, root  *testing.T
	c        client.Client
	images   pinned
	nodeIP   string
	gateway  *gateway
	upstream *http.Server
	receiver *receiver
	// chartDir is the working tree's chart.
	chartDir string
}

func newSuite(t *testing.T) *suite {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	scheme := testenv.Scheme
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{t: t, root: t, c: c, nodeIP: os.Getenv("KEYWARD_NODE_IP"), chartDir: filepath.Join(testenv.RepoRoot(), "charts", "keyward")}
	b, err := os.ReadFile(filepath.Join(os.Getenv("KEYWARD_E2E_DIR"), "images.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s.images); err != nil {
		t.Fatal(err)
	}
	s.upstream = s.serveUpstream()
	s.receiver = newReceiver(t, s.nodeIP)
	return s
}

// run runs a command (kubectl, helm, the plugin) and fails the test, with its output, when it fails.
func (s *suite) run(name string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// helmInstall installs (or upgrades to) chart with images, as a platform team would: two manager replicas,
// webhooks allowed to reach receivers on the node's address.
func (s *suite) helmInstall(verb, chart, manager, verifier string) {
	s.t.Helper()
	args := []string{verb, release, chart, "--namespace", systemNamespace, "--wait", "--timeout", "15m",
		"--set", "manager.replicas=2", "--set", "manager.webhook.allowedCIDRs={" + s.nodeIP + "/32}"}
	for component, ref := range map[string]string{"manager": manager, "verifier": verifier} {
		repo, digest, _ := strings.Cut(ref, "@")
		args = append(args, "--set", "image."+component+".repository="+repo, "--set", "image."+component+".digest="+digest)
	}
	s.run("helm", args...)
	s.waitAvailable(manager, verifier)
	// APIKey writes may be answered 503 for a few seconds after the CRD is installed or changed, while the
	// mutating admission policy learns its schema (docs/operations/install.md): wait until one is admitted.
	eventually.Succeeds(s.t, "an APIKey write admitted", func() error {
		probe := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "admission-probe"}}
		return s.c.Create(context.Background(), probe, client.DryRunAll)
	})
}

// waitAvailable waits until both Deployments are Available with every replica running the given images.
func (s *suite) waitAvailable(manager, verifier string) {
	s.t.Helper()
	for name, image := range map[string]string{"keyward-manager": manager, "keyward-verifier": verifier} {
		eventually.Succeeds(s.t, name+" available on "+image, func() error {
			var d appsv1.Deployment
			if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: name}, &d); err != nil {
				return err
			}
			if got := d.Spec.Template.Spec.Containers[0].Image; got != image {
				return fmt.Errorf("image %s", got)
			}
			want := ptr.Deref(d.Spec.Replicas, 1)
			if d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedReplicas != want ||
				d.Status.AvailableReplicas != want || d.Status.Replicas != want {
				return fmt.Errorf("status %+v", d.Status)
			}
			pods := s.pods(name)
			if int32(len(pods)) != want {
				return fmt.Errorf("%d pods", len(pods))
			}
			return nil
		})
	}
}

// pods lists the running, non-terminating Pods of a Keyward Deployment by component.
func (s *suite) pods(deployment string) []corev1.Pod {
	s.t.Helper()
	var list corev1.PodList
	if err := s.c.List(context.Background(), &list, client.InNamespace(systemNamespace),
		client.MatchingLabels{"app.kubernetes.io/component": strings.TrimPrefix(deployment, "keyward-")}); err != nil {
		s.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

// apiKey creates an APIKey in the tenant namespace and waits until its key is minted.
func (s *suite) apiKey(name string, spec keywardv1alpha1.APIKeySpec) *keywardv1alpha1.APIKey {
	s.t.Helper()
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: name}, Spec: spec}
	if err := s.c.Create(context.Background(), ak); err != nil {
		s.t.Fatal(err)
	}
	return s.waitKey(name, "minted", func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.KeyID != "" })
}

func (s *suite) get(name string) *keywardv1alpha1.APIKey {
	s.t.Helper()
	var ak keywardv1alpha1.APIKey
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: tenant, Name: name}, &ak); err != nil {
		s.t.Fatal(err)
	}
	return &ak
}

func (s *suite) waitKey(name, what string, cond func(*keywardv1alpha1.APIKey) bool) *keywardv1alpha1.APIKey {
	s.t.Helper()
	return eventually.Get(s.t, "APIKey "+name+" "+what, func() (*keywardv1alpha1.APIKey, error) {
		var ak keywardv1alpha1.APIKey
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: tenant, Name: name}, &ak); err != nil {
			return nil, err
		}
		if !cond(&ak) {
			return nil, fmt.Errorf("status %+v", ak.Status)
		}
		return &ak, nil
	})
}

func (s *suite) patchKey(name string, change func(*keywardv1alpha1.APIKey)) {
	s.t.Helper()
	ak := s.get(name)
	base := ak.DeepCopy()
	change(ak)
	if err := s.c.Patch(context.Background(), ak, client.MergeFrom(base)); err != nil {
		s.t.Fatal(err)
	}
}

// secretKey reads the key and its ID from an APIKey's Secret, as the kubelet would mount them.
func (s *suite) secretKey(name string) (key, id string) {
	s.t.Helper()
	var sec corev1.Secret
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: tenant, Name: name}, &sec); err != nil {
		s.t.Fatal(err)
	}
	return string(sec.Data["api-key"]), string(sec.Data["key-id"])
}

// serveUpstream is the service behind the gateway: it answers 200 to whatever nginx lets through.
func (s *suite) serveUpstream() *http.Server {
	ln, err := net.Listen("tcp", net.JoinHostPort(s.nodeIP, "0"))
	if err != nil {
		s.t.Fatal(err)
	}
	srv := &http.Server{Addr: ln.Addr().String(), ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Keyward-Key-Id") == "" {
			http.Error(w, "the gateway let through a request without a key ID", http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	s.root.Cleanup(func() { _ = srv.Close() })
	return srv
}

// gateway is nginx from Debian, configured as docs/guides/gateways/forward-auth.md shows: auth_request to the verifier's Service.
type gateway struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startGateway starts nginx in front of the upstream, asking the verifier Service at its cluster IP (there
// is no cluster DNS on this node). It is stopped by its PID.
func (s *suite) startGateway() {
	s.t.Helper()
	if s.gateway != nil {
		s.stopGateway()
	}
	var svc corev1.Service
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: "keyward-verifier"}, &svc); err != nil {
		s.t.Fatal(err)
	}
	dir := s.root.TempDir()
	ln, err := net.Listen("tcp", net.JoinHostPort(s.nodeIP, "0"))
	if err != nil {
		s.t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s:%[3]d;
        location /orders/ {
            auth_request /_keyward;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_name $upstream_http_x_keyward_name;
            auth_request_set $keyward_namespace $upstream_http_x_keyward_namespace;
            auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
            proxy_set_header X-Keyward-Key-Id $keyward_key_id;
            proxy_set_header X-Keyward-Name $keyward_name;
            proxy_set_header X-Keyward-Namespace $keyward_namespace;
            proxy_set_header X-Keyward-Scopes $keyward_scopes;
            proxy_pass http://%[5]s;
        }
        location = /_keyward {
            internal;
            proxy_pass http://%[4]s:8080/v1/auth?scope=%[6]s&namespace=%[7]s;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Keyward-Required-Scopes "";
            proxy_set_header X-Keyward-Required-Namespace "";
        }
    }
}
`, dir, s.nodeIP, port, svc.Spec.ClusterIP, s.upstream.Addr, routeScope, tenant)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	g := &gateway{url: fmt.Sprintf("http://%s:%d/orders/list", s.nodeIP, port), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(g.done) }()
	s.gateway = g
	s.root.Cleanup(s.stopGateway)
	eventually.Succeeds(s.t, "nginx listening", func() error {
		select {
		case <-g.done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			s.t.Fatalf("nginx exited: %s", b)
		default:
		}
		c, err := net.Dial("tcp", net.JoinHostPort(s.nodeIP, strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err
	})
}

// stopGateway stops nginx by its PID: SIGQUIT lets the master finish and stop its worker.
func (s *suite) stopGateway() {
	g := s.gateway
	if g == nil {
		return
	}
	s.gateway = nil
	_ = g.cmd.Process.Signal(syscall.SIGQUIT)
	<-g.done
}

// call sends one request through the gateway with key and returns the status (0 when no answer came).
func (s *suite) call(key string) int {
	req, err := http.NewRequest(http.MethodGet, s.gateway.url, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// waitStatus waits until the gateway answers a request with key with status want.
func (s *suite) waitStatus(what, key string, want int) {
	s.t.Helper()
	eventually.Succeeds(s.t, what, func() error {
		if got := s.call(key); got != want {
			return fmt.Errorf("status %d, want %d", got, want)
		}
		return nil
	})
}

// workload is a Deployment of the workload image that presents an APIKey's key to the gateway.
type workload struct {
	s    *suite
	name string
}

// Tally is the workload's GET /counts (test/e2e/workload).
type Tally struct {
	OK, Failed, Outcomes map[string]int
	LastKeyID            string
	LastFailure          string
}

func (t Tally) failed() int {
	n := 0
	for _, v := range t.Failed {
		n += v
	}
	return n
}

func (t Tally) ok() int {
	n := 0
	for _, v := range t.OK {
		n += v
	}
	return n
}

// deployWorkload runs the workload for the APIKey secret: fromEnv takes the key from an environment variable
// set from the Secret (secretKeyRef), otherwise it mounts the Secret and reads the key file per request.
// Its securityContext meets the restricted Pod Security level that the tenant namespace enforces.
func (s *suite) deployWorkload(name, secret string, fromEnv bool) *workload {
	s.t.Helper()
	labels := map[string]string{"app": name}
	c := corev1.Container{Name: "workload", Image: "keyward.local/workload:e2e", ImagePullPolicy: corev1.PullNever,
		Args: []string{"--url", s.gateway.url, "--interval", "100ms", "--listen", ":8080"},
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/counts", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 2},
	}
	var volumes []corev1.Volume
	if fromEnv {
		c.Args = append(c.Args, "--key-env", "API_KEY")
		c.Env = []corev1.EnvVar{
			{Name: "API_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "api-key"}}},
			{Name: "API_KEY_ID", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "key-id"}}},
		}
	} else {
		c.Args = append(c.Args, "--key-dir", "/var/run/keyward")
		c.VolumeMounts = []corev1.VolumeMount{{Name: "key", MountPath: "/var/run/keyward", ReadOnly: true}}
		volumes = []corev1.Volume{{Name: "key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}}
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{c}, Volumes: volumes, TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		}},
	}}
	if err := s.c.Create(context.Background(), d); err != nil {
		s.t.Fatal(err)
	}
	w := &workload{s: s, name: name}
	eventually.Succeeds(s.t, "workload "+name+" answered by the upstream", func() error {
		t, err := w.tallyErr()
		if err != nil {
			return err
		}
		if t.ok() == 0 {
			return fmt.Errorf("no request went through yet: %+v", t)
		}
		return nil
	})
	return w
}

// podIP is the workload's Pod address, reachable from the node's namespace through the Pod bridge.
func (w *workload) podIP() (string, error) {
	var list corev1.PodList
	if err := w.s.c.List(context.Background(), &list, client.InNamespace(tenant), client.MatchingLabels{"app": w.name}); err != nil {
		return "", err
	}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
			return p.Status.PodIP, nil
		}
	}
	return "", fmt.Errorf("no running Pod of %s", w.name)
}

func (w *workload) tallyErr() (Tally, error) {
	var t Tally
	ip, err := w.podIP()
	if err != nil {
		return t, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + net.JoinHostPort(ip, "8080") + "/counts")
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t)
	return t, err
}

func (w *workload) tally() Tally {
	w.s.t.Helper()
	t, err := w.tallyErr()
	if err != nil {
		w.s.t.Fatal(err)
	}
	return t
}

// waitPresenting waits until the workload presents keyID and the gateway accepted it, and returns when it
// first saw the workload presenting it: when the kubelet's update of the mounted Secret reached it.
func (w *workload) waitPresenting(keyID string) (Tally, time.Time) {
	w.s.t.Helper()
	var first time.Time
	t := eventually.Get(w.s.t, "workload "+w.name+" presenting "+keyID, func() (Tally, error) {
		t, err := w.tallyErr()
		if err != nil {
			return t, err
		}
		if t.LastKeyID == keyID && first.IsZero() {
			first = time.Now()
		}
		if t.LastKeyID != keyID || t.OK[keyID] == 0 {
			return t, fmt.Errorf("presenting %s: %+v", t.LastKeyID, t)
		}
		return t, nil
	})
	return t, first
}

func (w *workload) remove() {
	w.s.t.Helper()
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: w.name}}
	if err := w.s.c.Delete(context.Background(), d, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		w.s.t.Fatal(err)
	}
}

// receiver is an HTTPS webhook endpoint on the node's address, with its own certificate (given to the
// APIKey as caBundle); it checks every delivery's Standard Webhooks signature.
type receiver struct {
	url, caBundle, secret string
	mu                    sync.Mutex
	got                   []delivery
}

type delivery struct {
	Type string    `json:"type"`
	At   time.Time `json:"-"`
}

func newReceiver(t *testing.T, ip string) *receiver {
	id, err := selfsigned.New("keyward-e2e-receiver", []net.IP{net.ParseIP(ip)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e receiver secret, 32 bytes!!!")),
		caBundle: string(id.PEM)}
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), &tls.Config{Certificates: []tls.Certificate{id.Certificate}})
	if err != nil {
		t.Fatal(err)
	}
	r.url = "https://" + ln.Addr().String() + "/keyward"
	srv := &http.Server{ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil || wh.Verify(body, req.Header) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var d delivery
		_ = json.Unmarshal(body, &d)
		d.At = time.Now()
		r.mu.Lock()
		r.got = append(r.got, d)
		r.mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// first returns the first delivery of type typ, if any came.
func (r *receiver) first(typ string) (delivery, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.got {
		if d.Type == typ {
			return d, true
		}
	}
	return delivery{}, false
}

// deletePod deletes a Pod as `kubectl delete pod` does, with its grace period.
func (s *suite) deletePod(p corev1.Pod) {
	s.t.Helper()
	if err := s.c.Delete(context.Background(), &p, client.Preconditions{UID: ptr.To(p.UID)}); err != nil {
		s.t.Fatal(err)
	}
}

// gone reports whether the Pod with this UID no longer exists.
func (s *suite) gone(p corev1.Pod) bool {
	var cur corev1.Pod
	err := s.c.Get(context.Background(), types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, &cur)
	return err != nil || cur.UID != p.UID
}
