package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert makes a self-signed certificate for names, valid from
// notBefore for a day, and returns it parsed and as PEM.
func testCert(t testing.TB, notBefore time.Time, names ...string) (c *tls.Certificate, certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(notBefore.UnixNano()), Subject: pkix.Name{CommonName: strings.Join(names, ",")}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c, err = ParseCert(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

func TestCertSetPick(t *testing.T) {
	now := time.Now()
	hour := time.Hour
	exact, _, _ := testCert(t, now.Add(-hour), "a.example.com")
	wild, _, _ := testCert(t, now.Add(-hour), "*.example.com")
	old, _, _ := testCert(t, now.Add(-3*hour), "b.example.com")
	newer, _, _ := testCert(t, now.Add(-2*hour), "b.example.com")
	future, _, _ := testCert(t, now.Add(hour), "b.example.com") // newest, not valid yet
	fallback, _, _ := testCert(t, now.Add(-hour), "fallback")
	fromDir, _, _ := testCert(t, now.Add(-hour), "dir.example.org")

	s := NewCertSet(fallback)
	s.Set("store", []*tls.Certificate{exact, wild, old, future})
	s.Set("dir", []*tls.Certificate{newer, fromDir})
	cases := []struct {
		name string
		want *tls.Certificate
	}{
		{"a.example.com", exact},          // exact beats the wildcard
		{"A.Example.COM.", exact},         // case and a final dot do not matter
		{"c.example.com", wild},           // wildcard, one level
		{"x.c.example.com", fallback},     // a wildcard covers one level only
		{"example.com", fallback},         // nor the name itself
		{"b.example.com", newer},          // newest NotBefore that is valid now, whichever source
		{"dir.example.org", fromDir},      // the other source
		{"*.example.com", fallback},       // a wildcard asked for is no name
		{"", fallback},                    // no SNI
		{"unknown.example.net", fallback}, // nothing names it
	}
	for _, c := range cases {
		if got := s.Pick(c.name, now); got != c.want {
			t.Errorf("Pick(%q) = %v, want %v", c.name, got.Leaf.DNSNames, c.want.Leaf.DNSNames)
		}
	}
	// Past the others' lifetime, the only one left valid wins.
	if got := s.Pick("b.example.com", now.Add(23*hour)); got != future {
		t.Errorf("a day later Pick(b) = %v, want the one valid then", got.Leaf.NotBefore)
	}
	// A source replaced drops what it no longer has.
	s.Set("dir", nil)
	if got := s.Pick("b.example.com", now); got != old {
		t.Errorf("after the dir emptied Pick(b) = NotBefore %v, want the store's valid one", got.Leaf.NotBefore)
	}
	if got := s.Pick("dir.example.org", now); got != fallback {
		t.Errorf("after the dir emptied Pick(dir.example.org) = %v, want the fallback", got.Leaf.DNSNames)
	}

	// Without a fallback, a name nothing names gets no certificate.
	none := NewCertSet(nil)
	none.Set("store", []*tls.Certificate{exact})
	if got := none.Pick("unknown.example.net", now); got != nil {
		t.Errorf("no fallback: Pick = %v, want nil", got.Leaf.DNSNames)
	}
	if got := none.Pick("", now); got != nil {
		t.Errorf("no fallback, no SNI: Pick = %v, want nil", got.Leaf.DNSNames)
	}
}

// TestCertSetHandshake: a real handshake gets the certificate of its
// server name, and one for a name no certificate names fails with the
// alert unrecognized_name.
func TestCertSetHandshake(t *testing.T) {
	a, aPEM, _ := testCert(t, time.Now().Add(-time.Hour), "a.example")
	s := NewCertSet(nil)
	s.Set("store", []*tls.Certificate{a})
	cfg := &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(aPEM)

	handshake := func(name string) (tls.ConnectionState, error) {
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		go func() { _ = tls.Server(sc, cfg).Handshake(); sc.Close() }()
		c := tls.Client(cc, &tls.Config{ServerName: name, RootCAs: pool})
		err := c.Handshake()
		return c.ConnectionState(), err
	}
	st, err := handshake("a.example")
	if err != nil {
		t.Fatalf("a.example: %v", err)
	}
	if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "a.example" {
		t.Errorf("a.example got a certificate for %v", got)
	}
	_, err = handshake("b.example")
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("b.example: err = %v, want the alert unrecognized name", err)
	}
}

func TestParseCert(t *testing.T) {
	_, certA, keyA := testCert(t, time.Now(), "a.example")
	_, _, keyB := testCert(t, time.Now(), "b.example")
	if _, err := ParseCert(certA, keyB); err == nil {
		t.Error("a key that does not match the certificate was taken")
	}
	if _, err := ParseCert([]byte("junk"), keyA); err == nil {
		t.Error("junk PEM was taken")
	}
	// No DNS names: nothing to pick it by.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	_, err := ParseCert(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err == nil || !strings.Contains(err.Error(), "DNS name") {
		t.Errorf("a certificate without DNS names: err = %v", err)
	}
}

func TestValidCertName(t *testing.T) {
	for _, ok := range []string{"web", "a.example", "www-1.example.com", "x"} {
		if err := ValidCertName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Web", "a/b", "..", "a..b", ".a", "a.", "-a", "a_b", strings.Repeat("a", 64), "a b"} {
		if ValidCertName(bad) == nil {
			t.Errorf("%q taken", bad)
		}
	}
}

// TestDirCerts: pairs in the directory are served; a bad one is logged once
// and skipped while the others are served; a pair added later is picked
// up; one removed is dropped.
func TestDirCerts(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, aCert, aKey := testCert(t, time.Now().Add(-time.Hour), "a.example")
	_, bCert, bKey := testCert(t, time.Now().Add(-time.Hour), "b.example")
	write("a.crt", aCert)
	write("a.key", aKey)
	write("bad.crt", aCert)
	write("bad.key", bKey) // does not match
	write("lonely.crt", bCert)
	write("notes.txt", []byte("ignored"))

	var logs bytes.Buffer
	set := NewCertSet(nil)
	d := newDirCerts(dir, set, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := d.load(); err != nil {
		t.Fatal(err)
	}
	if set.Pick("a.example", time.Now()) == nil {
		t.Fatal("a.example not served")
	}
	for _, f := range []string{"bad.crt", "lonely.crt"} {
		if n := linesWith(logs.String(), f); n != 1 {
			t.Errorf("%s logged %d times, want once:\n%s", f, n, logs.String())
		}
	}
	// Another file changes: the bad pairs are not logged again.
	write("b.crt", bCert)
	write("b.key", bKey)
	if err := d.load(); err != nil {
		t.Fatal(err)
	}
	if set.Pick("b.example", time.Now()) == nil {
		t.Error("b.example, added later, not served")
	}
	if set.Pick("a.example", time.Now()) == nil {
		t.Error("a.example no longer served")
	}
	if n := linesWith(logs.String(), "bad.crt"); n != 1 {
		t.Errorf("bad.crt logged %d times after a reload, want once", n)
	}
	if err := os.Remove(filepath.Join(dir, "a.crt")); err != nil {
		t.Fatal(err)
	}
	if err := d.load(); err != nil {
		t.Fatal(err)
	}
	if set.Pick("a.example", time.Now()) != nil {
		t.Error("a.example still served after a.crt was removed")
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if d.load() == nil {
		t.Error("a directory gone: no error")
	}
	if set.Pick("b.example", time.Now()) == nil {
		t.Error("the directory gone: the certificates last loaded are no longer served")
	}
}

func linesWith(s, sub string) int {
	n := 0
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// FuzzParseCert: no input makes ParseCert panic, and what it takes has a
// leaf with a DNS name the set can index.
func FuzzParseCert(f *testing.F) {
	_, certPEM, keyPEM := testCert(f, time.Now(), "a.example", "*.example.org")
	f.Add(certPEM, keyPEM)
	f.Add(certPEM, certPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), keyPEM)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		c, err := ParseCert(certPEM, keyPEM)
		if err != nil {
			return
		}
		if c.Leaf == nil || len(c.Leaf.DNSNames) == 0 {
			t.Fatalf("ParseCert took a certificate without a leaf or DNS names: %+v", c.Leaf)
		}
		s := NewCertSet(nil)
		s.Set("fuzz", []*tls.Certificate{c})
		s.Pick(c.Leaf.DNSNames[0], time.Now())
	})
}
