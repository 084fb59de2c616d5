package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/leakreport"
	"github.com/keyward-dev/keyward/internal/leakreport/reporttest"
	"github.com/keyward-dev/keyward/internal/testenv"
	"github.com/keyward-dev/keyward/pkg/verifier"
	"github.com/keyward-dev/keyward/pkg/verifier/serve"
)

// syncBuffer is a log sink safe for the receiver's goroutines and the test's.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(v)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// receiverUser is the leak receiver's identity in these tests: a service account bound to the shipped
// keyward-leak-receiver role.
const receiverUser = "system:serviceaccount:keyward-system:keyward-leak-receiver"

// leakReceiver is a leak receiver on loopback for cluster c, acting as receiverUser, with a fake publisher
// of its signing key.
type leakReceiver struct {
	url    string
	signer *reporttest.Signer
}

func startLeakReceiver(c *cluster) *leakReceiver {
	return startLeakReceiverLogging(c, logr.Discard())
}

func startLeakReceiverLogging(c *cluster, log logr.Logger) *leakReceiver {
	t := c.t
	ctx := context.Background()
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "leak-receiver", Namespace: c.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keyward-leak-receiver"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "keyward-system", Name: "keyward-leak-receiver"}}}); err != nil {
		t.Fatal(err)
	}
	signer := reporttest.NewSigner()
	doc := reporttest.KeysDocument(map[string]*reporttest.Signer{"test-key": signer})
	publisher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	t.Cleanup(publisher.Close)
	h := &leakreport.Handler{Keys: &leakreport.PublicKeys{URL: publisher.URL},
		Responder: &serve.LeakRecorder{Index: c.index, Reader: testenv.Impersonating(env.Config, receiverUser),
			Client:   testenv.Impersonating(env.Config, receiverUser),
			Reporter: serve.GitHubReporter, Now: time.Now, Log: log},
		Log: logr.Discard()}
	mux := http.NewServeMux()
	mux.Handle(serve.LeakReportsPath, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &leakReceiver{url: srv.URL + serve.LeakReportsPath, signer: signer}
}

// report posts GitHub's report of key (signed by the publisher's key, or by another when forged) and
// returns the answer's status and feedback labels.
func (r *leakReceiver) report(t testing.TB, key string, forged bool) (int, []string) {
	body := []byte(`[{"token":"` + key + `","type":"keyward_api_key","url":"https://github.com/octo/app/blob/main/.env","source":"content"}]`)
	signer := r.signer
	if forged {
		signer = reporttest.NewSigner()
	}
	req, err := http.NewRequest(http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(leakreport.HeaderKeyIdentifier, "test-key")
	req.Header.Set(leakreport.HeaderKeySignature, signer.Sign(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fb []leakreport.Feedback
	_ = json.NewDecoder(resp.Body).Decode(&fb)
	var labels []string
	for _, f := range fb {
		labels = append(labels, f.Label)
	}
	return resp.StatusCode, labels
}

// A signed report of a key stops it within moments and a new key replaces it; a forged report changes
// nothing; a replayed one finds the key already gone and changes nothing more. The receiver's identity
// reads no Secret and can change nothing in status but add a report.
func TestASignedLeakReportStopsTheKeyAndAForgedOrReplayedOneChangesNothing(t *testing.T) {
	testenv.Need(t)
	c := startCluster(t)
	var logs syncBuffer
	r := startLeakReceiverLogging(c, funcr.New(func(prefix, args string) { logs.WriteString(prefix + args + "\n") }, funcr.Options{}))
	if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: c.ns}}); err != nil {
		t.Fatal(err)
	}
	k1 := c.waitReadyRevision("orders", 1)
	c.waitCode(k1, nil, verifier.CodeValid, time.Now())

	if code, _ := r.report(t, k1, true); code != http.StatusUnauthorized {
		t.Errorf("a forged report answered %d", code)
	}
	if ak := c.get("orders"); len(ak.Status.Leaks) != 0 || ak.Status.Revision != 1 {
		t.Fatalf("a forged report changed the APIKey: leaks %+v, revision %d", ak.Status.Leaks, ak.Status.Revision)
	}

	start := time.Now()
	code, labels := r.report(t, k1, false)
	if code != http.StatusOK || !slices.Equal(labels, []string{leakreport.LabelTruePositive}) {
		t.Fatalf("the signed report answered %d %v", code, labels)
	}
	t.Logf("report → leaked key refused: %v", c.waitCode(k1, nil, verifier.CodeNotFound, start))
	k2 := c.waitReadyRevision("orders", 2)
	c.waitCode(k2, nil, verifier.CodeValid, start)
	ak := c.get("orders")
	if len(ak.Status.Leaks) != 1 || ak.Status.Leaks[0].Reporter != serve.GitHubReporter || ak.Status.Leaks[0].Source != "content" {
		t.Errorf("status.leaks %+v", ak.Status.Leaks)
	}

	// Replayed: the key is gone, so the report names no key of any APIKey and writes nothing.
	if code, labels := r.report(t, k1, false); code != http.StatusOK || !slices.Equal(labels, []string{leakreport.LabelFalsePositive}) {
		t.Errorf("the replayed report answered %d %v", code, labels)
	}
	if again := c.get("orders"); again.Status.Revision != 2 || len(again.Status.Leaks) != 1 {
		t.Errorf("the replay changed the APIKey: revision %d, leaks %+v", again.Status.Revision, again.Status.Leaks)
	}
	if got := logs.String(); !strings.Contains(got, keys.Sum(k1).ID()) || strings.Contains(got, k1) {
		t.Errorf("the replay is not recorded by its key ID, or the log holds the key:\n%s", got)
	}

	// A second report is added beside the first.
	if code, _ := r.report(t, k2, false); code != http.StatusOK {
		t.Fatalf("the report of the second key answered %d", code)
	}
	c.waitReadyRevision("orders", 3)
	if ak = c.get("orders"); len(ak.Status.Leaks) != 2 {
		t.Errorf("status.leaks after a second report: %+v; want both", ak.Status.Leaks)
	}

	// The receiver's identity: no Secret, no status field but the reports.
	receiver := testenv.Impersonating(env.Config, receiverUser)
	if err := receiver.Get(context.Background(), client.ObjectKey{Namespace: c.ns, Name: "orders"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the receiver reading the key's Secret: %v; want Forbidden", err)
	}
	forged := ak.DeepCopy()
	forged.Status.KeyHash = "sha256:" + strings.Repeat("0", 64)
	if err := receiver.Status().Patch(context.Background(), forged, client.MergeFrom(ak), client.DryRunAll); err == nil {
		t.Error("the receiver changed status.keyHash")
	}
}

// BenchmarkLeakReportToRefusal measures, on the local control plane, the time from a signed report of a key
// reaching the leak receiver to the verifier refusing that key (the manager rotating it), over 20 reports.
func BenchmarkLeakReportToRefusal(b *testing.B) {
	testenv.Need(b)
	for b.Loop() {
		c := startCluster(b)
		r := startLeakReceiver(c)
		if err := env.Client.Create(context.Background(), &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: "leaky", Namespace: c.ns}}); err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		for i := range 20 {
			key := c.waitReadyRevision("leaky", int64(i+1))
			c.waitCode(key, nil, verifier.CodeValid, time.Now())
			start := time.Now()
			if code, _ := r.report(b, key, false); code != http.StatusOK {
				b.Fatalf("report %d answered %d", i, code)
			}
			lat = append(lat, c.waitCode(key, nil, verifier.CodeNotFound, start))
		}
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		b.Logf("report → refusal over %d reports: p50 %v, max %v", len(lat), p(0.5), lat[len(lat)-1])
	}
}
