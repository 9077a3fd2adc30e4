package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBootstrapSaveLoad(t *testing.T) {
	m, err := Bootstrap("prod", "node-1", loopback, []string{"node-1.internal"}, t0, 365*24*time.Hour, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.CA == nil || m.CAKeyPEM == nil || len(m.CAs) != 1 || m.Cert.Leaf.Subject.CommonName != "node-1" {
		t.Fatalf("bootstrap material: CA %v, %d CAs, leaf %q", m.CA, len(m.CAs), m.Cert.Leaf.Subject.CommonName)
	}
	if len(m.Cert.Certificate) != 2 || !bytes.Equal(m.Cert.Certificate[1], m.CA.Cert.Raw) {
		t.Error("the chain is not the leaf and its CA")
	}

	_, err = Bootstrap("prod", "Node 1", loopback, nil, t0, time.Hour, time.Hour)
	wantErr(t, err, "not valid")

	d := Dir(filepath.Join(t.TempDir(), "tls"))
	if d.Exists() {
		t.Fatal("Exists before Save")
	}
	if err := d.Save(m); err != nil {
		t.Fatal(err)
	}
	if !d.Exists() {
		t.Fatal("not Exists after Save")
	}
	modes := map[string]os.FileMode{".": 0o700, CAFile: 0o644, CAKeyFile: 0o600, CertFile: 0o644, NodeFile: 0o600}
	for name, want := range modes {
		fi, err := os.Stat(d.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", name, got, want)
		}
	}
	entries, _ := os.ReadDir(string(d))
	if len(entries) != 4 {
		t.Errorf("%d files in the dir, want 4 (no temporary files left)", len(entries))
	}

	back, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.CAPEM, m.CAPEM) || !bytes.Equal(back.CertPEM, m.CertPEM) || !bytes.Equal(back.KeyPEM, m.KeyPEM) ||
		!bytes.Equal(back.CAKeyPEM, m.CAKeyPEM) || back.CA == nil || !back.CA.Cert.Equal(m.CA.Cert) || !back.Cert.Leaf.Equal(m.Cert.Leaf) {
		t.Error("Load does not give back what Save wrote")
	}

	// A node without the CA key: Load gives CA nil; Save leaves ca.key alone.
	if err := os.Remove(d.Path(CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	back, err = d.Load()
	if err != nil || back.CA != nil || back.CAKeyPEM != nil {
		t.Fatalf("Load without ca.key: CA %v, %v", back.CA, err)
	}
	if err := d.Save(back); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Path(CAKeyFile)); !os.IsNotExist(err) {
		t.Errorf("Save wrote ca.key from nil: %v", err)
	}
}

func TestLoadNamesTheBadFile(t *testing.T) {
	ca := testCA(t)
	m := nodeMaterial(t, ca, "n1", nil)
	caKey, _ := ca.KeyPEM()
	m.CA, m.CAKeyPEM = ca, caKey
	other := testCA(t)
	otherCert, otherKey := issue(t, other, "n1", loopback, time.Hour)
	otherCAKey, _ := other.KeyPEM()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384PEM, _ := encodeKey(p384)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPEM, _ := encodeKey(rsaKey)

	for _, tt := range []struct {
		name string
		file string
		data []byte // nil removes the file
		want string
	}{
		{"missing cert", CertFile, nil, CertFile},
		{"missing CA", CAFile, nil, CAFile},
		{"junk key", KeyFile, []byte("junk"), KeyFile + ": PEM block 1"},
		{"junk CA", CAFile, []byte("junk"), CAFile + ": PEM block 1"},
		{"junk CA key", CAKeyFile, []byte("junk"), CAKeyFile + ":"},
		{"leaf in the bundle", CAFile, m.CertPEM, CAFile + `: certificate "n1" is not a CA`},
		{"two certs in node.crt", CertFile, append(append([]byte{}, m.CertPEM...), m.CertPEM...), CertFile + ": holds 2 certificates"},
		{"key of another cert", KeyFile, otherKey, KeyFile + " does not match " + CertFile},
		{"P-384 key", KeyFile, p384PEM, KeyFile + ": ECDSA key on curve P-384, want P-256"},
		{"RSA key", KeyFile, rsaPEM, KeyFile + ": RSA key, want ECDSA P-256 or Ed25519"},
		{"cert from another CA", CertFile, otherCert, CertFile + ` ("n1", issued by "tandem CA test`},
		{"CA key of another CA", CAKeyFile, otherCAKey, CAKeyFile + ": the CA key matches none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := legacyDir(t, m)
			if tt.name == "cert from another CA" {
				// with its own key, so only the chain is wrong
				if err := os.WriteFile(d.Path(KeyFile), otherKey, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tt.data == nil {
				err = os.Remove(d.Path(tt.file))
			} else {
				err = os.WriteFile(d.Path(tt.file), tt.data, 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Load()
			wantErr(t, err, tt.want)
			if !strings.Contains(err.Error(), string(d)) {
				t.Errorf("error %q does not name the directory", err)
			}
		})
	}
}

// legacyDir is a directory as versions before node.pem wrote it: the
// node's certificate and key in node.crt and node.key.
func legacyDir(t *testing.T, m *Material) Dir {
	t.Helper()
	d := Dir(t.TempDir())
	if err := d.Save(m); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.Path(NodeFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Path(KeyFile), m.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNodeFile(t *testing.T) {
	ca := testCA(t)
	m := nodeMaterial(t, ca, "n1", nil)
	other := nodeMaterial(t, testCA(t), "n1", nil)

	// A directory of an older version loads, and its next Save moves the
	// key into node.pem and removes node.key.
	d := legacyDir(t, m)
	if !d.Exists() {
		t.Fatal("a legacy directory does not exist")
	}
	back, err := d.Load()
	if err != nil || !back.Cert.Leaf.Equal(m.Cert.Leaf) {
		t.Fatalf("load a legacy directory: %v", err)
	}
	if err := d.Save(back); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Path(KeyFile)); !os.IsNotExist(err) {
		t.Errorf("node.key left after Save: %v", err)
	}
	if back, err = d.Load(); err != nil || !back.Cert.Leaf.Equal(m.Cert.Leaf) || !bytes.Equal(back.KeyPEM, m.KeyPEM) {
		t.Fatalf("load after migration: %v", err)
	}
	// node.pem wins over a stale node.crt.
	if err := os.WriteFile(d.Path(CertFile), other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if back, err = d.Load(); err != nil || !back.Cert.Leaf.Equal(m.Cert.Leaf) {
		t.Fatalf("load with a stale node.crt: %v", err)
	}

	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"junk", []byte("junk"), NodeFile + ": PEM block 1"},
		{"no key", m.CertPEM, NodeFile + ": want a PRIVATE KEY and a CERTIFICATE"},
		{"no certificate", m.KeyPEM, NodeFile + ": want a PRIVATE KEY and a CERTIFICATE"},
		{"two keys", cat(m.KeyPEM, m.KeyPEM, m.CertPEM), NodeFile + ": holds more than one private key"},
		{"a CSR", cat(m.KeyPEM, m.CertPEM, []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")), `holds a "CERTIFICATE REQUEST" block`},
		{"key of another certificate", cat(other.KeyPEM, m.CertPEM), NodeFile + " does not match " + NodeFile},
		{"certificate from another CA", cat(other.KeyPEM, other.CertPEM), NodeFile + ` ("n1", issued by "tandem CA test`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Dir(t.TempDir())
			if err := d.Save(m); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.Path(NodeFile), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := d.Load()
			wantErr(t, err, tt.want)
		})
	}
}

// TestSaveLoadsBetweenRenames: whatever moment a crash cuts a Save at,
// the directory loads: while a rotation widens the trust bundle and moves
// to a certificate of the new CA, and while it retires the old CA.
func TestSaveLoadsBetweenRenames(t *testing.T) {
	oldCA, newCA := testCA(t), testCA(t)
	oldKey, _ := oldCA.KeyPEM()
	newKey, _ := newCA.KeyPEM()
	both := cat2(oldCA.CertPEM, newCA.CertPEM)
	first := nodeMaterial(t, oldCA, "n1", nil)
	first, err := Assemble(oldCA.CertPEM, first.CertPEM, first.KeyPEM, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	widened, err := Assemble(both, first.CertPEM, first.KeyPEM, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	next := nodeMaterial(t, newCA, "n1", nil)
	reissued, err := Assemble(both, next.CertPEM, next.KeyPEM, newKey)
	if err != nil {
		t.Fatal(err)
	}
	retired, err := Assemble(newCA.CertPEM, next.CertPEM, next.KeyPEM, newKey)
	if err != nil {
		t.Fatal(err)
	}

	d := Dir(t.TempDir())
	if err := d.Save(first); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		m    *Material
	}{{"widen", widened}, {"re-issue", reissued}, {"retire", retired}} {
		var renamed []string
		savedHook = func(name string) {
			renamed = append(renamed, name)
			if _, err := d.Load(); err != nil {
				t.Errorf("%s: after renaming %v: %v", step.name, renamed, err)
			}
		}
		if err := d.Save(step.m); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if len(renamed) == 0 {
			t.Fatalf("%s: the hook saw no rename", step.name)
		}
	}
	savedHook = nil
}

func cat2(a, b []byte) []byte { return append(append([]byte(nil), a...), b...) }

func TestSealKey(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	secret := []byte("-----BEGIN PRIVATE KEY-----\nnew CA key\n-----END PRIVATE KEY-----\n")
	sealed, err := ca.SealKey(secret, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "new CA key") {
		t.Fatal("the sealed key holds the secret in the clear")
	}
	got, err := ca.OpenKey(sealed, "r1")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q, %v", got, err)
	}
	again, _ := ca.SealKey(secret, "r1")
	if again == sealed {
		t.Error("two seals of one secret are equal (nonce reused?)")
	}
	_, err = other.OpenKey(sealed, "r1")
	wantErr(t, err, "not sealed by this CA for this rotation")
	_, err = ca.OpenKey(sealed, "r2")
	wantErr(t, err, "not sealed by this CA for this rotation")
	_, err = ca.OpenKey("!!", "r1")
	wantErr(t, err, "not base64")
	_, err = ca.OpenKey("AAAA", "r1")
	wantErr(t, err, "too short")
}
