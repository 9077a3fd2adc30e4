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
	modes := map[string]os.FileMode{".": 0o700, CAFile: 0o644, CAKeyFile: 0o600, CertFile: 0o644, KeyFile: 0o600}
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
			d := Dir(t.TempDir())
			if err := d.Save(m); err != nil {
				t.Fatal(err)
			}
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
