package pki

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The seeds in testdata/fuzz run with every go test; go test -fuzz=FuzzX
// explores from them.

func FuzzParsePin(f *testing.F) {
	f.Add("")
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		sum, err := ParsePin(s)
		if err != nil {
			return
		}
		if got := fmt.Sprintf("sha256:%x", sum); got != strings.ToLower(s) || !strings.HasPrefix(s, "sha256:") {
			t.Fatalf("ParsePin(%q) accepted it as %s", s, got)
		}
	})
}

func FuzzSign(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now(), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----\n"), "n1")
	f.Fuzz(func(t *testing.T, csr []byte, name string) {
		out, err := ca.Sign(csr, name, time.Now(), time.Hour)
		if err != nil {
			if out != nil {
				t.Fatal("a certificate with an error")
			}
			return
		}
		certs, err := ParseCerts(out)
		if err != nil || len(certs) != 1 {
			t.Fatalf("Sign gave %d certificates, %v", len(certs), err)
		}
		c := certs[0]
		if c.Subject.CommonName != name || !validNodeName(name) || c.IsCA || c.CheckSignatureFrom(ca.Cert) != nil {
			t.Fatalf("Sign(%q) gave a certificate for %q (IsCA %v)", name, c.Subject.CommonName, c.IsCA)
		}
		if len(c.IPAddresses) > maxIPSANs || len(c.DNSNames) > maxDNSSANs || len(c.URIs) > 0 || len(c.EmailAddresses) > 0 {
			t.Fatalf("Sign passed SANs through: %v %v %v %v", c.IPAddresses, c.DNSNames, c.URIs, c.EmailAddresses)
		}
	})
}

func FuzzParseCerts(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCerts(data)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		again, err := ParseCerts(encodeCerts(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded: %d certificates, %v; want %d", len(again), err, len(certs))
		}
	})
}
