package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PEM block types this package reads and writes.
const (
	pemCertificate = "CERTIFICATE"
	pemCSR         = "CERTIFICATE REQUEST"
	pemPrivateKey  = "PRIVATE KEY"
)

// maxPEM bounds what the parsers read: a bundle of a few certificates is a
// few KiB, so anything larger is not ours.
const maxPEM = 1 << 20

// pemBlocks splits data into its PEM blocks strictly: only whitespace may
// come before, between and after the blocks, and each block must decode.
// (pem.Decode alone skips junk and even malformed blocks silently.)
func pemBlocks(data []byte) ([]*pem.Block, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("%d bytes is too large for PEM data (limit %d)", len(data), maxPEM)
	}
	var blocks []*pem.Block
	rest := data
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		n := len(blocks) + 1
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("PEM block %d: found %q where a -----BEGIN line was expected", n, firstLine(rest))
		}
		end := bytes.Index(rest, []byte("\n-----END "))
		if end < 0 {
			return nil, fmt.Errorf("PEM block %d: no -----END line (truncated?)", n)
		}
		end++ // the newline belongs to the block
		if nl := bytes.IndexByte(rest[end:], '\n'); nl >= 0 {
			end += nl + 1
		} else {
			end = len(rest)
		}
		block, tail := pem.Decode(rest[:end])
		if block == nil || len(bytes.TrimSpace(tail)) != 0 {
			return nil, fmt.Errorf("PEM block %d (%q): malformed", n, firstLine(rest))
		}
		blocks = append(blocks, block)
		rest = rest[end:]
	}
	if len(blocks) == 0 {
		return nil, errors.New("no PEM data")
	}
	return blocks, nil
}

// firstLine is the start of data for an error message.
func firstLine(data []byte) string {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		data = data[:i]
	}
	if len(data) > 40 {
		data = data[:40]
	}
	return string(data)
}

// oneBlock is the single PEM block of the given type that data must hold.
func oneBlock(data []byte, typ string) (*pem.Block, error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("found %d PEM blocks, want one %s", len(blocks), typ)
	}
	if blocks[0].Type != typ {
		return nil, fmt.Errorf("found a PEM %s, want a %s", blocks[0].Type, typ)
	}
	return blocks[0], nil
}

// ParseCerts parses every CERTIFICATE block of pemData, in order. It refuses
// data with no certificate, with anything but whitespace between the blocks,
// and with blocks of another type.
func ParseCerts(pemData []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(pemData)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is a %s, want a %s", i+1, b.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// encodeCerts is the PEM of certs, one CERTIFICATE block each.
func encodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// encodeKey is the PEM (PKCS#8) of key.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// parseKey parses a PEM PKCS#8 private key: ECDSA P-256 or Ed25519.
func parseKey(data []byte) (crypto.Signer, error) {
	b, err := oneBlock(data, pemPrivateKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#8 private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T is not a signing key", k)
	}
	if err := checkKeyType(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// checkKeyType accepts the public key types tandem uses: ECDSA P-256 and
// Ed25519.
func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA key on curve %s, want P-256", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%s key, want ECDSA P-256 or Ed25519", keyKind(pub))
	}
}

// keyKind names a public key's algorithm for error messages.
func keyKind(pub crypto.PublicKey) string {
	t := fmt.Sprintf("%T", pub)
	t = strings.TrimPrefix(t, "*")
	if i := strings.IndexByte(t, '.'); i >= 0 {
		t = t[:i]
	}
	return strings.ToUpper(t)
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// pinPrefix starts every pin.
const pinPrefix = "sha256:"

// Pin is the fingerprint a join token carries for the cluster CA: "sha256:"
// followed by the lowercase hex SHA-256 of the certificate's
// SubjectPublicKeyInfo. It names the key, so a CA certificate re-issued for
// the same key keeps its pin.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin parses a pin as Pin writes it: exactly "sha256:" and 64 hex
// digits, nothing around them.
func ParsePin(s string) ([32]byte, error) {
	var sum [32]byte
	hexPart, ok := strings.CutPrefix(s, pinPrefix)
	if !ok {
		return sum, fmt.Errorf("CA pin %q does not start with %q", clip(s), pinPrefix)
	}
	if len(hexPart) != 2*len(sum) {
		return sum, fmt.Errorf("CA pin has %d characters after %q, want %d hex digits", len(hexPart), pinPrefix, 2*len(sum))
	}
	if _, err := hex.Decode(sum[:], []byte(hexPart)); err != nil {
		return sum, fmt.Errorf("CA pin %q: not hex: %w", clip(s), err)
	}
	return sum, nil
}

// clip shortens a user-supplied string for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
