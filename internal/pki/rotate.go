package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
)

// A CA rotation hands every node the new CA's key through the store. The
// store must never hold a secret in the clear, so the key travels sealed
// under a key derived from the current CA's key, which every node of the
// cluster holds and nothing else does.

// sealInfo separates this use of the CA key from any other.
const sealInfo = "tandem CA rotation: seal the new CA key"

// SealKey encrypts secret (the new CA's key, PEM) with AES-256-GCM under a
// key derived (HKDF-SHA256) from ca's private key, bound to label (the
// rotation's ID). The result is base64.
func (ca *CA) SealKey(secret []byte, label string) (string, error) {
	aead, err := ca.sealer(label)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal the CA key: %w", err)
	}
	out := aead.Seal(nonce, nonce, secret, []byte(label))
	return base64.StdEncoding.EncodeToString(out), nil
}

// OpenKey is the inverse of SealKey, with the same CA and label.
func (ca *CA) OpenKey(sealed, label string) ([]byte, error) {
	aead, err := ca.sealer(label)
	if err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return nil, fmt.Errorf("open the sealed CA key: not base64: %w", err)
	}
	if len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("open the sealed CA key: too short")
	}
	out, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(label))
	if err != nil {
		return nil, errors.New("open the sealed CA key: it was not sealed by this CA for this rotation (or it was altered)")
	}
	return out, nil
}

// sealer is the AEAD of SealKey and OpenKey.
func (ca *CA) sealer(label string) (cipher.AEAD, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("seal the CA key: %w", err)
	}
	key, err := hkdf.Key(sha256.New, der, []byte(label), sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("seal the CA key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Trusting is m with the trust bundle cas (in that order) instead of its
// own, checked as Assemble does: the node certificate and the CA key must
// still belong to a CA of cas.
func (m *Material) Trusting(cas []*x509.Certificate) (*Material, error) {
	return Assemble(encodeCerts(cas...), m.CertPEM, m.KeyPEM, m.CAKeyPEM)
}

// EncodeCerts is the PEM of certs, one block each: a trust bundle.
func EncodeCerts(certs ...*x509.Certificate) []byte { return encodeCerts(certs...) }
