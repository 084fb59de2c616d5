package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
	"github.com/keyward-dev/keyward/internal/notify"
	"github.com/keyward-dev/keyward/internal/testenv"
)

// A narrow unit test of the receiver's HTTP handling: the fake client only stands in for the two reads.
func TestTheLocalReceiverAcceptsOnlyDeliveriesSignedWithTheAPIKeysSecret(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("thirty-two bytes of signing key!"))
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "billing-orders"},
		Spec: keywardv1alpha1.APIKeySpec{Webhook: &keywardv1alpha1.WebhookSpec{URL: "https://127.0.0.1:8093/keyward",
			SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "keyward-webhook", Key: "secret"}}}}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "keyward-webhook"}, Data: map[string][]byte{"secret": []byte(secret)}}
	var lines, record bytes.Buffer
	r := &receiver{client: fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(ak, s).Build(), lines: &lines, record: &record}
	srv := httptest.NewServer(r)
	defer srv.Close()

	body := notify.Body{Type: "key.created", Timestamp: time.Now().UTC().Format(time.RFC3339),
		Data: notify.Data{Namespace: "default", Name: "billing-orders", KeyID: "kid_0123456789ab", Revision: 1}}.Marshal()
	post := func(payload []byte, signWith string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(payload))
		signer, err := notify.NewSigner(signWith)
		if err != nil {
			t.Fatal(err)
		}
		signer.Headers(req.Header, "msg_1", time.Now(), payload)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	forger := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a secret the sender does not own"))
	cases := []struct {
		name     string
		payload  []byte
		secret   string
		status   int
		line     string
		verified bool
	}{
		{"signed with the APIKey's secret", body, secret, http.StatusNoContent, "webhook key.created default/billing-orders kid_0123456789ab: signature verified", true},
		{"signed with another secret", body, forger, http.StatusUnauthorized, "webhook key.created default/billing-orders kid_0123456789ab: NOT verified", false},
		{"naming an APIKey that does not exist", bytes.Replace(body, []byte("billing-orders"), []byte("nobody"), 1), secret, http.StatusUnauthorized, "NOT verified (the APIKey the payload names", false},
		{"larger than the bound", append(body, bytes.Repeat([]byte(" "), maxDelivery)...), secret, http.StatusRequestEntityTooLarge, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines.Reset()
			record.Reset()
			if got := post(tc.payload, tc.secret); got != tc.status {
				t.Errorf("answered %d; want %d", got, tc.status)
			}
			if !strings.Contains(lines.String(), tc.line) {
				t.Errorf("printed %q; want %q in it", lines.String(), tc.line)
			}
			if tc.status == http.StatusRequestEntityTooLarge {
				if record.Len() != 0 {
					t.Errorf("an oversized delivery was recorded: %.80s", record.String())
				}
				return
			}
			var d delivery
			if err := json.Unmarshal(record.Bytes(), &d); err != nil || d.Verified != tc.verified || d.ID != "msg_1" || len(d.Body) == 0 {
				t.Errorf("recorded %s (%v); want verified=%v with the body", record.String(), err, tc.verified)
			}
		})
	}
}
