package store_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/pki"
)

func newTestCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// nodeMaterial is a node certificate of ca for name on loopback, as
// tandem makes them (IP and DNS SANs, server and client auth), trusting
// ca and the CAs of also.
func nodeMaterial(t testing.TB, ca *pki.CA, name string, also ...*pki.CA) *pki.Material {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{name, "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, name, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := [][]byte{ca.CertPEM}
	for _, o := range also {
		bundle = append(bundle, o.CertPEM)
	}
	m, err := pki.Assemble(bytes.Join(bundle, nil), certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
