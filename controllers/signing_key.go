package controllers

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keyward-dev/keyward/internal/keyrecord"
)

// SigningKeyDataKey is the data key of the signing key in its Secret.
const SigningKeyDataKey = "key"

// DefaultSigningKeySecretName is the Secret, in the manager's namespace, that holds the record signing key.
const DefaultSigningKeySecretName = "keyward-record-signing-key"

// LoadOrCreateSigningKey returns a Signer for the key in Secret ref, creating that Secret with a fresh
// 256-bit key from random when it does not exist. reader must read from the API server (the manager's cache
// holds only APIKey Secrets). Replicas racing to create it all end up with the one that was created first.
//
// The Secret is part of Keyward's state, like a CA's key: losing it makes every record unverifiable, so every
// APIKey gets a new key as SecretTampered on the next reconcile.
func LoadOrCreateSigningKey(ctx context.Context, reader client.Reader, writer client.Writer, ref types.NamespacedName, random io.Reader) (*keyrecord.Signer, error) {
	for range 3 {
		s := &corev1.Secret{}
		err := reader.Get(ctx, ref, s)
		if err == nil {
			signer, err := keyrecord.NewSigner(s.Data[SigningKeyDataKey])
			if err != nil {
				return nil, fmt.Errorf("Secret %s: %w", ref, err)
			}
			return signer, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading the record signing key %s: %w", ref, err)
		}
		key := make([]byte, keyrecord.MinSigningKeyLength)
		if _, err := io.ReadFull(random, key); err != nil {
			return nil, fmt.Errorf("generating the record signing key: %w", err)
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, Labels: map[string]string{
				"app.kubernetes.io/part-of": "keyward", "app.kubernetes.io/component": "record-signing-key"}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{SigningKeyDataKey: key},
		}
		err = writer.Create(ctx, s)
		if err == nil {
			return keyrecord.NewSigner(key)
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating the record signing key %s: %w", ref, err)
		}
	}
	return nil, fmt.Errorf("the record signing key %s kept appearing and disappearing", ref)
}
