package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/approval"
	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// decision is what decide writes: an approval, or a denial.
type decision int

const (
	approve decision = iota
	deny
)

// decide writes, as user, a decision about the APIKey ns/name into status.approval, as kubectl keyward
// approve and deny do; a dry run when dryRun. edit changes the decision before it is sent, to forge it.
func decide(ctx context.Context, t *testing.T, user, ns, name string, dryRun bool, kind decision, edit func(*keywardv1alpha1.ApprovalDecision)) error {
	t.Helper()
	ak := &keywardv1alpha1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ak); err != nil {
		t.Fatal(err)
	}
	d := &keywardv1alpha1.ApprovalDecision{By: user, At: metav1.Now(), Covers: approval.Of(ak.Spec)}
	if edit != nil {
		edit(d)
	}
	before := ak.DeepCopy()
	if ak.Status.Approval == nil {
		ak.Status.Approval = &keywardv1alpha1.ApprovalStatus{}
	}
	if kind == deny {
		ak.Status.Approval.Denied = d
	} else {
		ak.Status.Approval.Approved = d
	}
	var opts []client.SubResourcePatchOption
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return as(t, user).Status().Patch(ctx, ak, client.MergeFrom(before), opts...)
}

// refusedWith fails the test unless err is a refusal whose message contains want.
func refusedWith(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v; want it refused with %q", what, err, want)
	}
}

func TestOnlyAnApproverWhoDidNotAskMayApproveAndOnlyInTheirOwnNameForTheSpecAsItIs(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	value := fmt.Sprintf("approval-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	name := policy(t, "approval", `namespaceSelector: {matchLabels: {guard: `+value+`}}
approvalRequiredScopes: ["payments:*"]`)
	// alice asks and may approve (but not her own change), bob approves, mallory may edit APIKeys and grant
	// any scope but not approve.
	const alice, bob, mallory = "alice", "bob", "mallory"
	for _, u := range []string{alice, mallory} {
		bind(t, ns, u, "keyward-admin")
	}
	for _, u := range []string{alice, bob} {
		bind(t, ns, u, "keyward-approver")
	}
	if err := eventually.Poll(func() error {
		return as(t, alice).Create(ctx, apiKey(t, ns, "refunds", "scopes: [payments:refund, orders:read]"))
	}); err != nil {
		t.Fatalf("alice's bindings never took effect: %v", err)
	}
	ak := &keywardv1alpha1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "refunds"}, ak); err != nil {
		t.Fatal(err)
	}
	if got := ak.Annotations[keywardv1alpha1.RequestedByAnnotation]; got != alice {
		t.Fatalf("%s is %q after alice created the APIKey; want alice", keywardv1alpha1.RequestedByAnnotation, got)
	}

	// The author cannot be forged: an update that changes nothing an approval covers keeps it.
	forged := ak.DeepCopy()
	forged.Annotations[keywardv1alpha1.RequestedByAnnotation] = bob
	forged.Annotations["team"] = "payments"
	if err := as(t, alice).Update(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if forged.Annotations[keywardv1alpha1.RequestedByAnnotation] != alice || forged.Annotations["team"] != "payments" {
		t.Errorf("after alice wrote bob into %s: annotations %v; want alice kept and the rest written", keywardv1alpha1.RequestedByAnnotation, forged.Annotations)
	}

	// Wait until the policy is in the admission plugin's cache: the author's own approval is refused by it.
	if err := eventually.Poll(func() error {
		err := decide(ctx, t, alice, ns, "refunds", true, approve, nil)
		if err != nil && strings.Contains(err.Error(), "APIKeyPolicy "+name+":") {
			return nil
		}
		return fmt.Errorf("alice approving her own change: %w", err)
	}); err != nil {
		t.Fatal(err)
	}
	if err := eventually.Poll(func() error { return decide(ctx, t, bob, ns, "refunds", true, approve, nil) }); err != nil {
		t.Fatalf("bob's approval (a dry run) never went through: %v", err)
	}
	refusedWith(t, "alice approving her own change", decide(ctx, t, alice, ns, "refunds", true, approve, nil), "separation of duties")
	refusedWith(t, "mallory (no approve verb) approving", decide(ctx, t, mallory, ns, "refunds", true, approve, nil), "forbidden")
	// The verifier may write status (its usage counts) but not approve.
	refusedWith(t, "the verifier's identity approving", decide(ctx, t, testenv.VerifierUser, ns, "refunds", true, approve, nil),
		"needs the approve verb")
	refusedWith(t, "bob approving in carol's name", decide(ctx, t, bob, ns, "refunds", true, approve,
		func(d *keywardv1alpha1.ApprovalDecision) { d.By = "carol" }), "own name, bob")
	refusedWith(t, "bob approving more scopes than the spec asks", decide(ctx, t, bob, ns, "refunds", true, approve, func(d *keywardv1alpha1.ApprovalDecision) {
		d.Covers.Scopes = append(d.Covers.Scopes, "payments:payout")
	}), "as they are now")
	refusedWith(t, "bob approving another rate limit", decide(ctx, t, bob, ns, "refunds", true, approve, func(d *keywardv1alpha1.ApprovalDecision) {
		d.Covers.RateLimit = &keywardv1alpha1.RateLimit{Requests: 10, Period: "1s"}
	}), "as they are now")
	refusedWith(t, "bob denying without a reason", decide(ctx, t, bob, ns, "refunds", true, deny, nil), "reason is required")
	refusedWith(t, "the manager writing a decision", decide(ctx, t, testenv.ManagerUser, ns, "refunds", true, approve, nil), "may only remove")
	if err := decide(ctx, t, alice, ns, "refunds", true, deny, func(d *keywardv1alpha1.ApprovalDecision) { d.Reason = "not mine to keep" }); err != nil {
		t.Errorf("alice withdrawing her own request (a denial): %v", err)
	}
	if err := eventually.Poll(func() error { return decide(ctx, t, bob, ns, "refunds", false, approve, nil) }); err != nil {
		t.Fatalf("bob approving: %v", err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "refunds"}, ak); err != nil {
		t.Fatal(err)
	}
	if a := ak.Status.Approval; a == nil || a.Approved == nil || a.Approved.By != bob || !approval.Covers(a.Approved, ak.Spec) {
		t.Fatalf("status.approval after bob approved: %+v", a)
	}

	// An approval in force is not removed by an approver; the manager may remove the record only.
	removed := ak.DeepCopy()
	removed.Status.Approval.Approved = nil
	refusedWith(t, "bob removing the approval", as(t, bob).Status().Update(ctx, removed, client.DryRunAll), "may not be removed")
	gone := ak.DeepCopy()
	gone.Status.Approval = nil
	if err := as(t, testenv.ManagerUser).Status().Patch(ctx, gone, client.MergeFrom(ak), client.DryRunAll); err != nil {
		t.Errorf("the manager removing the approval record: %v", err)
	}

	// A change of the spec records its author again: bob, who then may not approve it.
	changed := ak.DeepCopy()
	changed.Spec.Scopes = append(changed.Spec.Scopes, "payments:payout")
	bind(t, ns, bob, "keyward-admin")
	if err := eventually.Poll(func() error { return as(t, bob).Update(ctx, changed) }); err != nil {
		t.Fatal(err)
	}
	if got := changed.Annotations[keywardv1alpha1.RequestedByAnnotation]; got != bob {
		t.Errorf("%s after bob changed the scopes: %q; want bob", keywardv1alpha1.RequestedByAnnotation, got)
	}
	refusedWith(t, "bob approving his own change", decide(ctx, t, bob, ns, "refunds", true, approve, nil), "separation of duties")
	if err := decide(ctx, t, alice, ns, "refunds", true, approve, nil); err != nil {
		t.Errorf("alice approving bob's change: %v", err)
	}
}

func TestAPolicyThatAllowsSelfApprovalLetsTheAuthorApproveOnlyWhenEveryAskingPolicyDoes(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	value := fmt.Sprintf("self-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	policy(t, "lenient", `namespaceSelector: {matchLabels: {guard: `+value+`}}
approvalRequiredScopes: ["payments:*"]
allowSelfApproval: true`)
	const alice = "alice"
	bind(t, ns, alice, "keyward-admin")
	bind(t, ns, alice, "keyward-approver")
	if err := eventually.Poll(func() error {
		return as(t, alice).Create(ctx, apiKey(t, ns, "refunds", "scopes: [payments:refund]"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := eventually.Poll(func() error { return decide(ctx, t, alice, ns, "refunds", true, approve, nil) }); err != nil {
		t.Fatalf("alice approving her own change under a policy that allows it: %v", err)
	}
	// A second policy that asks for the same approval and does not allow it: refused, naming it.
	strict := policy(t, "strict", `namespaceSelector: {matchLabels: {guard: `+value+`}}
approvalRequiredScopes: ["payments:refund"]`)
	if err := eventually.Poll(func() error {
		err := decide(ctx, t, alice, ns, "refunds", true, approve, nil)
		if err != nil && strings.Contains(err.Error(), "APIKeyPolicy "+strict+":") && strings.Contains(err.Error(), "separation of duties") {
			return nil
		}
		return fmt.Errorf("alice approving under a strict policy too: %w", err)
	}); err != nil {
		t.Error(err)
	}
}

func TestAScopeThatNeedsApprovalCannotBeAddedToAKeyMintedWithoutOne(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	value := fmt.Sprintf("unapproved-%d", time.Now().UnixNano())
	ns := labelled(t, value)
	name := policy(t, "approval", `namespaceSelector: {matchLabels: {guard: `+value+`}}
approvalRequiredScopes: ["payments:*"]`)
	enforcedOn := func() error {
		return env.Client.Create(ctx, apiKey(t, ns, "orders", "scopes: [orders:read]"))
	}
	if err := enforcedOn(); err != nil {
		t.Fatal(err)
	}
	// The manager minted its key before anyone asked for payments.
	ak := &keywardv1alpha1.APIKey{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, ak); err != nil {
		t.Fatal(err)
	}
	minted := ak.DeepCopy()
	minted.Status.KeyHash, minted.Status.KeyID = "sha256:"+strings.Repeat("ab", 32), "kid_probe"
	if err := as(t, testenv.ManagerUser).Status().Patch(ctx, minted, client.MergeFrom(ak)); err != nil {
		t.Fatal(err)
	}
	ak = minted
	wider := ak.DeepCopy()
	wider.Spec.Scopes = append(wider.Spec.Scopes, "payments:refund")
	if err := eventually.Poll(func() error {
		err := env.Client.Update(ctx, wider.DeepCopy(), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "APIKeyPolicy "+name+": spec.scopes[1]: scope \"payments:refund\" needs an approval") {
			return nil
		}
		return fmt.Errorf("adding payments:refund to a key minted without approval: %w", err)
	}); err != nil {
		t.Fatal(err)
	}
	// A new APIKey asking for it is accepted (and waits), as is a change that adds no such scope.
	if err := env.Client.Create(ctx, apiKey(t, ns, "refunds", "scopes: [payments:refund]"), client.DryRunAll); err != nil {
		t.Errorf("a new APIKey asking for payments:refund: %v", err)
	}
	other := ak.DeepCopy()
	other.Spec.Scopes = append(other.Spec.Scopes, "orders:write")
	if err := env.Client.Update(ctx, other, client.DryRunAll); err != nil {
		t.Errorf("adding orders:write: %v", err)
	}
}

// A GitOps controller applies APIKeys with server-side apply and never sets keyward.dev/requested-by: it is
// recorded as the author of what it applies, and a re-apply that drops the annotation from its own fields
// keeps it.
func TestAServerSideApplyRecordsTheApplierAsTheAuthorAndAReapplyKeepsIt(t *testing.T) {
	testenv.Need(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	const flux = "system:serviceaccount:flux-system:kustomize-controller"
	bind(t, ns, flux, "keyward-admin")
	apply := func() (*keywardv1alpha1.APIKey, error) {
		u := apiKey(t, ns, "applied", "scopes: [orders:read]")
		if err := as(t, flux).Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kustomize-controller"), client.ForceOwnership); err != nil {
			return nil, err
		}
		ak := &keywardv1alpha1.APIKey{}
		return ak, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "applied"}, ak)
	}
	var ak *keywardv1alpha1.APIKey
	if err := eventually.Poll(func() error {
		var err error
		ak, err = apply()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := ak.Annotations[keywardv1alpha1.RequestedByAnnotation]; got != flux {
		t.Fatalf("%s after the first apply: %q; want %s", keywardv1alpha1.RequestedByAnnotation, got, flux)
	}
	again, err := apply()
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Annotations[keywardv1alpha1.RequestedByAnnotation]; got != flux {
		t.Errorf("%s after a re-apply: %q; want it kept", keywardv1alpha1.RequestedByAnnotation, got)
	}
}
