package controllers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keyrecord"
	"github.com/keyward-dev/keyward/internal/managerconfig"
	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// failoverElection has shorter lease timings than production's 15 s, so the test waits less; the protocol is
// the same. The renew deadline leaves a busy machine 8 s to renew, so a leader is only replaced when killed.
func failoverElection(id string) *electionOptions {
	return &electionOptions{id: id, leaseDuration: 10 * time.Second, renewDeadline: 8 * time.Second, retryPeriod: managerconfig.DefaultRetryPeriod}
}

// TestAKilledLeaderIsReplacedAndEveryAPIKeyIsAnnouncedOnce runs two managers with leader election against
// one API server, kills the leader while a burst of APIKeys (each with a webhook) is being reconciled, and
// proves that the standby takes over only once the dead leader's Lease has run out, and that afterwards
// every APIKey is Ready with one key that was minted once, one KeyCreated event, one key.created webhook
// event (by webhook-id) and one count in keyward_apikey_rotations_total.
func TestAKilledLeaderIsReplacedAndEveryAPIKeyIsAnnouncedOnce(t *testing.T) {
	testenv.Need(t)
	const n = 60
	h := newHarness(t)
	rcv := newReceiver(t)
	withWebhook := h.webhookSpec(rcv)
	election := failoverElection(h.ns)
	crash := &killSwitch{}
	initialBefore := testutil.ToFloat64(rotationsTotal.WithLabelValues(string(keywardv1alpha1.RotationInitial)))

	a := h.runManager(managerOptions{production: true, webhookCIDRs: []string{"127.0.0.0/8"}, election: election, crash: crash, name: "a"})
	t.Cleanup(a.stop)
	eventually.Receive(t, "manager a leads", a.elected)
	b := h.runManager(managerOptions{production: true, webhookCIDRs: []string{"127.0.0.0/8"}, election: election, name: "b"})
	t.Cleanup(b.stop)
	select {
	case <-b.elected:
		t.Fatal("manager b leads while manager a holds the Lease")
	default:
	}

	var creating sync.WaitGroup
	creating.Go(func() {
		for i := range n {
			ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%03d", i), Namespace: h.ns}}
			withWebhook(ak)
			if err := env.Client.Create(context.Background(), ak); err != nil {
				t.Errorf("creating APIKey %d: %v", i, err)
			}
		}
	})
	// Mid-burst: some APIKeys are Ready, others not yet.
	eventually.Succeeds(t, "a quarter of the APIKeys are Ready under manager a", func() error {
		if ready := h.readyCount(); ready < n/4 {
			return fmt.Errorf("%d Ready", ready)
		}
		return nil
	})
	crash.throw()
	lease := h.lease(election.id)
	lastRenewal := lease.Spec.RenewTime.Time
	a.stop()
	if h.readyCount() == n {
		t.Log("every APIKey was Ready before the kill took effect; the takeover is still proven")
	}

	eventually.Receive(t, "manager b leads after manager a died", b.elected)
	creating.Wait()
	taken := h.lease(election.id)
	if taken.Spec.AcquireTime == nil || ptrString(taken.Spec.HolderIdentity) == ptrString(lease.Spec.HolderIdentity) {
		t.Fatalf("the Lease was not taken over: holder %q, before %q", ptrString(taken.Spec.HolderIdentity), ptrString(lease.Spec.HolderIdentity))
	}
	// Safety: the standby waited at least the renew deadline after the dead leader's last renewal, and a
	// leader that cannot renew for that long stops leading, so the two never led at once. (client-go waits for
	// the whole lease on the monotonic clock; the Lease's times are wall-clock times, which a busy VM may
	// adjust, so the check uses the deadline, 2 s short of the lease.)
	if waited := taken.Spec.AcquireTime.Sub(lastRenewal); waited < election.renewDeadline {
		t.Errorf("manager b took the Lease %v after manager a last renewed it, within the %v renew deadline", waited, election.renewDeadline)
	} else {
		t.Logf("manager b took over %v after manager a last renewed the Lease (lease %v, renew deadline %v)",
			waited.Round(time.Millisecond), election.leaseDuration, election.renewDeadline)
	}

	eventually.Succeeds(t, "every APIKey is Ready", func() error {
		if ready := h.readyCount(); ready < n {
			return fmt.Errorf("%d of %d Ready", ready, n)
		}
		return nil
	})
	createdIDs := eventually.Get(t, "the receiver has a key.created for every APIKey", func() (map[string]map[string]bool, error) {
		ids := map[string]map[string]bool{}
		for _, d := range rcv.deliveries() {
			if d.status < 300 && d.parsed.Type == string(keywardv1alpha1.WebhookEventKeyCreated) {
				if ids[d.parsed.Data.Name] == nil {
					ids[d.parsed.Data.Name] = map[string]bool{}
				}
				ids[d.parsed.Data.Name][d.header.Get(notify.HeaderID)] = true
			}
		}
		if len(ids) < n {
			return nil, fmt.Errorf("for %d APIKeys", len(ids))
		}
		return ids, nil
	})

	var list keywardv1alpha1.APIKeyList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(h.ns)); err != nil {
		t.Fatal(err)
	}
	created := map[string]int{}
	for _, e := range h.events()[keywardv1alpha1.EventKeyCreated] {
		created[e.Regarding.Name]++
	}
	written := h.writes.keysWritten()
	for _, ak := range list.Items {
		if ak.Status.Revision != 1 {
			t.Errorf("APIKey %s is at revision %d: a key was minted again", ak.Name, ak.Status.Revision)
		}
		if key := h.key(SecretNameOf(&ak)); !written[key] || keyrecord.ReadSecret(h.secret(SecretNameOf(&ak))).Record.Hash != ak.Status.KeyHash {
			t.Errorf("APIKey %s: its Secret does not hold the key status shows", ak.Name)
		}
		if created[ak.Name] != 1 {
			t.Errorf("APIKey %s has %d KeyCreated events, want 1", ak.Name, created[ak.Name])
		}
		if ids := createdIDs[ak.Name]; len(ids) != 1 {
			t.Errorf("APIKey %s: key.created was sent under %d webhook-ids, want 1", ak.Name, len(ids))
		}
	}
	// Every key either manager sent to the API server is one of the n: no APIKey had a second key minted
	// for it, not even one that was lost.
	if len(written) != n {
		t.Errorf("the managers wrote %d distinct keys for %d APIKeys", len(written), n)
	}
	if got := testutil.ToFloat64(rotationsTotal.WithLabelValues(string(keywardv1alpha1.RotationInitial))) - initialBefore; got != n {
		t.Errorf("keyward_apikey_rotations_total{reason=Initial} rose by %v for %d first keys", got, n)
	}
}

// TestAStoppedLeaderHandsOverWithoutWaitingOutItsLease stops the leader gracefully (a rolling update) and
// proves that it released its Lease, so that the standby could take it without waiting for it to run out.
func TestAStoppedLeaderHandsOverWithoutWaitingOutItsLease(t *testing.T) {
	testenv.Need(t)
	h := newHarness(t)
	// A lease far longer than the test may wait: only a release lets manager b lead.
	election := &electionOptions{id: h.ns, leaseDuration: time.Hour, renewDeadline: 50 * time.Minute, retryPeriod: 500 * time.Millisecond}
	a := h.runManager(managerOptions{production: true, election: election, name: "a"})
	t.Cleanup(a.stop)
	eventually.Receive(t, "manager a leads", a.elected)
	b := h.runManager(managerOptions{production: true, election: election, name: "b"})
	t.Cleanup(b.stop)
	held := h.lease(election.id)

	a.stop()
	eventually.Receive(t, "manager b leads after manager a stopped", b.elected)
	taken := h.lease(election.id)
	if ptrString(taken.Spec.HolderIdentity) == ptrString(held.Spec.HolderIdentity) {
		t.Fatalf("the Lease is still held by %q", ptrString(taken.Spec.HolderIdentity))
	}
	h.create("after-handover", "")
	h.waitReady("after-handover")
}

// lease reads the leader election Lease of this test.
func (h *harness) lease(id string) *coordinationv1.Lease {
	h.t.Helper()
	l := &coordinationv1.Lease{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: "keyward-system", Name: id}, l); err != nil {
		h.t.Fatalf("reading Lease %s: %v", id, err)
	}
	return l
}

// readyCount is how many of the test's APIKeys are Ready, as the API server has them.
func (h *harness) readyCount() int {
	h.t.Helper()
	var list keywardv1alpha1.APIKeyList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(h.ns)); err != nil {
		h.t.Fatal(err)
	}
	ready := 0
	for _, ak := range list.Items {
		if meta.IsStatusConditionTrue(ak.Status.Conditions, keywardv1alpha1.ConditionReady) {
			ready++
		}
	}
	return ready
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// BenchmarkLeaderTakeover runs two managers with the default leader election timings (15 s lease, 10 s renew
// deadline, 500 ms retry period) and reports how long the standby took to lead after the leader died
// without releasing the Lease (counted from its last renewal, and from the kill), and after the leader
// stopped gracefully (counted from the stop). Run it once: go test ./controllers -run '^$' -bench LeaderTakeover -benchtime 1x
func BenchmarkLeaderTakeover(b *testing.B) {
	testenv.Need(b)
	for b.Loop() {
		h := newHarness(b)
		h.writes.countOnly.Store(true)
		election := &electionOptions{id: h.ns, leaseDuration: managerconfig.DefaultLeaseDuration, renewDeadline: managerconfig.DefaultRenewDeadline, retryPeriod: managerconfig.DefaultRetryPeriod}
		crash := &killSwitch{}
		a := h.runManager(managerOptions{production: true, election: election, crash: crash, name: "a"})
		<-a.elected
		standby := h.runManager(managerOptions{production: true, election: election, name: "b"})
		crash.throw()
		killed := time.Now()
		lastRenewal := h.lease(election.id).Spec.RenewTime.Time
		<-standby.elected
		afterKill := time.Since(killed)
		fromRenewal := h.lease(election.id).Spec.AcquireTime.Sub(lastRenewal)
		a.stop()

		next := h.runManager(managerOptions{production: true, election: election, name: "c"})
		stopped := time.Now()
		standby.stop()
		<-next.elected
		afterStop := time.Since(stopped)
		next.stop()

		b.ReportMetric(fromRenewal.Seconds(), "s-takeover-after-last-renewal")
		b.ReportMetric(afterKill.Seconds(), "s-takeover-after-kill")
		b.ReportMetric(afterStop.Seconds(), "s-handover-after-stop")
		b.Logf("killed leader: replaced %v after its last renewal (%v after the kill; bound %v); stopped leader: replaced %v after the stop",
			fromRenewal.Round(time.Millisecond), afterKill.Round(time.Millisecond), managerconfig.DefaultLeaseDuration+managerconfig.DefaultRenewDeadline, afterStop.Round(time.Millisecond))
	}
}
