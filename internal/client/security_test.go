package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/wire"
)

// tlsServer starts an HTTPS server and returns it with a client TLS
// configuration trusting its certificate, as --ca would.
func tlsServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, Options) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg, err := TLSConfig(ca)
	if err != nil {
		t.Fatal(err)
	}
	return srv, Options{TLS: cfg, Token: "tdm1.0123456789abcdef.secret"}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestTLSAndBearerToken: with Options the client speaks HTTPS, trusts the
// given CA and sends the token with every request, watch streams too; a
// token given to Certificate replaces the client's.
func TestTLSAndBearerToken(t *testing.T) {
	var seen []string
	var reqs atomic.Int32
	srv, o := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		if r.TLS == nil {
			t.Errorf("%s %s over plain HTTP", r.Method, r.URL.Path)
		}
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/v1/tokens":
			if r.Method == http.MethodPost {
				var req wire.TokenRequest
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Role != "join" || req.TTL != "1h" {
					t.Errorf("token request %+v: %v", req, err)
				}
				w.WriteHeader(http.StatusCreated)
				_ = json.NewEncoder(w).Encode(wire.TokenCreated{Token: "tdm1.aaaaaaaaaaaaaaaa.s.pin", Info: wire.TokenInfo{ID: "aaaaaaaaaaaaaaaa", Role: "join"}})
				return
			}
			_ = json.NewEncoder(w).Encode(wire.Tokens{Tokens: []wire.TokenInfo{{ID: "aaaaaaaaaaaaaaaa", Role: "read"}}})
		case "/v1/tokens/aaaaaaaaaaaaaaaa":
			w.WriteHeader(http.StatusNoContent)
		case "/v1/cluster/certificate":
			_ = json.NewEncoder(w).Encode(wire.CertificateResponse{Certificate: "cert"})
		case "/v1/watch/k":
			fmt.Fprintln(w, `{"type":"put","key":"k","value":"v","revision":7}`)
		default:
			http.NotFound(w, r)
		}
	})
	cl := NewWithOptions([]string{srv.Listener.Addr().String()}, o)
	c := ctx(t)
	created, err := cl.CreateToken(c, wire.TokenRequest{Role: "join", TTL: "1h"})
	if err != nil || created.Token != "tdm1.aaaaaaaaaaaaaaaa.s.pin" || created.Info.Role != "join" {
		t.Fatalf("CreateToken: %+v %v", created, err)
	}
	toks, err := cl.Tokens(c)
	if err != nil || len(toks.Tokens) != 1 {
		t.Fatalf("Tokens: %+v %v", toks, err)
	}
	if err := cl.RevokeToken(c, "aaaaaaaaaaaaaaaa"); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if err := cl.RevokeToken(c, "bbbbbbbbbbbbbbbb"); !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("RevokeToken of an unknown id: want a 404 *Error, got %v", err)
	}
	if _, err := cl.Certificate(c, "tdm1.join.secret.pin", wire.CertificateRequest{Name: "n2", CSR: "csr"}); err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	wctx, cancel := context.WithCancel(c)
	err = cl.Watch(wctx, "k", false, 0, func(ev wire.WatchEvent) error { cancel(); return nil })
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	bearer := "Bearer " + o.Token
	want := []string{
		"POST /v1/tokens " + bearer,
		"GET /v1/tokens " + bearer,
		"DELETE /v1/tokens/aaaaaaaaaaaaaaaa " + bearer,
		"DELETE /v1/tokens/bbbbbbbbbbbbbbbb " + bearer,
		"POST /v1/cluster/certificate Bearer tdm1.join.secret.pin",
		"GET /v1/watch/k " + bearer,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestRefusalsDoNotFailOver: a 401 or 403 is the answer (every node would
// say the same), so the next address is not tried; the node's message is
// the error.
func TestRefusalsDoNotFailOver(t *testing.T) {
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		var second atomic.Int32
		first, o := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(wire.Error{Error: "token refused: do this"})
		})
		other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { second.Add(1) }))
		t.Cleanup(other.Close)
		cl := NewWithOptions([]string{first.Listener.Addr().String(), other.Listener.Addr().String()}, o)
		_, err := cl.Get(ctx(t), "k", ReadOptions{})
		if !IsStatus(err, code) || err.Error() != "token refused: do this" {
			t.Fatalf("%d: want the node's refusal, got %v", code, err)
		}
		if err := cl.Watch(ctx(t), "k", false, 0, func(wire.WatchEvent) error { return nil }); !IsStatus(err, code) {
			t.Fatalf("%d: watch: want the node's refusal, got %v", code, err)
		}
		if second.Load() != 0 {
			t.Fatalf("%d: the second address was tried", code)
		}
	}
}

// TestTLSMismatches: a certificate from another CA, a plain node for a TLS
// client and a TLS node for a plain client each give an error saying what
// to do, at once.
func TestTLSMismatches(t *testing.T) {
	srv, _ := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {})
	// httptest's servers share one certificate: make another CA's.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := TLSConfig(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	otherCA := Options{TLS: cfg}
	var terr *TLSError
	_, err = NewWithOptions([]string{srv.Listener.Addr().String()}, otherCA).Status(ctx(t))
	if !errors.As(err, &terr) || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("other CA: %v", err)
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	_, err = NewWithOptions([]string{plain.Listener.Addr().String()}, otherCA).Status(ctx(t))
	if !errors.As(err, &terr) || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("TLS client, plain node: %v", err)
	}
	_, err = New([]string{srv.Listener.Addr().String()}).Status(ctx(t))
	if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "over TLS") {
		t.Fatalf("plain client, TLS node: %v", err)
	}
	if _, err := TLSConfig([]byte("not a certificate")); err == nil {
		t.Fatal("TLSConfig took a file with no certificate")
	}
}

// TestTLSSessionsResume: a new connection to a node resumes the TLS session
// of the last one instead of a full handshake (reconnects after a leader
// change or an idle timeout stay cheap).
func TestTLSSessionsResume(t *testing.T) {
	var resumed []bool
	srv, o := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		resumed = append(resumed, r.TLS.DidResume)
		_ = json.NewEncoder(w).Encode(map[string]bool{"ok": true})
	})
	cl := NewWithOptions([]string{srv.Listener.Addr().String()}, o)
	for range 3 {
		if _, err := cl.Health(ctx(t)); err != nil {
			t.Fatal(err)
		}
		cl.http.CloseIdleConnections() // the next request dials again
	}
	if fmt.Sprint(resumed) != "[false true true]" {
		t.Fatalf("resumed per connection: %v, want [false true true]", resumed)
	}
}
