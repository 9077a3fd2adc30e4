package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"regexp"
	"strings"
	"time"
)

// Files under a node's <data-dir>/tls/.
const (
	CAFile    = "ca.crt" // trust bundle: one or more CA certificates (PEM), 0644
	CAKeyFile = "ca.key" // the CA private key (PEM, PKCS#8), 0600
	// NodeFile is this node's private key and certificate in one file
	// (PEM: the key, then the certificate), 0600: one rename replaces
	// both, so a crash never leaves a key that does not match its
	// certificate. The store member reads it as both its key and its
	// certificate file.
	NodeFile = "node.pem"
	CertFile = "node.crt" // this node's certificate alone (PEM), 0644, for tools; NodeFile is what tandem reads
	// KeyFile is the private key of a data dir written before NodeFile
	// existed; Load reads it when there is no NodeFile and Save removes it.
	KeyFile = "node.key"
)

// clockSkew is how far before "now" certificates start, so a node whose
// clock is a little behind the signer's accepts them at once.
const clockSkew = 5 * time.Minute

// Limits on what a CSR may ask for.
const (
	maxIPSANs  = 16
	maxDNSSANs = 16
)

// nodeNameRE is a valid node name: a DNS label in lowercase.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validNodeName reports whether name can be a node's name (and so the CN of
// its certificate).
func validNodeName(name string) bool { return nodeNameRE.MatchString(name) }

// CA is a certificate authority: ECDSA P-256, self-signed.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // Cert alone, PEM
}

// NewCA creates a cluster CA valid from five minutes before now for ttl.
// Its CN is "tandem CA <cluster> <yyyy-mm-dd>", so the CAs of a rotation are
// told apart by date. It may sign node certificates only (path length 0).
func NewCA(cluster string, now time.Time, ttl time.Duration) (*CA, error) {
	if strings.TrimSpace(cluster) == "" {
		return nil, errors.New("new CA: the cluster name is empty")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("new CA: lifetime %v is not positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("tandem CA %s %s", cluster, now.UTC().Format(time.DateOnly))},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: parse the new certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCerts(cert)}, nil
}

// ParseCA loads a CA from its certificate and private key (PEM, PKCS#8).
// certPEM may be a trust bundle of several CAs (during a rotation); the CA
// is the one whose public key matches the key. The certificate must be a CA
// allowed to sign certificates.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	var cert *x509.Certificate
	for _, c := range certs {
		if samePublicKey(key.Public(), c.PublicKey) {
			cert = c
			break
		}
	}
	if cert == nil {
		return nil, fmt.Errorf("the CA key matches none of the %d certificate(s) given: the key and the certificate are from different CAs", len(certs))
	}
	if err := checkCA(cert); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCerts(cert)}, nil
}

// checkCA refuses a certificate that cannot act as a CA.
func checkCA(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("certificate %q is not a CA certificate (basic constraints CA:false)", c.Subject.CommonName)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("CA certificate %q may not sign certificates (no certSign key usage)", c.Subject.CommonName)
	}
	return nil
}

// KeyPEM is the CA's private key, PEM (PKCS#8).
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.Key) }

// NewKey generates a node key: ECDSA P-256. It returns the key and its PEM
// (PKCS#8).
func NewKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	p, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, p, nil
}

// NewCSR is a certificate signing request (PEM) for the node name with the
// given addresses and DNS names, signed by key. It checks what Sign will
// check, so a bad request fails on the node that made it.
func NewCSR(key crypto.Signer, name string, ips []net.IP, dnsNames []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: name},
		IPAddresses: ips,
		DNSNames:    dnsNames,
	}
	if err := checkRequest(tmpl, key.Public(), name); err != nil {
		return nil, fmt.Errorf("new CSR: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("new CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// checkRequest checks what a node may ask to be certified for.
func checkRequest(r *x509.CertificateRequest, pub crypto.PublicKey, name string) error {
	if !validNodeName(name) {
		return fmt.Errorf("node name %q is not valid: use 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'", clip(name))
	}
	if cn := r.Subject.CommonName; cn != name {
		return fmt.Errorf("CSR is for %q, not for node %q", clip(cn), name)
	}
	if err := checkKeyType(pub); err != nil {
		return fmt.Errorf("CSR key: %w", err)
	}
	if n := len(r.IPAddresses); n > maxIPSANs {
		return fmt.Errorf("CSR has %d IP addresses, at most %d are allowed", n, maxIPSANs)
	}
	if n := len(r.DNSNames); n > maxDNSSANs {
		return fmt.Errorf("CSR has %d DNS names, at most %d are allowed", n, maxDNSSANs)
	}
	for _, ip := range r.IPAddresses {
		if ip.IsUnspecified() {
			return fmt.Errorf("CSR IP address %s is the unspecified address: list the addresses other nodes reach this node at", ip)
		}
	}
	for _, d := range r.DNSNames {
		if !validHostname(d) {
			return fmt.Errorf("CSR DNS name %q is not a valid hostname (no wildcards, no trailing dot)", clip(d))
		}
	}
	if len(r.URIs) > 0 {
		return fmt.Errorf("CSR has %d URI name(s); node certificates carry IP addresses and DNS names only", len(r.URIs))
	}
	if len(r.EmailAddresses) > 0 {
		return fmt.Errorf("CSR has %d email address(es); node certificates carry IP addresses and DNS names only", len(r.EmailAddresses))
	}
	return nil
}

// validHostname reports whether h is a hostname of letters, digits and
// hyphens in dot-separated labels of 1 to 63 characters.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Sign checks a node's certificate signing request (PEM) and returns its
// certificate (PEM, the leaf only). The request must carry a valid
// signature, an ECDSA P-256 or Ed25519 key, CN == name (a valid node name),
// at most 16 IP and 16 DNS names (valid hostnames) and no URIs or emails.
// The certificate is valid from five minutes before now for ttl, but not
// past the CA's own expiry; it serves both ends of a connection (server and
// client auth) for the CSR's names.
func (ca *CA) Sign(csrPEM []byte, name string, now time.Time, ttl time.Duration) ([]byte, error) {
	block, err := oneBlock(csrPEM, pemCSR)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature does not verify: %w", err)
	}
	if err := checkRequest(csr, csr.PublicKey, name); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("certificate lifetime %v is not positive", ttl)
	}
	notAfter := now.Add(ttl)
	if caEnd := ca.Cert.NotAfter; notAfter.After(caEnd) {
		if !now.Before(caEnd) {
			return nil, fmt.Errorf("the CA %q expired at %s: rotate the CA (tandem ca rotate)", ca.Cert.Subject.CommonName, caEnd.UTC().Format(time.RFC3339))
		}
		notAfter = caEnd
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           csr.IPAddresses,
		DNSNames:              csr.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), nil
}

// serialLimit bounds serial numbers to 128 bits.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// newSerial is a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Sub(serialLimit, big.NewInt(1)))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
