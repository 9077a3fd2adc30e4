package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestMutualTLS(t *testing.T) {
	ca := testCA(t)
	srv := NewKeeper(nodeMaterial(t, ca, "server", nil))
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	addr, hs := serve(t, srv.ServerConfig())

	cs, err := dial(addr, cli.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if h := next(t, hs); h.err != nil || !h.named || h.name != "client" {
		t.Fatalf("server saw %+v, want the client named", h)
	}
	if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != "server" {
		t.Errorf("client saw server %v", cs.PeerCertificates)
	}
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("version %x", cs.Version)
	}

	// host:port is cut to its host; "" checks the chain only.
	for _, name := range []string{"127.0.0.1:1", ""} {
		if _, err := dial(addr, cli.ClientConfig(name)); err != nil {
			t.Fatalf("ClientConfig(%q): %v", name, err)
		}
		next(t, hs)
	}

	// A client without a certificate connects but is not a node.
	plain, err := CertsClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	plain.ServerName = "127.0.0.1"
	if _, err := dial(addr, plain); err != nil {
		t.Fatal(err)
	}
	if h := next(t, hs); h.err != nil || h.named {
		t.Fatalf("server saw %+v, want an unnamed client", h)
	}
	// ...and TLS 1.1 is refused.
	old := plain.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := dial(addr, old); !isRefused(err) {
		t.Fatalf("TLS 1.1 client: %v", err)
	}
	next(t, hs)
}

func TestUnknownCARefused(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	srv := NewKeeper(nodeMaterial(t, ca, "server", nil))
	addr, hs := serve(t, srv.ServerConfig())

	// A client certificate from another CA: the server refuses the handshake.
	stranger := NewKeeper(nodeMaterial(t, other, "stranger", append(append([]byte{}, other.CertPEM...), ca.CertPEM...)))
	if _, err := dial(addr, stranger.ClientConfig("127.0.0.1")); !isRefused(err) {
		t.Fatalf("client from another CA: %v, want refused", err)
	}
	if h := next(t, hs); h.err == nil {
		t.Fatalf("server accepted a client from another CA: %+v", h)
	}

	// A server from another CA: the client refuses it.
	addr2, hs2 := serve(t, NewKeeper(nodeMaterial(t, other, "server", nil)).ServerConfig())
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	_, err := dial(addr2, cli.ClientConfig("127.0.0.1"))
	wantErr(t, err, "unknown authority")
	next(t, hs2)
}

func TestHostnameVerification(t *testing.T) {
	ca := testCA(t)
	// The server's certificate is for 10.9.9.9 and srv.example, not 127.0.0.1.
	key, keyPEM, _ := NewKey()
	csr, err := NewCSR(key, "server", []net.IP{net.IPv4(10, 9, 9, 9)}, []string{"srv.example"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, "server", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Assemble(ca.CertPEM, certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, hs := serve(t, NewKeeper(m).ServerConfig())
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))

	_, err = dial(addr, cli.ClientConfig("127.0.0.1"))
	wantErr(t, err, "127.0.0.1")
	next(t, hs)
	_, err = dial(addr, cli.ClientConfig("other.example"))
	wantErr(t, err, "other.example")
	next(t, hs)
	for _, name := range []string{"10.9.9.9", "srv.example"} {
		if _, err := dial(addr, cli.ClientConfig(name)); err != nil {
			t.Errorf("ClientConfig(%q): %v", name, err)
		}
		next(t, hs)
	}
}

func TestKeeperFollowsRenewalAndRotation(t *testing.T) {
	ca := testCA(t)
	srv := NewKeeper(nodeMaterial(t, ca, "server", nil))
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	scfg, ccfg := srv.ServerConfig(), cli.ClientConfig("127.0.0.1")
	ccfg.ClientSessionCache = nil // every handshake full, to see the certificates
	addr, hs := serve(t, scfg)

	serial := func() string {
		t.Helper()
		cs, err := dial(addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		if h := next(t, hs); h.err != nil {
			t.Fatal(h.err)
		}
		return cs.PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	srv.Store(nodeMaterial(t, ca, "server", nil)) // renewal
	if second := serial(); second == first {
		t.Fatal("the handshake after Store still served the old certificate")
	}

	// Rotation: both sides trust old and new; the server moves to the new CA;
	// then the client drops the old CA, and still connects.
	ca2 := testCA(t)
	both := append(append([]byte{}, ca.CertPEM...), ca2.CertPEM...)
	cli.Store(nodeMaterial(t, ca, "client", both))
	srv.Store(nodeMaterial(t, ca2, "server", both))
	serial()
	cli.Store(nodeMaterial(t, ca2, "client", ca2.CertPEM))
	serial()

	// A server that no longer trusts the client's CA refuses it at once.
	srv.Store(nodeMaterial(t, ca2, "server", ca2.CertPEM))
	cli.Store(nodeMaterial(t, ca, "client", both))
	if _, err := dial(addr, ccfg); !isRefused(err) {
		t.Fatalf("client from a retired CA: %v", err)
	}
	if h := next(t, hs); h.err == nil {
		t.Fatal("server accepted a client from a retired CA")
	}
}

func TestSessionResumption(t *testing.T) {
	ca := testCA(t)
	srv := NewKeeper(nodeMaterial(t, ca, "server", nil))
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	addr, hs := serve(t, srv.ServerConfig())
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		ccfg := cli.ClientConfig("127.0.0.1")
		ccfg.MaxVersion = v
		cs, err := dial(addr, ccfg)
		if err != nil || cs.DidResume || cs.Version != v {
			t.Fatalf("TLS %x first connection: version %x resumed %v, %v", v, cs.Version, cs.DidResume, err)
		}
		next(t, hs)
		cs, err = dial(addr, ccfg)
		if err != nil || !cs.DidResume {
			t.Fatalf("TLS %x second connection: resumed %v, %v", v, cs.DidResume, err)
		}
		h := next(t, hs)
		if h.err != nil || !h.resumed || !h.named || h.name != "client" {
			t.Fatalf("TLS %x: server saw %+v on the resumed connection, want the client named", v, h)
		}
	}
	ccfg := cli.ClientConfig("127.0.0.1")
	if _, err := dial(addr, ccfg); err != nil {
		t.Fatal(err)
	}
	next(t, hs)

	// Retiring the client's CA on the server ends its resumed sessions too.
	ca2 := testCA(t)
	srv.Store(nodeMaterial(t, ca, "server", append(append([]byte{}, ca.CertPEM...), ca2.CertPEM...)))
	if cs, err := dial(addr, ccfg); err != nil || !cs.DidResume {
		t.Fatalf("resumed %v, %v", cs.DidResume, err)
	}
	next(t, hs)
	certPEM, keyPEM := issue(t, ca2, "server", loopback, time.Hour)
	m, err := Assemble(append(append([]byte{}, ca2.CertPEM...), ca.CertPEM[:0]...), certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Store(m)
	if _, err := dial(addr, ccfg); !isRefused(err) {
		t.Fatalf("resuming with a retired client CA: %v", err)
	}
	if h := next(t, hs); h.err == nil {
		t.Fatal("server resumed a session of a client from a retired CA")
	}

	// And the client refuses to resume with a server its roots no longer hold.
	srv2 := NewKeeper(nodeMaterial(t, ca, "server", nil))
	addr2, hs2 := serve(t, srv2.ServerConfig())
	ccfg2 := cli.ClientConfig("127.0.0.1")
	if _, err := dial(addr2, ccfg2); err != nil {
		t.Fatal(err)
	}
	next(t, hs2)
	cli.Store(nodeMaterial(t, ca2, "client", ca2.CertPEM))
	_, err = dial(addr2, ccfg2)
	wantErr(t, err, "unknown authority")
	next(t, hs2)
}

func TestJoinClientConfig(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	addr, hs := serve(t, NewKeeper(nodeMaterial(t, ca, "server", nil)).ServerConfig())

	cfg, err := JoinClientConfig(Pin(ca.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(addr, cfg); err != nil {
		t.Fatalf("right pin: %v", err)
	}
	if h := next(t, hs); h.err != nil || h.named {
		t.Fatalf("server saw %+v, want an unnamed joiner", h)
	}

	cfg, err = JoinClientConfig(Pin(other.Cert))
	if err != nil {
		t.Fatal(err)
	}
	_, err = dial(addr, cfg)
	wantErr(t, err, "no CA with the pinned key")
	next(t, hs)

	// A pin of the server's own leaf key is not a CA pin.
	m := nodeMaterial(t, ca, "server2", nil)
	addr2, hs2 := serve(t, NewKeeper(m).ServerConfig())
	cfg, _ = JoinClientConfig(Pin(m.Cert.Leaf))
	_, err = dial(addr2, cfg)
	wantErr(t, err, "no CA with the pinned key")
	next(t, hs2)

	_, err = JoinClientConfig("sha256:zz")
	wantErr(t, err, "hex digits")
}

func TestHTTPServer(t *testing.T) {
	ca := testCA(t)
	srv := NewKeeper(nodeMaterial(t, ca, "server", nil))
	// As the API serves: http.Server.ServeTLS adds h2 to the config itself.
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name, ok := NodeName(r.TLS)
			if !ok {
				name = "-"
			}
			_, _ = io.WriteString(w, r.Proto+" "+name)
		}),
		TLSConfig: srv.ServerConfig(),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })
	url := "https://" + ln.Addr().String()

	get := func(cfg *tls.Config) string {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	if got := get(cli.ClientConfig("")); got != "HTTP/2.0 client" {
		t.Errorf("node client got %q", got)
	}
	cfg, err := CertsClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(cfg); got != "HTTP/2.0 -" {
		t.Errorf("CLI client got %q", got)
	}
}

func TestVerifiedServersWindow(t *testing.T) {
	ca := testCA(t)
	m := nodeMaterial(t, ca, "server", nil)
	k := NewKeeper(m)
	peer := [][]byte{m.Cert.Certificate[0]}
	leaf := m.Cert.Leaf
	if err := k.verifyServer(m, []*x509.Certificate{leaf}, "127.0.0.1", t0); err != nil {
		t.Fatal(err)
	}
	v := k.verified.Load()
	sum := sha256.Sum256(peer[0])
	if v == nil || v.m != m || !v.has(sum, t0) {
		t.Fatal("a verified server certificate is not remembered")
	}
	if v.has(sum, leaf.NotAfter.Add(time.Second)) || v.has(sum, leaf.NotBefore.Add(-time.Second)) {
		t.Error("remembered outside the certificate's validity")
	}
	// Past its expiry the certificate is verified again, and refused.
	wantErr(t, k.verifyServer(m, []*x509.Certificate{leaf}, "", leaf.NotAfter.Add(time.Second)), "expired")
	// A cached chain still gets its hostname checked.
	wantErr(t, k.verifyServer(m, []*x509.Certificate{leaf}, "10.1.1.1", t0), "10.1.1.1")
	// New material starts a new cache.
	m2 := nodeMaterial(t, testCA(t), "server", nil)
	k.Store(m2)
	wantErr(t, k.verifyServer(m2, []*x509.Certificate{leaf}, "", t0), "unknown authority")
	if k.verified.Load().m != m2 {
		t.Error("the cache is not for the current material")
	}
}

func TestServerConfigSettingsCarryOver(t *testing.T) {
	ca := testCA(t)
	scfg := NewKeeper(nodeMaterial(t, ca, "server", nil)).ServerConfig()
	scfg.ClientAuth = tls.RequireAndVerifyClientCert
	scfg.NextProtos = []string{"x-tandem"}
	addr, hs := serve(t, scfg)

	plain, err := CertsClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	plain.ServerName = "127.0.0.1"
	if _, err := dial(addr, plain); !isRefused(err) {
		t.Fatalf("client without a certificate: %v, want refused", err)
	}
	if h := next(t, hs); h.err == nil {
		t.Fatal("server accepted a client without a certificate under RequireAndVerifyClientCert")
	}

	ccfg := NewKeeper(nodeMaterial(t, ca, "client", nil)).ClientConfig("127.0.0.1")
	ccfg.NextProtos = []string{"x-tandem"}
	cs, err := dial(addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if cs.NegotiatedProtocol != "x-tandem" {
		t.Errorf("negotiated %q, want the server config's NextProtos", cs.NegotiatedProtocol)
	}
	if h := next(t, hs); h.err != nil || h.name != "client" {
		t.Fatalf("server saw %+v", h)
	}
}

func TestKeeperWithoutMaterial(t *testing.T) {
	ca := testCA(t)
	k := NewKeeper(nil)
	if k.Load() != nil {
		t.Fatal("Load of an empty Keeper")
	}
	addr, hs := serve(t, k.ServerConfig())
	cli := NewKeeper(nodeMaterial(t, ca, "client", nil))
	if _, err := dial(addr, cli.ClientConfig("127.0.0.1")); !isRefused(err) {
		t.Fatalf("server without material: %v", err)
	}
	wantErr(t, next(t, hs).err, "no TLS material")

	m := nodeMaterial(t, ca, "server", nil)
	k.Store(m)
	if k.Load() != m {
		t.Fatal("Load is not what was stored")
	}
	if _, err := dial(addr, cli.ClientConfig("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	next(t, hs)
	if _, err := dial(addr, NewKeeper(nil).ClientConfig("127.0.0.1")); !isRefused(err) {
		t.Fatalf("client without material: %v", err)
	}
	next(t, hs)
}
