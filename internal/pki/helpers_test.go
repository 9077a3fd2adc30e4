package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// t0 is the tests' "now".
var t0 = time.Now().Truncate(time.Second)

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// testCA is a new CA valid for a year.
func testCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test", t0, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue is a node key and certificate from ca (PEM).
func issue(t testing.TB, ca *CA, name string, ips []net.IP, ttl time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, name, ips, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Sign(csr, name, t0, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// nodeMaterial is the material of a node named name on 127.0.0.1, its
// certificate from ca, trusting bundle (ca's certificate when nil).
func nodeMaterial(t testing.TB, ca *CA, name string, bundle []byte) *Material {
	t.Helper()
	certPEM, keyPEM := issue(t, ca, name, loopback, 24*time.Hour)
	if bundle == nil {
		bundle = ca.CertPEM
	}
	m, err := Assemble(bundle, certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// handshake is what the server side saw of one connection.
type handshake struct {
	name    string
	named   bool
	resumed bool
	err     error
}

// serve runs a TLS server with cfg on 127.0.0.1:0 until the test ends. Each
// connection's handshake is reported on the channel; after a successful
// one the server writes one byte (so the client receives its session
// tickets) and waits for the client to close.
func serve(t testing.TB, cfg *tls.Config) (string, <-chan handshake) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan handshake, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				cs := tc.ConnectionState()
				name, ok := NodeName(&cs)
				ch <- handshake{name: name, named: ok, resumed: cs.DidResume, err: err}
				if err != nil {
					return
				}
				if _, err := tc.Write([]byte{1}); err != nil {
					return
				}
				var b [1]byte
				_, _ = tc.Read(b[:])
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// dial connects to addr with cfg, completes the handshake and reads the
// server's byte, which also surfaces a refusal the server sends after a
// TLS 1.3 client has finished its side.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return c.ConnectionState(), err
	}
	return c.ConnectionState(), nil
}

// next is the next handshake the server reports, within a deadline.
func next(t testing.TB, ch <-chan handshake) handshake {
	t.Helper()
	select {
	case h := <-ch:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the server reported no handshake within 10s")
		return handshake{}
	}
}

// wantErr fails the test unless err is an error containing want.
func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

// isRefused reports whether err is a TLS handshake refusal (an alert or a
// verification failure), not a test timeout.
func isRefused(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
