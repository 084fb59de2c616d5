package v1alpha1_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keyward-dev/keyward/internal/eventually"
	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// auditEvent is the part of an audit.k8s.io/v1 Event the test reads.
type auditEvent struct {
	Level string `json:"level"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	RequestObject json.RawMessage `json:"requestObject"`
}

func TestTheAuditLogNamesWhoRotatedAKeyAndHoldsNoKey(t *testing.T) {
	testenv.Need(t)
	ns := env.Namespace(t)
	bind(t, ns, "alice", "keyward-edit")
	ctx := context.Background()
	if err := env.Client.Create(ctx, apiKey(t, ns, "orders", "{}")); err != nil {
		t.Fatal(err)
	}
	// The key, in a Secret as Keyward writes it.
	key, err := keys.Generate("kw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Data: map[string][]byte{"api-key": []byte(key)}}); err != nil {
		t.Fatal(err)
	}
	rotate := []byte(`{"metadata":{"annotations":{"keyward.dev/rotate":"leaked-2026-11-24"}}}`)
	if err := as(t, "alice").Patch(ctx, apiKeyRef(ns, "orders"), client.RawPatch(types.MergePatchType, rotate)); err != nil {
		t.Fatalf("alice rotating the key: %v", err)
	}

	var rotation *auditEvent
	var secretSeen bool
	eventually.Succeeds(t, "the audit log holds alice's rotation and the Secret's creation", func() error {
		raw, err := os.ReadFile(env.AuditLog)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), key) || strings.Contains(string(raw), key[3:35]) {
			t.Fatal("the audit log holds key material")
		}
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e auditEvent
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.ObjectRef.Namespace != ns {
				continue
			}
			who := e.User.Username
			if e.ImpersonatedUser != nil {
				who = e.ImpersonatedUser.Username
			}
			switch {
			case e.ObjectRef.Resource == "apikeys" && e.ObjectRef.Name == "orders" && e.Verb == "patch" && who == "alice":
				rotation = &e
			case e.ObjectRef.Resource == "secrets" && e.ObjectRef.Name == "orders" && e.Verb == "create":
				secretSeen = true
				if e.Level != "Metadata" || len(e.RequestObject) > 0 {
					t.Errorf("the Secret's creation is audited at %s with a request body", e.Level)
				}
			}
		}
		if rotation == nil || !secretSeen {
			return fmt.Errorf("rotation found %v, Secret's creation found %v", rotation != nil, secretSeen)
		}
		return nil
	})
	if rotation.Level != "RequestResponse" || !strings.Contains(string(rotation.RequestObject), "keyward.dev/rotate") {
		t.Errorf("alice's rotation is audited at %s, request %s; want RequestResponse with the annotation", rotation.Level, rotation.RequestObject)
	}
}
