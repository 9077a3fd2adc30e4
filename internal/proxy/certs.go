package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CertSet is the proxy's server certificates, chosen per TLS handshake by
// the name the client asks for (SNI). Each source (a directory, the store)
// replaces its own certificates as they change; handshakes read an
// immutable index, so a reload never holds one up.
type CertSet struct {
	fallback *tls.Certificate // --proxy-tls-cert, nil for none

	mu      sync.Mutex // serialises Set
	sources map[string][]*tls.Certificate
	idx     atomic.Pointer[certIndex]
}

// certIndex maps each lowercased DNS name of the certificates' SANs
// ("web.example.com", "*.example.com") to the certificates naming it,
// newest NotBefore first.
type certIndex map[string][]*tls.Certificate

// NewCertSet returns an empty set that answers a name no certificate
// names with fallback (nil: the handshake fails with the alert
// unrecognized_name).
func NewCertSet(fallback *tls.Certificate) *CertSet {
	s := &CertSet{fallback: fallback, sources: map[string][]*tls.Certificate{}}
	s.idx.Store(&certIndex{})
	return s
}

// Set replaces the certificates of source (each with Leaf set, as
// ParseCert returns them).
func (s *CertSet) Set(source string, certs []*tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sources[source] = certs
	idx := certIndex{}
	for _, list := range s.sources {
		for _, c := range list {
			for _, n := range c.Leaf.DNSNames {
				n = normName(n)
				if !slices.Contains(idx[n], c) {
					idx[n] = append(idx[n], c)
				}
			}
		}
	}
	for _, list := range idx {
		slices.SortStableFunc(list, func(a, b *tls.Certificate) int { return b.Leaf.NotBefore.Compare(a.Leaf.NotBefore) })
	}
	s.idx.Store(&idx)
}

// GetCertificate is the tls.Config hook: the certificate for the
// ClientHello's server name, or (nil, nil) when there is none, which makes
// crypto/tls fail the handshake with unrecognized_name (when the config has
// no Certificates of its own).
func (s *CertSet) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Pick(hello.ServerName, time.Now()), nil
}

// Pick returns the certificate for server name at now: one whose SANs hold
// the name itself, else one with the wildcard one level up (*.example.com
// for a.example.com, not for a.b.example.com); of several, a valid one
// with the newest NotBefore (an expired or not yet valid one only if no
// other names it). Without one, the fallback; nil when there is none.
func (s *CertSet) Pick(name string, now time.Time) *tls.Certificate {
	name = normName(name)
	idx := *s.idx.Load()
	if name != "" && !strings.Contains(name, "*") {
		if c := newestValid(idx[name], now); c != nil {
			return c
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := newestValid(idx["*"+name[i:]], now); c != nil {
				return c
			}
		}
	}
	return s.fallback
}

// newestValid returns the first certificate of list (newest first) valid
// at now, else the first one.
func newestValid(list []*tls.Certificate, now time.Time) *tls.Certificate {
	for _, c := range list {
		if !now.Before(c.Leaf.NotBefore) && !now.After(c.Leaf.NotAfter) {
			return c
		}
	}
	if len(list) > 0 {
		return list[0]
	}
	return nil
}

func normName(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

// ParseCert parses a PEM certificate chain (the server's certificate
// first) and its PEM private key, checks that they match and that the
// certificate names at least one DNS name, and returns it with Leaf set.
func ParseCert(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key do not load as a pair (%w): give the PEM chain, the server's certificate first, and that certificate's own private key", err)
	}
	if c.Leaf == nil {
		return nil, errors.New("certificate: no certificate in the PEM")
	}
	if len(c.Leaf.DNSNames) == 0 {
		return nil, fmt.Errorf("certificate %q names no DNS name (subject alternative name): the proxy picks certificates by them", c.Leaf.Subject.CommonName)
	}
	return &c, nil
}

// Fingerprint is "sha256:" and the lowercase hex SHA-256 of a
// certificate's DER bytes, as `openssl x509 -fingerprint -sha256` shows it
// (without the colons).
func Fingerprint(c *tls.Certificate) string {
	sum := sha256.Sum256(c.Leaf.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var certNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// ValidCertName checks the name of a service certificate (the NAME of
// NAME.crt in --proxy-tls-dir, or of /v1/certs/NAME).
func ValidCertName(name string) error {
	if !certNameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("certificate name %q: use 1-63 lowercase letters, digits, dots or dashes, starting and ending with a letter or digit", name)
	}
	return nil
}

// StoredCert is a service certificate as kept in the store at
// keys.CertKey(name). The key is in clear: every node's proxy must serve
// it (docs/SECURITY.md, "Service certificates").
type StoredCert struct {
	Cert    string    `json:"cert"` // PEM chain, the server's certificate first
	Key     string    `json:"key"`  // PEM private key
	Updated time.Time `json:"updated"`
}

// certSources are the running sources of a proxy's certificates.
type certSources struct {
	dir   *dirCerts   // --proxy-tls-dir, or nil
	store *storeCerts // the store's, or nil
}

// serverTLS builds the proxy's TLS configuration, or returns nil for plain
// HTTP when no certificate source is configured. The directory is read
// once here, so a mistyped one stops the start.
func (p *Proxy) serverTLS() (*tls.Config, *certSources, error) {
	c := p.cfg
	if c.TLSCert == "" && c.TLSDir == "" && !c.TLSStore {
		return nil, nil, nil
	}
	var fallback *tls.Certificate
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("proxy: load TLS certificate: %w", err)
		}
		fallback = &cert
	}
	set := NewCertSet(fallback)
	src := &certSources{}
	if c.TLSDir != "" {
		src.dir = newDirCerts(c.TLSDir, set, p.log)
		if err := src.dir.load(); err != nil {
			return nil, nil, fmt.Errorf("proxy: %w", err)
		}
	}
	if c.Store != nil {
		src.store = newStoreCerts(c.Store, set, p.log)
	}
	return &tls.Config{GetCertificate: set.GetCertificate, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}, src, nil
}

// run follows the sources until ctx ends.
func (s *certSources) run(ctx context.Context) {
	var wg sync.WaitGroup
	if s.dir != nil {
		wg.Go(func() { s.dir.run(ctx) })
	}
	if s.store != nil {
		wg.Go(func() { s.store.run(ctx) })
	}
	wg.Wait()
}

// waitLoaded waits up to d for the store's certificates to be listed, so a
// node just started does not refuse handshakes for names it will serve a
// moment later. Past d the proxy serves what it has.
func (s *certSources) waitLoaded(ctx context.Context, d time.Duration) {
	if s == nil || s.store == nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.store.loaded:
	case <-ctx.Done():
	case <-t.C:
		s.store.log.Warn("proxy: the store's certificates are not listed yet; serving without them until they are", "waited", d)
	}
}
