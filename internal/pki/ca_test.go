package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCARoundTrip(t *testing.T) {
	ca := testCA(t)
	c := ca.Cert
	if want := "tandem CA test " + t0.UTC().Format("2006-01-02"); c.Subject.CommonName != want {
		t.Errorf("CN %q, want %q", c.Subject.CommonName, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA %v valid %v maxPathLen %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	if !c.NotBefore.Equal(t0.Add(-5*time.Minute)) || !c.NotAfter.Equal(t0.Add(365*24*time.Hour)) {
		t.Errorf("validity %v..%v", c.NotBefore, c.NotAfter)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", c.SerialNumber)
	}
	if c.CheckSignatureFrom(c) != nil {
		t.Error("not self-signed")
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("key PEM is not PKCS#8: %s", keyPEM)
	}
	back, err := ParseCA(ca.CertPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(ca.Cert) || !samePublicKey(back.Key.Public(), ca.Key.Public()) || !bytes.Equal(back.CertPEM, ca.CertPEM) {
		t.Error("ParseCA does not give back the CA")
	}

	// In a bundle of two CAs, the key picks its certificate.
	other := testCA(t)
	bundle := append(append([]byte{}, other.CertPEM...), ca.CertPEM...)
	if back, err = ParseCA(bundle, keyPEM); err != nil || !back.Cert.Equal(ca.Cert) {
		t.Errorf("ParseCA(bundle) = %v, %v", back, err)
	}

	otherKey, _ := other.KeyPEM()
	_, err = ParseCA(ca.CertPEM, otherKey)
	wantErr(t, err, "matches none")
	certPEM, nodeKey := issue(t, ca, "n1", nil, time.Hour)
	_, err = ParseCA(certPEM, nodeKey)
	wantErr(t, err, "not a CA")
	_, err = ParseCA(ca.CertPEM, []byte("junk"))
	wantErr(t, err, "CA key")
	_, err = ParseCA([]byte("junk"), keyPEM)
	wantErr(t, err, "CA certificate")

	_, err = NewCA("", t0, time.Hour)
	wantErr(t, err, "cluster name")
	_, err = NewCA("x", t0, 0)
	wantErr(t, err, "not positive")
}

// csrWith is a CSR (PEM) for tmpl signed by key, built without NewCSR's
// checks.
func csrWith(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignRefuses(t *testing.T) {
	ca := testCA(t)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	req := func(mod func(*x509.CertificateRequest)) *x509.CertificateRequest {
		r := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n1"}, IPAddresses: loopback}
		if mod != nil {
			mod(r)
		}
		return r
	}
	good := csrWith(t, p256, req(nil))
	badSig := func() []byte {
		b, _ := pem.Decode(good)
		der := append([]byte{}, b.Bytes...)
		der[len(der)-1] ^= 0xff // the signature's last byte
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	many := func(n int) ([]net.IP, []string) {
		var ips []net.IP
		var names []string
		for i := range n {
			ips = append(ips, net.IPv4(10, 0, 0, byte(i+1)))
			names = append(names, fmt.Sprintf("h%d.example", i))
		}
		return ips, names
	}
	ips17, dns17 := many(17)
	ips16, dns16 := many(16)
	u, _ := url.Parse("spiffe://x/y")

	tests := []struct {
		name string
		csr  []byte
		node string
		want string // "" means it is signed
	}{
		{"good", good, "n1", ""},
		{"16 SANs each", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.IPAddresses, r.DNSNames = ips16, dns16 })), "n1", ""},
		{"ed25519", csrWith(t, ed25519.NewKeyFromSeed(make([]byte, 32)), req(nil)), "n1", ""},
		{"wrong name", good, "n2", `CSR is for "n1", not for node "n2"`},
		{"invalid node name", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.Subject.CommonName = "N_1" })), "N_1", "not valid"},
		{"bad signature", badSig, "n1", "signature does not verify"},
		{"RSA key", csrWith(t, rsaKey, req(nil)), "n1", "RSA key, want ECDSA P-256 or Ed25519"},
		{"P-384 key", csrWith(t, p384, req(nil)), "n1", "want P-256"},
		{"17 IPs", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.IPAddresses = ips17 })), "n1", "17 IP addresses"},
		{"17 DNS names", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.DNSNames = dns17 })), "n1", "17 DNS names"},
		{"wildcard", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.DNSNames = []string{"*.example"} })), "n1", "not a valid hostname"},
		{"unspecified IP", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4zero} })), "n1", "unspecified"},
		{"URI", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.URIs = []*url.URL{u} })), "n1", "URI"},
		{"email", csrWith(t, p256, req(func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"a@b.c"} })), "n1", "email"},
		{"junk", []byte("hello"), "n1", "BEGIN line was expected"},
		{"empty", nil, "n1", "no PEM data"},
		{"junk before", append([]byte("x\n"), good...), "n1", "BEGIN line was expected"},
		{"junk after", append(append([]byte{}, good...), "x"...), "n1", "BEGIN line was expected"},
		{"two CSRs", append(append([]byte{}, good...), good...), "n1", "found 2 PEM blocks"},
		{"a certificate", ca.CertPEM, "n1", "want a CERTIFICATE REQUEST"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "n1", "CSR:"},
		{"truncated", good[:len(good)/2], "n1", "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := ca.Sign(tt.csr, tt.node, t0, time.Hour)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ParseCerts(out); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tt.want)
			if out != nil {
				t.Error("a refused CSR returned a certificate")
			}
		})
	}
}

func TestSignCertificate(t *testing.T) {
	ca := testCA(t)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ips := []net.IP{net.IPv4(10, 0, 0, 1), net.ParseIP("fd00::1")}
	csr, err := NewCSR(key, "node-1", ips, []string{"node-1.internal"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ca.Sign(csr, "node-1", t0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(out)
	if err != nil || len(certs) != 1 {
		t.Fatalf("ParseCerts: %d, %v", len(certs), err)
	}
	c := certs[0]
	if c.Subject.CommonName != "node-1" || c.IsCA {
		t.Errorf("CN %q IsCA %v", c.Subject.CommonName, c.IsCA)
	}
	if !c.NotBefore.Equal(t0.Add(-5*time.Minute)) || !c.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %v..%v", c.NotBefore, c.NotAfter)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) != 2 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || c.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ext key usage %v", c.ExtKeyUsage)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[1].Equal(ips[1]) || len(c.DNSNames) != 1 || c.DNSNames[0] != "node-1.internal" {
		t.Errorf("SANs %v %v", c.IPAddresses, c.DNSNames)
	}
	if c.CheckSignatureFrom(ca.Cert) != nil || !samePublicKey(c.PublicKey, key.Public()) {
		t.Error("not signed by the CA for the CSR's key")
	}
	// Renewed two thirds into the 24 h it was signed for, whatever its
	// back-dating.
	if want := t0.Add(16 * time.Hour); !RenewAt(c).Equal(want) {
		t.Errorf("RenewAt %v, want %v", RenewAt(c), want)
	}

	// What a CSR asks for beyond its names is not granted.
	bc, err := asn1.Marshal(struct {
		IsCA       bool
		MaxPathLen int
	}{true, 5})
	if err != nil {
		t.Fatal(err)
	}
	greedy := csrWith(t, key, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "node-1", Organization: []string{"admins"}},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}},
	})
	out, err = ca.Sign(greedy, "node-1", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ = ParseCerts(out)
	if c := certs[0]; c.IsCA || len(c.Subject.Organization) != 0 {
		t.Errorf("a CSR asking for CA:true got IsCA %v, O %v", c.IsCA, c.Subject.Organization)
	}

	// A certificate never outlives its CA.
	out, err = ca.Sign(csr, "node-1", t0, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ = ParseCerts(out)
	if !certs[0].NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the CA's %v", certs[0].NotAfter, ca.Cert.NotAfter)
	}
	_, err = ca.Sign(csr, "node-1", ca.Cert.NotAfter, time.Hour)
	wantErr(t, err, "expired")
	_, err = ca.Sign(csr, "node-1", t0, 0)
	wantErr(t, err, "not positive")

	// NewCSR checks what Sign would refuse.
	_, err = NewCSR(key, "Bad Name", nil, nil)
	wantErr(t, err, "not valid")
	_, err = NewCSR(key, "n1", nil, []string{"a..b"})
	wantErr(t, err, "not a valid hostname")
}

func TestPin(t *testing.T) {
	ca := testCA(t)
	pin := Pin(ca.Cert)
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != 7+64 || strings.ToLower(pin) != pin {
		t.Fatalf("pin %q", pin)
	}
	sum, err := ParsePin(pin)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("sha256:%x", sum) != pin {
		t.Errorf("ParsePin(%q) = %x", pin, sum)
	}
	hex64 := strings.Repeat("ab", 32)
	for _, tt := range []struct{ in, want string }{
		{"sha256:" + hex64, ""},
		{"sha256:" + strings.ToUpper(hex64), ""},
		{"", "does not start"},
		{"SHA256:" + hex64, "does not start"},
		{"sha1:" + hex64, "does not start"},
		{" sha256:" + hex64, "does not start"},
		{"sha256:" + hex64 + "\n", "65 characters"},
		{"sha256:" + hex64[:62], "62 characters"},
		{"sha256:" + hex64[:63] + "g", "not hex"},
	} {
		_, err := ParsePin(tt.in)
		if tt.want == "" {
			if err != nil {
				t.Errorf("ParsePin(%q): %v", tt.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePin(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestParseCerts(t *testing.T) {
	a, b := testCA(t), testCA(t)
	two := append(append([]byte{}, a.CertPEM...), b.CertPEM...)
	keyPEM, _ := a.KeyPEM()
	crlf := bytes.ReplaceAll(two, []byte("\n"), []byte("\r\n"))
	for _, tt := range []struct {
		name string
		in   []byte
		n    int
		want string
	}{
		{"one", a.CertPEM, 1, ""},
		{"two", two, 2, ""},
		{"CRLF and blank lines", append(append([]byte("\r\n\n"), crlf...), "\n\n"...), 2, ""},
		{"none", nil, 0, "no PEM data"},
		{"spaces", []byte(" \n\t"), 0, "no PEM data"},
		{"junk between", append(append(append([]byte{}, a.CertPEM...), "junk\n"...), b.CertPEM...), 0, "PEM block 2: found \"junk\""},
		{"junk after", append(append([]byte{}, a.CertPEM...), "junk"...), 0, "found \"junk\""},
		{"a key", keyPEM, 0, "PEM block 1 is a PRIVATE KEY"},
		{"not DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}), 0, "certificate 1:"},
		{"no END", a.CertPEM[:len(a.CertPEM)-30], 0, "no -----END line"},
		{"bad base64", []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), 0, "malformed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParseCerts(tt.in)
			if tt.want == "" {
				if err != nil || len(certs) != tt.n {
					t.Fatalf("got %d, %v; want %d", len(certs), err, tt.n)
				}
				return
			}
			wantErr(t, err, tt.want)
		})
	}
}
