package v1alpha1_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// A reporter can stop a key of this APIKey and do nothing else: only holders of the report-leak verb may
// write status.leaks, only reports of the APIKey's own keys are added, and a report of a key still in place
// cannot be taken back. The verifier's identity, which writes status, and the manager's may not report.
func TestOnlyHoldersOfReportLeakMayReportAndOnlyKeysTheAPIKeyHas(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	const editor, viewer = "leak-editor", "leak-viewer"
	bind(t, ns, editor, "keyward-edit")
	bind(t, ns, viewer, "keyward-view")
	if err := env.Client.Create(ctx, apiKey(t, ns, "orders", "scopes: []")); err != nil {
		t.Fatal(err)
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, ak); err != nil {
		t.Fatal(err)
	}
	// As the manager writes it: a current key and a previous one.
	minted := ak.DeepCopy()
	minted.Status.KeyHash, minted.Status.KeyID = "sha256:"+strings.Repeat("ab", 32), "kid_current"
	minted.Status.PreviousKeys = []keywardv1alpha1.PreviousKey{{KeyID: "kid_previous", KeyHash: "sha256:" + strings.Repeat("cd", 32),
		ValidUntil: metav1.Now()}}
	if err := as(t, testenv.ManagerUser).Status().Patch(ctx, minted, client.MergeFrom(ak)); err != nil {
		t.Fatal(err)
	}
	report := func(user string, dryRun bool, leaks ...string) error {
		cur := &keywardv1alpha1.APIKey{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, cur); err != nil {
			t.Fatal(err)
		}
		// The reports of leaks, in order: one already there is kept as it is, a new one is added; the rest go.
		changed := cur.DeepCopy()
		changed.Status.Leaks = nil
		for _, id := range leaks {
			if i := slices.IndexFunc(cur.Status.Leaks, func(l keywardv1alpha1.LeakReport) bool { return l.KeyID == id }); i >= 0 {
				changed.Status.Leaks = append(changed.Status.Leaks, cur.Status.Leaks[i])
				continue
			}
			changed.Status.Leaks = append(changed.Status.Leaks, keywardv1alpha1.LeakReport{KeyID: id, ReportedAt: metav1.Now(),
				URL: "https://github.com/o/r/blob/x/.env", Source: "content", Reporter: user})
		}
		var opts []client.SubResourcePatchOption
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		return as(t, user).Status().Patch(ctx, changed, client.MergeFrom(cur), opts...)
	}
	if err := eventually.Poll(func() error { return report(editor, true, "kid_current") }); err != nil {
		t.Fatalf("an editor reporting the current key: %v", err)
	}
	refusedWith(t, "an editor reporting a key of another APIKey", report(editor, true, "kid_elsewhere"), "kid_elsewhere is not one")
	refusedWith(t, "a viewer reporting", report(viewer, true, "kid_current"), "forbidden")
	refusedWith(t, "the verifier's identity reporting", report(testenv.VerifierUser, true, "kid_current"), "needs the report-leak verb")
	refusedWith(t, "the manager reporting", report(testenv.ManagerUser, true, "kid_current"), "never writes status.leaks")
	if err := report(editor, false, "kid_previous"); err != nil {
		t.Fatalf("an editor reporting the previous key: %v", err)
	}
	refusedWith(t, "taking back a report of a key still in place", report(editor, true), "only once its key is gone")
	if err := report(editor, true, "kid_previous", "kid_current"); err != nil {
		t.Errorf("adding a second report: %v", err)
	}
}
