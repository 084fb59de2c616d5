package serve

import (
	"context"
	"slices"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/leakreport"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// LeakReportsPath is where the leak receiver takes GitHub's secret scanning reports.
const LeakReportsPath = "/v1/leaks/github"

// GitHubReporter is the reporter status.leaks names for GitHub's reports.
const GitHubReporter = "github-secret-scanning"

// MaxLeaks is how many reports status.leaks holds (the CRD's bound).
const MaxLeaks = 16

// LeakRecorder is the leak receiver's leakreport.Responder: it finds each reported token's APIKeys in the
// index, by hash, and adds a report of that key to their status.leaks. That is all it can write: the
// admission policy keyward-leak-reports lets its identity add reports of an APIKey's own keys and nothing
// else, and the manager decides what a report does (spec.leakResponse). A token is never logged or kept;
// a report of a key already reported adds nothing, so a replayed report changes nothing.
type LeakRecorder struct {
	Index *verifier.Index
	// Reader reads APIKeys from the API server (not from the verifier's cache, which keeps no reports), and
	// Client writes apikeys/status, both as the leak receiver's identity.
	Reader   client.Reader
	Client   client.Client
	Reporter string
	Now      func() time.Time
	Log      logr.Logger
}

// Respond implements leakreport.Responder.
func (r *LeakRecorder) Respond(ctx context.Context, matches []leakreport.Match) []bool {
	out := make([]bool, len(matches))
	for i, m := range matches {
		owners := r.Index.Owners(m.Token)
		out[i] = len(owners) > 0
		if len(owners) == 0 {
			if _, err := keys.Parse(m.Token); err == nil {
				// A Keyward key no APIKey has in force (stopped already, or never ours): nothing changes, and
				// the report is recorded here by its public key ID, never by the token.
				r.Log.Info("A leak report named a Keyward key that no APIKey has in force; nothing changed",
					"keyID", keys.Sum(m.Token).ID(), "url", m.URL, "source", m.Source)
			}
			continue
		}
		for _, o := range owners {
			if err := r.record(ctx, o, m); err != nil {
				r.Log.Error(err, "Recording a leak report failed; GitHub sends reports again", "namespace", o.Namespace, "name", o.Name, "keyID", o.KeyID)
			}
		}
	}
	return out
}

// record adds the report of o's key to its APIKey's status.leaks, read from the API server and written with
// optimistic locking (retried on a conflict).
func (r *LeakRecorder) record(ctx context.Context, o verifier.Owner, m leakreport.Match) error {
	for range 5 {
		ak := &keywardv1alpha1.APIKey{}
		if err := r.Reader.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Name}, ak); err != nil {
			return client.IgnoreNotFound(err)
		}
		if slices.ContainsFunc(ak.Status.Leaks, func(l keywardv1alpha1.LeakReport) bool { return l.KeyID == o.KeyID }) {
			return nil
		}
		base := ak.DeepCopy()
		if len(ak.Status.Leaks) == MaxLeaks {
			// Full: make room by dropping the oldest report of a key that is gone (the policy allows only that).
			i := slices.IndexFunc(ak.Status.Leaks, func(l keywardv1alpha1.LeakReport) bool { return !ak.Status.AcceptsKeyID(l.KeyID) })
			if i < 0 {
				return nil // every report names a live key: the manager has them all to act on already
			}
			ak.Status.Leaks = slices.Delete(ak.Status.Leaks, i, i+1)
		}
		ak.Status.Leaks = append(ak.Status.Leaks, keywardv1alpha1.LeakReport{KeyID: o.KeyID,
			ReportedAt: metav1.NewTime(r.Now().UTC().Truncate(time.Second)), URL: m.URL, Source: m.Source, Reporter: r.Reporter})
		err := r.Client.Status().Patch(ctx, ak, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}
