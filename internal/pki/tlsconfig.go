package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Keeper holds a node's current Material for TLS configurations that must
// follow certificate renewal and CA rotation without a restart: the configs
// it makes read the material per handshake.
type Keeper struct {
	cur      atomic.Pointer[Material]
	verified atomic.Pointer[verifiedServers] // for the current material
}

// NewKeeper is a Keeper holding m (not nil).
func NewKeeper(m *Material) *Keeper {
	k := &Keeper{}
	k.Store(m)
	return k
}

// Load is the current material.
func (k *Keeper) Load() *Material { return k.cur.Load() }

// Store makes m (not nil) the material of every handshake from now on.
func (k *Keeper) Store(m *Material) { k.cur.Store(m) }

// errNoMaterial is returned by a Keeper's callbacks before any Store.
var errNoMaterial = errors.New("pki: no TLS material loaded")

// material is the current material or an error.
func (k *Keeper) material() (*Material, error) {
	if m := k.cur.Load(); m != nil {
		return m, nil
	}
	return nil, errNoMaterial
}

// ServerConfig is the TLS configuration of a node's servers (the API, and
// whatever else speaks between nodes): TLS 1.2 or later, the current node
// certificate, and client certificates requested and, when given, verified
// against the current trust bundle (a client without one still connects;
// use NodeName to tell). The trust bundle is read per handshake through
// GetConfigForClient, which starts from a copy of the returned config, so
// settings the caller makes on it (NextProtos, a stricter ClientAuth, a
// VerifyConnection of its own, MinVersion) carry over; settings made on a
// clone of it are not seen. http.Server.ServeTLS adds "h2" and "http/1.1"
// to the config itself, so HTTP/2 works; httptest's StartTLS sets them on
// a clone, so set NextProtos before it. A resumed session is refused once
// its client's CA has left the bundle. Session tickets are on.
func (k *Keeper) ServerConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		GetCertificate: k.getCertificate,
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m, err := k.material()
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.GetCertificate = nil
		c.Certificates = []tls.Certificate{m.Cert}
		c.ClientCAs = m.Roots
		switch c.ClientAuth {
		case tls.RequireAnyClientCert, tls.RequireAndVerifyClientCert:
			c.ClientAuth = tls.RequireAndVerifyClientCert
		default:
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
		next := base.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.DidResume {
				if err := k.checkResumedClient(cs); err != nil {
					return err
				}
			}
			if next != nil {
				return next(cs)
			}
			return nil
		}
		return c, nil
	}
	return base
}

// getCertificate serves the current node certificate.
func (k *Keeper) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m, err := k.material()
	if err != nil {
		return nil, err
	}
	return &m.Cert, nil
}

// checkResumedClient refuses a resumed session whose client certificate
// chained, when the session began, to a CA the current bundle no longer
// holds. (Go checks a resumed client certificate's expiry, not its chain.)
func (k *Keeper) checkResumedClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	m, err := k.material()
	if err != nil {
		return err
	}
	for _, chain := range cs.VerifiedChains {
		if len(chain) > 0 && m.HasCA(chain[len(chain)-1]) {
			return nil
		}
	}
	return errors.New("pki: the resumed session's client certificate is from a CA no longer trusted")
}

// HasCA reports whether c is in the trust bundle.
func (m *Material) HasCA(c *x509.Certificate) bool {
	for _, ca := range m.CAs {
		if bytes.Equal(ca.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// ClientConfig is the TLS configuration for a node connecting to another
// node: it presents the current node certificate and verifies the server
// against the current trust bundle, per handshake (so it follows renewal
// and rotation), including on resumed sessions. serverName is the host the
// server is reached at, a DNS name or an IP address (a "host:port" is cut
// to its host); the server's certificate must name it. With serverName ""
// the DNS name a caller's clone sends as SNI (http.Transport and gRPC set
// it from the address) is checked when there is one; an IP address is never
// sent as SNI, so then only the chain is: any node of the cluster is
// accepted. Sessions
// are resumed through an LRU cache of 256 sessions, keyed by the server
// name (or the address when there is none).
//
// The verification is done in VerifyConnection (InsecureSkipVerify is set
// because tls.Config cannot change its roots per handshake), so
// ConnectionState.VerifiedChains is empty on this side.
func (k *Keeper) ClientConfig(serverName string) *tls.Config {
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: true, // verified in VerifyConnection against the current roots
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m, err := k.material()
			if err != nil {
				return nil, err
			}
			return &m.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			m, err := k.material()
			if err != nil {
				return err
			}
			name := host
			if name == "" {
				name = cs.ServerName
			}
			return k.verifyServer(m, cs.PeerCertificates, name, time.Now())
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
}

// verifyServer is verifyChain and a check that the leaf is for name (a DNS
// name or an IP address) unless name is "". A leaf that verified against
// the same material before is not verified again while its chain is valid:
// that signature check would be most of a resumed handshake's cost.
func (k *Keeper) verifyServer(m *Material, peer []*x509.Certificate, name string, now time.Time) error {
	if len(peer) == 0 {
		return errors.New("pki: the server sent no certificate")
	}
	leaf := peer[0]
	v := k.verified.Load()
	if v == nil || v.m != m {
		fresh := &verifiedServers{m: m, valid: make(map[[32]byte]validity)}
		k.verified.CompareAndSwap(v, fresh)
		v = fresh
	}
	sum := sha256.Sum256(leaf.Raw)
	if !v.has(sum, now) {
		chain, err := verifyChain(peer, m.Roots, now)
		if err != nil {
			return err
		}
		v.add(sum, chain)
	}
	if name == "" {
		return nil
	}
	if err := leaf.VerifyHostname(name); err != nil {
		return fmt.Errorf("pki: server certificate %q: %w", leaf.Subject.CommonName, err)
	}
	return nil
}

// verifyChain verifies a server's chain against roots, for server auth, and
// returns the chain found.
func verifyChain(peer []*x509.Certificate, roots *x509.CertPool, now time.Time) ([]*x509.Certificate, error) {
	if len(peer) == 0 {
		return nil, errors.New("pki: the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	chains, err := peer[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("pki: server certificate %q: %w", peer[0].Subject.CommonName, err)
	}
	return chains[0], nil
}

// maxVerified bounds a verifiedServers; past it, it starts over.
const maxVerified = 1024

// verifiedServers remembers the server certificates (by the SHA-256 of
// their DER) whose chains verified against one Material, and until when
// those chains are valid.
type verifiedServers struct {
	m     *Material
	mu    sync.Mutex
	valid map[[32]byte]validity
}

// validity is when every certificate of a chain is valid.
type validity struct{ from, until time.Time }

// has reports whether the certificate's chain verified and is valid at now.
func (v *verifiedServers) has(sum [32]byte, now time.Time) bool {
	v.mu.Lock()
	w, ok := v.valid[sum]
	v.mu.Unlock()
	return ok && !now.Before(w.from) && !now.After(w.until)
}

// add remembers a verified chain, its leaf first.
func (v *verifiedServers) add(sum [32]byte, chain []*x509.Certificate) {
	w := validity{from: chain[0].NotBefore, until: chain[0].NotAfter}
	for _, c := range chain[1:] {
		if c.NotBefore.After(w.from) {
			w.from = c.NotBefore
		}
		if c.NotAfter.Before(w.until) {
			w.until = c.NotAfter
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.valid) >= maxVerified {
		clear(v.valid)
	}
	v.valid[sum] = w
}

// NodeName is the node name of a verified peer: the CN of the verified
// leaf. ok is false when the connection has no verified chain (the peer sent
// no certificate) or the CN is not a node name. On the server side of
// ServerConfig the chain is verified against the trust bundle.
func NodeName(cs *tls.ConnectionState) (string, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	cn := cs.VerifiedChains[0][0].Subject.CommonName
	if !validNodeName(cn) {
		return "", false
	}
	return cn, true
}

// RenewAt is when a certificate should be renewed: two thirds into its
// lifetime, counted from when it was signed (its NotBefore less the
// clockSkew it was back-dated by), so that a short-lived certificate is not
// renewed as soon as it is made.
func RenewAt(cert *x509.Certificate) time.Time {
	start := cert.NotBefore.Add(clockSkew)
	if !start.Before(cert.NotAfter) {
		start = cert.NotBefore
	}
	return start.Add(cert.NotAfter.Sub(start) / 3 * 2)
}

// ErrPinMismatch is a server whose chain holds no CA with the pinned key:
// retrying cannot help.
var ErrPinMismatch = errors.New("pki: the server's chain has no CA with the pinned key")

// JoinClientConfig is for a node that holds only a join token, which pins
// the cluster CA's key (see Pin): with no trust bundle yet, it accepts a
// server whose chain holds a CA certificate with that key and whose leaf
// verifies against that CA. It presents no client certificate.
func JoinClientConfig(pin string) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified in VerifyConnection against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: the server sent no certificate")
			}
			for _, c := range cs.PeerCertificates[1:] {
				if sha256.Sum256(c.RawSubjectPublicKeyInfo) != want || checkCA(c) != nil {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(c)
				_, err := verifyChain(cs.PeerCertificates[:1], roots, time.Now())
				return err
			}
			return fmt.Errorf("%w %s: wrong cluster, or the join token is stale", ErrPinMismatch, pin)
		},
	}, nil
}

// CertsClientConfig is for the CLI and other API clients: it trusts the CA
// certificates in caPEM and presents no client certificate. The server's
// name is verified as usual (tls.Config.ServerName, or the URL's host).
func CertsClientConfig(caPEM []byte) (*tls.Config, error) {
	certs, err := ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
