package controllers

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/keyrecord"
)

// maxEventNote is the longest note the events API accepts.
const maxEventNote = 1024

// announceTimeout bounds one announcement, which does not end with the reconcile's context.
const announceTimeout = 30 * time.Second

// MintAnnouncer records the Kubernetes event of each new key once, and counts it in
// keyward_apikey_rotations_total once. The event's name is derived from the APIKey's UID and the key's
// revision, and it is created before the status write that shows the key: a reconcile that retries after a
// failed status write, or a new leader that finds the key of a leader that died, creates the same event
// again, which the API server refuses as already there. Only the creator counts the mint, so the metric, summed
// over replicas, counts each key once too.
type MintAnnouncer struct {
	Client client.Client
	Clock  clock.PassiveClock
	// Signer names the events (MintEventName), so that no one but the manager can know a name in advance.
	Signer *keyrecord.Signer
	// Instance is this manager in the events' reportingInstance; the host name when empty.
	Instance string
}

// mintAnnouncement is one new key's event.
type mintAnnouncement struct {
	revision int64
	reason   keywardv1alpha1.RotationReason
	// eventType, eventReason, action and note are the event's.
	eventType   string
	eventReason keywardv1alpha1.EventReason
	action      string
	note        string
}

// Announce creates the event of a and counts the mint, unless another reconcile already did. It reports
// whether this call was the first to announce the key. When the API server refuses the event (a quota on
// events, say) the mint is counted all the same, since nobody will create that event; when the request got
// no answer (the API server unreachable) it is not, since a retry will be: a mint is never counted twice,
// and only one whose event landed but whose answer never came back goes uncounted. Events are
// best effort: the caller goes on to write status either way, so no event trouble holds back a key or a
// revocation.
func (m *MintAnnouncer) Announce(ctx context.Context, ak *keywardv1alpha1.APIKey, a mintAnnouncement) (bool, error) {
	note := a.note
	if len(note) > maxEventNote {
		note = note[:maxEventNote]
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Namespace: ak.Namespace, Name: MintEventName(ak, a.revision, m.Signer)},
		EventTime:           metav1.NewMicroTime(m.Clock.Now()),
		ReportingController: "keyward",
		ReportingInstance:   m.instance(),
		Action:              a.action,
		Reason:              string(a.eventReason),
		Type:                a.eventType,
		Note:                note,
		Regarding: corev1.ObjectReference{APIVersion: keywardv1alpha1.GroupVersion.String(), Kind: "APIKey",
			Namespace: ak.Namespace, Name: ak.Name, UID: ak.UID},
	}
	// Once sent, the announcement waits for its answer even while the manager stops: cut off, it could land
	// uncounted, and whoever announces the key next would find it already there.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), announceTimeout)
	defer cancel()
	err := m.Client.Create(ctx, ev)
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err == nil || errors.As(err, new(apierrors.APIStatus)) {
		rotationsTotal.WithLabelValues(string(a.reason)).Inc()
	}
	if err != nil {
		return true, fmt.Errorf("recording the %s event of revision %d: %w", a.eventReason, a.revision, err)
	}
	return true, nil
}

func (m *MintAnnouncer) instance() string {
	if m.Instance != "" {
		return m.Instance
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "keyward"
	}
	return "keyward-" + host
}

// MintEventName is the name of the event announcing revision of ak's key: the APIKey's name (cut to fit),
// the revision, and a MAC of its UID and the revision with the manager's signing key. Every replica
// computes the same name, so a key is announced once whoever announces it; an APIKey recreated under the
// same name has events of its own; and no one who may create events in the namespace can compute the name
// and create the event first, which would suppress the announcement and the count of the mint.
func MintEventName(ak *keywardv1alpha1.APIKey, revision int64, signer *keyrecord.Signer) string {
	tag := signer.Tag("keyward.dev/mint-event", string(ak.UID), strconv.FormatInt(revision, 10))
	name := ak.Name
	if len(name) > 200 {
		name = strings.TrimRight(name[:200], ".-") // a DNS label may not end in either
	}
	return fmt.Sprintf("%s.r%d.%s", name, revision, hex.EncodeToString(tag[:8]))
}
