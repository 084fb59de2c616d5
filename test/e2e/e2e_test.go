// Package e2e runs Keyward as its users do, on a real node (hack/node, through make e2e): the chart installed
// with the helm CLI into keyward-system under the restricted Pod Security level, the manager and the verifier
// as Pods from Keyward's own images, workloads that mount the generated Secret or take the key from an
// environment variable, and nginx from Debian in front of an upstream, asking the verifier's Service. Outside
// make e2e (no node), every test here is skipped.
package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
)

func TestMain(m *testing.M) {
	if os.Getenv("KEYWARD_NODE_DIR") == "" {
		fmt.Println("e2e: skipped: these tests run on a real node, through make e2e")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestKeywardAsItsUsersRunIt is one story, in order, on one node: each step builds on the cluster the
// previous ones left, as a platform team's cluster does.
func TestKeywardAsItsUsersRunIt(t *testing.T) {
	s := newSuite(t)
	steps := []struct {
		name string
		run  func(*suite)
	}{
		{"an earlier release upgrades to this one without a refused request or a re-minted key", upgrade},
		{"both Deployments run as shipped under the restricted Pod Security level", runsAsShipped},
		{"a scheduled rotation fails no request of a workload that mounts the Secret", scheduledRotation},
		{"a manual rotation with the default grace fails no request; with 0s the old key stops at once; a disabled APIKey is refused", manualRotation},
		{"a key taken from an environment variable is reported in use before its grace ends", keyFromEnv},
		{"Prometheus scrapes the manager and the verifier with a token bound to keyward-metrics-reader", metrics},
		{"the standby manager leads when the leader's Pod is deleted, and keys keep being minted", managerFailover},
		{"a verifier Pod deleted under load fails no gateway request", verifierFailover},
		{"uninstall keeps the CRD and every Secret; a reinstall re-mints nothing", uninstallAndReinstall},
	}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) {
			s.t = t
			defer func() { s.t = s.root }()
			step.run(s)
		})
		if !ok {
			t.Fatalf("the steps after %q build on it", step.name)
		}
	}
}

// namespace creates a namespace that enforces the restricted Pod Security level.
func (s *suite) namespace(name string) {
	s.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
	if err := s.c.Create(context.Background(), ns); err != nil {
		s.t.Fatal(err)
	}
	eventually.Succeeds(s.t, "the default ServiceAccount of "+name, func() error {
		return s.c.Get(context.Background(), client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
	})
}

func ordersSpec() keywardv1alpha1.APIKeySpec {
	return keywardv1alpha1.APIKeySpec{Scopes: []keywardv1alpha1.Scope{routeScope}}
}

// judged waits until the running manager has reconciled the APIKey's current generation, after an edit
// that never mints (the description), so a later look at its revision means something.
func (s *suite) judged(name, why string) *keywardv1alpha1.APIKey {
	s.t.Helper()
	s.patchKey(name, func(ak *keywardv1alpha1.APIKey) { ak.Spec.Description = why })
	gen := s.get(name).Generation
	return s.waitKey(name, fmt.Sprintf("judged at generation %d", gen), func(ak *keywardv1alpha1.APIKey) bool {
		return ak.Status.ObservedGeneration >= gen
	})
}

// upgrade installs the chart and images of an earlier commit of main, creates a key and a workload using it,
// then upgrades to the working tree's chart and images: no request is refused and no key is re-minted.
func upgrade(s *suite) {
	if s.images.BaseChart == "" {
		s.t.Fatal("images.json names no earlier release (make e2e passes E2E_BASE)")
	}
	s.namespace(systemNamespace)
	s.namespace(tenant)
	s.t.Logf("installing the release of %s", s.images.BaseCommit)
	s.helmInstall("install", s.images.BaseChart, s.images.BaseManager, s.images.BaseVerifier)
	s.startGateway()

	before := s.apiKey("orders", ordersSpec())
	key, _ := s.secretKey("orders")
	s.waitStatus("the gateway accepting the orders key", key, http.StatusOK)
	w := s.deployWorkload("mounted", "orders", false)

	s.helmInstall("upgrade", s.chartDir, s.images.Manager, s.images.Verifier)
	after := s.judged("orders", "judged by the upgraded manager")
	if after.Status.Revision != before.Status.Revision || after.Status.KeyID != before.Status.KeyID {
		s.t.Errorf("the upgrade re-minted: revision %d (%s) became %d (%s)", before.Status.Revision, before.Status.KeyID,
			after.Status.Revision, after.Status.KeyID)
	}
	s.waitStatus("the upgraded verifier accepting the orders key", key, http.StatusOK)
	// One more request of the workload's, answered by the upgraded verifier, before counting.
	got := w.waitAtLeast(w.tally().ok() + 1)
	s.t.Logf("workload during the upgrade: %d requests accepted, %d failed %v", got.ok(), got.failed(), got.Outcomes)
	if refused := got.Outcomes["401"] + got.Outcomes["403"]; refused > 0 {
		s.t.Errorf("the gateway refused the workload's key %d times during the upgrade: %+v", refused, got)
	}
	if got.failed() > 0 {
		// The earlier release's verifier stopped listening at SIGTERM (no lame-duck period): a request sent to
		// it in the instant before kube-proxy dropped its address failed.
		s.t.Logf("requests that failed during the upgrade, while the earlier release's verifier Pods stopped: %v (last: %s)", got.Outcomes, got.LastFailure)
	}
}

// waitAtLeast waits until the workload has had at least n requests accepted.
func (w *workload) waitAtLeast(n int) Tally {
	w.s.t.Helper()
	return eventually.Get(w.s.t, fmt.Sprintf("workload %s with %d requests accepted", w.name, n), func() (Tally, error) {
		t, err := w.tallyErr()
		if err == nil && t.ok() < n {
			err = fmt.Errorf("%d accepted", t.ok())
		}
		return t, err
	})
}

// runsAsShipped: both Deployments are Available in a namespace that enforces the restricted level (so their
// securityContext passed admission), with the shipped probes and resources, and the manager's two replicas
// elect one leader.
func runsAsShipped(s *suite) {
	var ns corev1.Namespace
	if err := s.c.Get(context.Background(), client.ObjectKey{Name: systemNamespace}, &ns); err != nil {
		s.t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		s.t.Fatalf("%s does not enforce restricted: %v", systemNamespace, ns.Labels)
	}
	for _, d := range []string{"keyward-manager", "keyward-verifier"} {
		pods := s.pods(d)
		if len(pods) != 2 {
			s.t.Errorf("%s: %d Pods running, want 2", d, len(pods))
		}
		for _, p := range pods {
			c := p.Spec.Containers[0]
			if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				s.t.Errorf("%s: probes or resources missing: %+v", p.Name, c)
			}
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				s.t.Errorf("%s: not a read-only root filesystem: %+v", p.Name, c.SecurityContext)
			}
			if !podReady(p) {
				s.t.Errorf("%s is not Ready", p.Name)
			}
		}
	}
	holder := s.leader()
	if !slices.ContainsFunc(s.pods("keyward-manager"), func(p corev1.Pod) bool { return strings.HasPrefix(holder, p.Name) }) {
		s.t.Errorf("the leader %q is none of the manager's Pods", holder)
	}
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// leader is the manager's leader election Lease holder (<pod name>_<uid>).
func (s *suite) leader() string {
	s.t.Helper()
	return eventually.Get(s.t, "a manager leading", func() (string, error) {
		var l coordinationv1.Lease
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: "keyward-manager.keyward.dev"}, &l); err != nil {
			return "", err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return "", fmt.Errorf("no holder")
		}
		return *l.Spec.HolderIdentity, nil
	})
}

// scheduledRotation: an APIKey whose renewal comes a minute after each mint (validity 1h, renewBefore 59m)
// and a workload that mounts its Secret. The renewal mints a new key; the previous one stays valid until its
// own expiry, so the workload's requests all succeed while the kubelet brings it the new Secret.
func scheduledRotation(s *suite) {
	spec := ordersSpec()
	spec.Validity, spec.Rotation = "1h", &keywardv1alpha1.RotationSpec{RenewBefore: "59m"}
	first := s.apiKey("scheduled", spec)
	key, _ := s.secretKey("scheduled")
	s.waitStatus("the gateway accepting the scheduled key", key, http.StatusOK)
	w := s.deployWorkload("scheduled", "scheduled", false)
	w.waitPresenting(first.Status.KeyID)

	renewed := s.waitKey("scheduled", "renewed", func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.Revision > first.Status.Revision })
	// One renewal is the proof; further ones would only lengthen the test.
	s.patchKey("scheduled", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Rotation.RenewBefore = "30m" })
	if renewed.Status.LastRotationReason == "" {
		s.t.Errorf("no rotation reason: %+v", renewed.Status)
	}
	latest := s.judged("scheduled", "renewal slowed down for the test")
	got, seen := w.waitPresenting(latest.Status.KeyID)
	s.t.Logf("scheduled rotation (%s): the workload presented the new key %.1fs after it was issued; %d requests accepted, %d failed",
		renewed.Status.LastRotationReason, seen.Sub(latest.Status.IssuedAt.Time).Seconds(), got.ok(), got.failed())
	if got.failed() > 0 {
		s.t.Errorf("a scheduled rotation failed %d of the workload's requests: %+v", got.failed(), got)
	}
}

// manualRotation: `kubectl keyward rotate` with the default grace (1h) fails no request of a workload that
// mounts the Secret; `--grace 0s` stops the old key at the gateway as soon as the verifier sees the rotation,
// long before the kubelet brings the workload the new key; a disabled APIKey is refused, and enabling it
// restores the same key.
func manualRotation(s *suite) {
	w := &workload{s: s, name: "mounted"}
	before := s.get("orders")
	start := w.tally()
	s.run("kubectl", "keyward", "rotate", "orders", "-n", tenant)
	rotated := s.waitKey("orders", "rotated", func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.Revision > before.Status.Revision })
	got, seen := w.waitPresenting(rotated.Status.KeyID)
	s.t.Logf("manual rotation: the workload presented the new key %.1fs after it was issued; %d requests accepted, %d failed since the rotation",
		seen.Sub(rotated.Status.IssuedAt.Time).Seconds(), got.ok()-start.ok(), got.failed()-start.failed())
	if n := got.failed() - start.failed(); n > 0 {
		s.t.Errorf("a manual rotation with the default grace failed %d of the workload's requests: %+v", n, got)
	}

	old, oldID := s.secretKey("orders")
	start = w.tally()
	s.run("kubectl", "keyward", "rotate", "orders", "-n", tenant, "--grace", "0s")
	// At once: the old key is refused while the kubelet has not yet brought the workload the new Secret.
	s.waitStatus("the gateway refusing the key replaced with --grace 0s", old, http.StatusUnauthorized)
	stillOld := w.tally().LastKeyID == oldID
	revoked := s.waitKey("orders", "rotated with --grace 0s", func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.KeyID != oldID })
	got, _ = w.waitPresenting(revoked.Status.KeyID)
	s.t.Logf("rotate --grace 0s: the old key was refused while the workload still presented it: %v; the workload's requests failed %d times until the kubelet brought the new key",
		stillOld, got.failed()-start.failed())

	key, _ := s.secretKey("orders")
	s.patchKey("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = true })
	s.waitStatus("the gateway refusing a disabled APIKey's key", key, http.StatusUnauthorized)
	s.patchKey("orders", func(ak *keywardv1alpha1.APIKey) { ak.Spec.Disabled = false })
	s.waitStatus("the gateway accepting the same key once enabled", key, http.StatusOK)
	w.remove()
}

// keyFromEnv: a workload that takes the key from an environment variable keeps presenting the old key after
// a rotation (the kubelet never changes a running container's environment). With a 5-minute grace, Keyward
// says so before the old key stops: status.previousKeysInUse and the PreviousKeyInUse condition, the
// Warning event, and a signed key.previous_in_use webhook.
func keyFromEnv(s *suite) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "receiver-signing"},
		StringData: map[string]string{"secret": s.receiver.secret}}
	if err := s.c.Create(context.Background(), secret); err != nil {
		s.t.Fatal(err)
	}
	spec := ordersSpec()
	spec.Rotation = &keywardv1alpha1.RotationSpec{GracePeriod: "5m"}
	spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: s.receiver.url, CABundle: s.receiver.caBundle,
		SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "receiver-signing", Key: "secret"}}
	first := s.apiKey("from-env", spec)
	key, _ := s.secretKey("from-env")
	s.waitStatus("the gateway accepting the from-env key", key, http.StatusOK)
	w := s.deployWorkload("from-env", "from-env", true)

	s.run("kubectl", "keyward", "rotate", "from-env", "-n", tenant)
	rotated := s.waitKey("from-env", "rotated", func(ak *keywardv1alpha1.APIKey) bool { return ak.Status.Revision > first.Status.Revision })
	validUntil := rotated.Status.PreviousKeys[0].ValidUntil.Time
	inUse := s.waitKey("from-env", "reporting the previous key in use", func(ak *keywardv1alpha1.APIKey) bool {
		return slices.Contains(ak.Status.PreviousKeysInUse, first.Status.KeyID) &&
			meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionPreviousKeyInUse)
	})
	reported := time.Now()
	if !reported.Before(validUntil) {
		s.t.Errorf("PreviousKeyInUse came at %v, after the previous key stopped at %v", reported, validUntil)
	}
	event := eventually.Get(s.t, "the PreviousKeyInUse event", func() (eventsv1.Event, error) {
		var list eventsv1.EventList
		if err := s.c.List(context.Background(), &list, client.InNamespace(tenant)); err != nil {
			return eventsv1.Event{}, err
		}
		for _, e := range list.Items {
			if e.Reason == "PreviousKeyInUse" && e.Regarding.Name == "from-env" {
				return e, nil
			}
		}
		return eventsv1.Event{}, eventually.ErrNotYet
	})
	hook := eventually.Get(s.t, "the key.previous_in_use webhook", func() (delivery, error) {
		d, ok := s.receiver.first(string(keywardv1alpha1.WebhookEventKeyPreviousInUse))
		if !ok {
			return d, eventually.ErrNotYet
		}
		return d, nil
	})
	if !hook.At.Before(validUntil) {
		s.t.Errorf("key.previous_in_use arrived at %v, after the previous key stopped at %v", hook.At, validUntil)
	}
	t := w.tally()
	if t.LastKeyID != first.Status.KeyID {
		s.t.Errorf("the workload's environment changed: it presents %s, not the first key %s", t.LastKeyID, first.Status.KeyID)
	}
	s.t.Logf("key from an environment variable: reported in use %.0fs after the rotation, %.0fs before the old key stops (%s); event %q; webhook %.0fs before",
		reported.Sub(rotated.Status.IssuedAt.Time).Seconds(), validUntil.Sub(reported).Seconds(), strings.Join(inUse.Status.PreviousKeysInUse, ","),
		event.Note, validUntil.Sub(hook.At).Seconds())
	w.remove()
}

// metrics: a ServiceAccount bound to keyward-metrics-reader scrapes the manager's and the verifier's HTTPS
// metrics with its token, as Prometheus does; without a token both refuse.
func metrics(s *suite) {
	ns := "monitoring"
	if err := s.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		s.t.Fatal(err)
	}
	if err := s.c.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prometheus"}}); err != nil {
		s.t.Fatal(err)
	}
	if err := s.c.Create(context.Background(), &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-keyward-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}}}); err != nil {
		s.t.Fatal(err)
	}
	token := strings.TrimSpace(s.run("kubectl", "create", "token", "prometheus", "-n", ns))
	// The metrics endpoints serve a self-signed certificate unless one is given; Prometheus is configured
	// with insecure_skip_verify for them, as the chart's ServiceMonitor is.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(ip, token string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(ip, "8443")+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, string(b), err
	}
	for deployment, series := range map[string]string{"keyward-manager": "keyward_apikey_ready_status", "keyward-verifier": "keyward_verifier_"} {
		for _, p := range s.pods(deployment) {
			eventually.Succeeds(s.t, "scraping "+p.Name, func() error {
				code, body, err := scrape(p.Status.PodIP, token)
				if err != nil {
					return err
				}
				if code != http.StatusOK || !strings.Contains(body, series) {
					return fmt.Errorf("status %d, %d bytes without %s", code, len(body), series)
				}
				return nil
			})
			if code, _, err := scrape(p.Status.PodIP, ""); err != nil || (code != http.StatusUnauthorized && code != http.StatusForbidden) {
				s.t.Errorf("%s answered a scrape without a token: %d %v", p.Name, code, err)
			}
		}
	}
}

// managerFailover deletes the leading manager's Pod: the standby takes the lease, and a new APIKey is minted.
func managerFailover(s *suite) {
	holder := s.leader()
	var leader corev1.Pod
	for _, p := range s.pods("keyward-manager") {
		if strings.HasPrefix(holder, p.Name) {
			leader = p
		}
	}
	if leader.Name == "" {
		s.t.Fatalf("no Pod holds the lease %q", holder)
	}
	s.deletePod(leader)
	next := eventually.Get(s.t, "another manager leading", func() (string, error) {
		h := s.leader()
		if strings.HasPrefix(h, leader.Name) {
			return "", fmt.Errorf("still %s", h)
		}
		return h, nil
	})
	s.t.Logf("the lease moved from %s to %s", holder, next)
	ak := s.apiKey("after-failover", ordersSpec())
	key, _ := s.secretKey("after-failover")
	s.waitStatus("the gateway accepting a key minted after the failover", key, http.StatusOK)
	if !meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
		s.waitKey("after-failover", "Ready", func(ak *keywardv1alpha1.APIKey) bool {
			return meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady)
		})
	}
	s.waitAvailable(s.images.Manager, s.images.Verifier)
}

// verifierFailover sends requests through the gateway without pause while one verifier Pod is deleted and
// replaced: the PodDisruptionBudget keeps one, and the lame-duck period lets the deleted one answer until
// kube-proxy no longer sends it anything. No request fails.
func verifierFailover(s *suite) {
	var pdb policyv1.PodDisruptionBudget
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: "keyward-verifier"}, &pdb); err != nil {
		s.t.Fatalf("the verifier's PodDisruptionBudget: %v", err)
	}
	key, _ := s.secretKey("scheduled")
	var sent, failed atomic.Int64
	var lastFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if code := s.call(key); code != http.StatusOK {
					failed.Add(1)
					lastFailure.Store(code)
				}
			}
		}()
	}
	victim := s.pods("keyward-verifier")[0]
	before := sent.Load()
	s.deletePod(victim)
	eventually.Succeeds(s.t, "the deleted verifier Pod gone and a replacement Ready", func() error {
		if !s.gone(victim) {
			return fmt.Errorf("%s still exists", victim.Name)
		}
		if n := len(s.pods("keyward-verifier")); n != 2 {
			return fmt.Errorf("%d verifier Pods", n)
		}
		return nil
	})
	s.waitAvailable(s.images.Manager, s.images.Verifier)
	// Requests answered by the replacement too, before stopping.
	after := sent.Load()
	eventually.Succeeds(s.t, "requests after the replacement", func() error {
		if sent.Load() < after+100 {
			return eventually.ErrNotYet
		}
		return nil
	})
	close(stop)
	wg.Wait()
	s.t.Logf("verifier failover: %d requests through the gateway (%d from the deletion to the replacement), %d failed",
		sent.Load(), after-before, failed.Load())
	if failed.Load() > 0 {
		s.t.Errorf("%d of %d requests failed while a verifier Pod was replaced (last status %v)", failed.Load(), sent.Load(), lastFailure.Load())
	}
}

// uninstallAndReinstall: helm uninstall keeps the CRD (crds.keep), every APIKey and every Secret; a
// reinstall adopts them, re-mints nothing, and every key verifies again.
func uninstallAndReinstall(s *suite) {
	var list keywardv1alpha1.APIKeyList
	if err := s.c.List(context.Background(), &list, client.InNamespace(tenant)); err != nil {
		s.t.Fatal(err)
	}
	revisions := map[string]int64{}
	keys := map[string]string{}
	for _, ak := range list.Items {
		revisions[ak.Name] = ak.Status.Revision
		keys[ak.Name], _ = s.secretKey(ak.Name)
	}
	s.run("helm", "uninstall", release, "--namespace", systemNamespace, "--wait", "--timeout", "15m")
	var crd apiextensionsv1.CustomResourceDefinition
	if err := s.c.Get(context.Background(), client.ObjectKey{Name: "apikeys.keyward.dev"}, &crd); err != nil {
		s.t.Fatalf("the CRD after uninstall: %v", err)
	}
	for name := range revisions {
		s.get(name)
		s.secretKey(name)
	}
	s.helmInstall("install", s.chartDir, s.images.Manager, s.images.Verifier)
	s.startGateway() // the verifier's Service has a new address
	for name, rev := range revisions {
		ak := s.judged(name, "judged after the reinstall")
		if ak.Status.Revision != rev {
			s.t.Errorf("%s was re-minted by the reinstall: revision %d became %d", name, rev, ak.Status.Revision)
		}
		s.waitStatus("the gateway accepting "+name+"'s key after the reinstall", keys[name], http.StatusOK)
	}
}
