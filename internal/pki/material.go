package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Material is what a node needs for TLS: the trust bundle, its own
// certificate, and the CA (nil if this node has no CA key).
type Material struct {
	CAs   []*x509.Certificate // trust bundle
	Roots *x509.CertPool      // CAs as a pool
	// Cert is the node certificate and key; Cert.Leaf is set and the chain
	// is the leaf followed by its issuer from CAs.
	Cert tls.Certificate
	CA   *CA // nil when ca.key is absent
	// The file contents; CAKeyPEM is nil without a CA.
	CAPEM, CertPEM, KeyPEM, CAKeyPEM []byte
}

// Assemble checks and assembles a node's material from the contents of its
// files: every certificate in the bundle is a CA, the node certificate is
// one leaf signed by a CA of the bundle, the node key matches it, and the
// CA key (optional: nil on a node without the CA) matches a CA of the
// bundle. Errors name the file at fault. An expired node certificate is not
// refused here: see RenewAt.
func Assemble(caPEM, certPEM, keyPEM, caKeyPEM []byte) (*Material, error) {
	return assemble(CertFile, KeyFile, caPEM, certPEM, keyPEM, caKeyPEM)
}

// assemble is Assemble with the names its errors give the node's
// certificate and key.
func assemble(certName, keyName string, caPEM, certPEM, keyPEM, caKeyPEM []byte) (*Material, error) {
	cas, err := ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAFile, err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		if err := checkCA(c); err != nil {
			return nil, fmt.Errorf("%s: %w", CAFile, err)
		}
		roots.AddCert(c)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certName, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: holds %d certificates, want the node's certificate alone", certName, len(certs))
	}
	leaf := certs[0]
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyName, err)
	}
	if !samePublicKey(key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s: the key and the certificate belong to different requests", keyName, certName)
	}
	var issuer *x509.Certificate
	for _, c := range cas {
		if leaf.CheckSignatureFrom(c) == nil {
			issuer = c
			break
		}
	}
	if issuer == nil {
		return nil, fmt.Errorf("%s (%q, issued by %q) is not signed by any of the %d CA(s) in %s", certName, leaf.Subject.CommonName, leaf.Issuer.CommonName, len(cas), CAFile)
	}
	m := &Material{
		CAs:   cas,
		Roots: roots,
		Cert: tls.Certificate{
			Certificate: [][]byte{leaf.Raw, issuer.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		CAPEM:   caPEM,
		CertPEM: certPEM,
		KeyPEM:  keyPEM,
	}
	if caKeyPEM != nil {
		ca, err := ParseCA(caPEM, caKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
		}
		m.CA, m.CAKeyPEM = ca, caKeyPEM
	}
	return m, nil
}

// Bootstrap is the material of a cluster's first node: a new CA, and a new
// key and certificate for the node signed by it.
func Bootstrap(cluster, name string, ips []net.IP, dnsNames []string, now time.Time, caTTL, certTTL time.Duration) (*Material, error) {
	ca, err := NewCA(cluster, now, caTTL)
	if err != nil {
		return nil, err
	}
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key, name, ips, dnsNames)
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.Sign(csr, name, now, certTTL)
	if err != nil {
		return nil, err
	}
	caKeyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	return Assemble(ca.CertPEM, certPEM, keyPEM, caKeyPEM)
}

// Dir is a node's tls directory, <data-dir>/tls.
type Dir string

// Path is the path of the named file in the directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Exists reports whether the directory holds a node's material: ca.crt
// and node.pem (or, from an older version, node.crt and node.key).
func (d Dir) Exists() bool {
	exists := func(f string) bool { _, err := os.Stat(d.Path(f)); return err == nil }
	return exists(CAFile) && (exists(NodeFile) || exists(CertFile) && exists(KeyFile))
}

// Load reads and checks the material (see Assemble). ca.key may be absent;
// a missing or bad file is named in the error.
func (d Dir) Load() (*Material, error) {
	read := func(f string) ([]byte, error) {
		b, err := os.ReadFile(d.Path(f))
		if err != nil {
			return nil, fmt.Errorf("load TLS material: %w", err)
		}
		return b, nil
	}
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	var certPEM, keyPEM []byte
	certName, keyName := NodeFile, NodeFile
	if node, err := os.ReadFile(d.Path(NodeFile)); err == nil {
		if certPEM, keyPEM, err = splitNode(node); err != nil {
			return nil, fmt.Errorf("load TLS material from %s: %s: %w", d, NodeFile, err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		certName, keyName = CertFile, KeyFile
		if certPEM, err = read(CertFile); err != nil {
			return nil, err
		}
		if keyPEM, err = read(KeyFile); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("load TLS material: %w", err)
	}
	caKey, err := os.ReadFile(d.Path(CAKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		caKey = nil
	} else if err != nil {
		return nil, fmt.Errorf("load TLS material: %w", err)
	}
	m, err := assemble(certName, keyName, caPEM, certPEM, keyPEM, caKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS material from %s: %w", d, err)
	}
	return m, nil
}

// splitNode splits the contents of node.pem into the certificate and the
// key.
func splitNode(data []byte) (certPEM, keyPEM []byte, err error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range blocks {
		switch b.Type {
		case pemCertificate:
			certPEM = append(certPEM, pem.EncodeToMemory(b)...)
		case pemPrivateKey:
			if keyPEM != nil {
				return nil, nil, errors.New("holds more than one private key")
			}
			keyPEM = pem.EncodeToMemory(b)
		default:
			return nil, nil, fmt.Errorf("holds a %q block; want a %s and a %s", b.Type, pemPrivateKey, pemCertificate)
		}
	}
	if keyPEM == nil || certPEM == nil {
		return nil, nil, fmt.Errorf("want a %s and a %s", pemPrivateKey, pemCertificate)
	}
	return certPEM, keyPEM, nil
}

// Save writes m to the directory, each file atomically (a temporary file
// in the directory, synced, then renamed): the directory 0700, the keys
// 0600, the certificates 0644. The node's key and certificate go to
// node.pem together (and the certificate alone to node.crt, for tools);
// a node.key left by an older version is removed. ca.key is written only
// when m.CAKeyPEM is set; an existing one is left alone otherwise.
//
// Every moment between two renames leaves a directory that loads: when
// the trust bundle grows (a CA rotation adds a CA), ca.crt and ca.key are
// renamed before node.pem, so the CA that signed the new certificate is
// trusted first; when it shrinks (the old CA is retired), node.pem goes
// first, so no certificate is left signed by a CA no longer trusted.
func (d Dir) Save(m *Material) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("save TLS material: %w", err)
	}
	if err := os.Chmod(string(d), 0o700); err != nil {
		return fmt.Errorf("save TLS material: %w", err)
	}
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	ca := []file{{CAFile, m.CAPEM, 0o644}, {CAKeyFile, m.CAKeyPEM, 0o600}}
	node := []file{
		{NodeFile, append(append([]byte(nil), m.KeyPEM...), m.CertPEM...), 0o600},
		{CertFile, m.CertPEM, 0o644},
	}
	files := append(ca, node...)
	if d.shrinks(m) {
		files = append(node, ca...)
	}
	for _, f := range files {
		if f.data == nil {
			continue
		}
		if err := WriteFileAtomic(d.Path(f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save TLS material: %w", err)
		}
		if savedHook != nil {
			savedHook(f.name)
		}
	}
	if err := os.Remove(d.Path(KeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save TLS material: %w", err)
	}
	return syncDir(string(d))
}

// savedHook, when set (by tests), is called after each file Save renames.
var savedHook func(name string)

// shrinks reports whether m's trust bundle lacks a CA of the bundle on
// disk.
func (d Dir) shrinks(m *Material) bool {
	b, err := os.ReadFile(d.Path(CAFile))
	if err != nil {
		return false
	}
	old, err := ParseCerts(b)
	if err != nil {
		return false
	}
	for _, c := range old {
		if !m.HasCA(c) {
			return true
		}
	}
	return false
}

// WriteFileAtomic replaces path with data, made with mode: a reader of
// path sees the old content or the new, never a part, and the new is
// synced to disk. Secrets (keys, tokens) use it with mode 0600.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save TLS material: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save TLS material: sync %s: %w", dir, err)
	}
	return nil
}
