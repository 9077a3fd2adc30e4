package store_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/store"
)

// testNode is one store member of a test, on loopback ports.
type testNode struct {
	name                string
	dir                 string
	peerPort, storePort int
	mat                 *pki.Material   // nil: plain
	tls                 *store.TLSFiles // the files of mat
}

// newTestNode is a node with a certificate of ca, or a plain one when ca
// is nil.
func newTestNode(t testing.TB, name string, ca *pki.CA) testNode {
	t.Helper()
	ports := clustertest.FreePorts(t, 2)
	n := testNode{name: name, dir: t.TempDir(), peerPort: ports[0], storePort: ports[1]}
	if ca != nil {
		n.mat = nodeMaterial(t, ca, name)
		d := pki.Dir(filepath.Join(n.dir, "tls"))
		if err := d.Save(n.mat); err != nil {
			t.Fatal(err)
		}
		n.tls = &store.TLSFiles{CertFile: d.Path(pki.NodeFile), KeyFile: d.Path(pki.NodeFile), CAFile: d.Path(pki.CAFile)}
	}
	return n
}

func (n testNode) scheme() string {
	if n.tls != nil {
		return "https"
	}
	return "http"
}

func (n testNode) peerURL() string { return fmt.Sprintf("%s://127.0.0.1:%d", n.scheme(), n.peerPort) }
func (n testNode) clientURL() string {
	return fmt.Sprintf("%s://127.0.0.1:%d", n.scheme(), n.storePort)
}

func (n testNode) config(initialCluster string) store.MemberConfig {
	return store.MemberConfig{
		Name: n.name, Dir: filepath.Join(n.dir, "store"), BindIP: "127.0.0.1",
		PeerURL: n.peerURL(), ClientURL: n.clientURL(),
		PeerPort: n.peerPort, StorePort: n.storePort,
		Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond,
		InitialCluster: initialCluster, TLS: n.tls,
	}
}

// clientTLS is the client side of n's node certificate.
func (n testNode) clientTLS() *tls.Config { return pki.NewKeeper(n.mat).ClientConfig("") }

func start(t testing.TB, mc store.MemberConfig) *store.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := store.StartMember(ctx, mc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func remote(t testing.TB, endpoint string, cfg *tls.Config) *store.Store {
	t.Helper()
	st, err := store.NewRemote([]string{endpoint}, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func put(st *store.Store, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := st.Client().Put(ctx, "k", "v")
	return err
}

// versionGet asks the member's port at base for its version with cfg
// (both ports answer /version over HTTP).
func versionGet(base string, cfg *tls.Config) error {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(base + "/version")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// TestTLSMember: a member with TLS files serves https:// on both ports, to
// a client with a certificate of its CA only.
func TestTLSMember(t *testing.T) {
	ca := newTestCA(t)
	n := newTestNode(t, "n1", ca)
	start(t, n.config(""))

	// Another node of the same CA (its certificate, not the member's).
	client := newTestNode(t, "c1", ca)
	if err := put(remote(t, n.clientURL(), client.clientTLS()), 10*time.Second); err != nil {
		t.Fatalf("a client with a certificate of the store's CA: %v", err)
	}
	// The store port serves gRPC alone (put above); the peer port HTTP.
	if err := versionGet(n.peerURL(), client.clientTLS()); err != nil {
		t.Fatalf("%s, certificate of the store's CA: %v", n.peerURL(), err)
	}

	// A certificate of another CA (the client trusts the store's CA too,
	// so only the store can refuse).
	stranger := pki.NewKeeper(nodeMaterial(t, newTestCA(t), "x1", ca)).ClientConfig("")
	noCert, err := pki.CertsClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*tls.Config{"another CA's certificate": stranger, "no certificate": noCert} {
		if err := put(remote(t, n.clientURL(), cfg), 2*time.Second); err == nil {
			t.Errorf("client port, %s: the write succeeded", name)
		} else {
			t.Logf("client port, %s: %v", name, err)
		}
		if err := versionGet(n.peerURL(), cfg); err == nil {
			t.Errorf("%s, %s: the request succeeded", n.peerURL(), name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	// Plain http:// to the https:// port.
	plain := strings.Replace(n.clientURL(), "https://", "http://", 1)
	if err := put(remote(t, plain, nil), 2*time.Second); err == nil {
		t.Error("plain http:// to the TLS client port: the write succeeded")
	}
}

// TestTLSRenewal: the member serves a certificate written over its files
// (pki.Dir.Save, atomic renames) from the next connection on, on both
// ports; a CA added to the trust bundle is trusted only once the member
// restarts (etcd reads the CA file when it starts).
func TestTLSRenewal(t *testing.T) {
	ca := newTestCA(t)
	n := newTestNode(t, "n1", ca)
	m := start(t, n.config(""))
	d := pki.Dir(filepath.Join(n.dir, "tls"))
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", n.peerPort), fmt.Sprintf("127.0.0.1:%d", n.storePort)}

	// servedSerial is the serial of the certificate a port serves now.
	servedSerial := func(addr string, cfg *tls.Config) (string, error) {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"h2"} // the store port speaks gRPC alone, which insists on it
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		// With TLS 1.3 the server checks the client's certificate after the
		// client's handshake is done: a refusal shows on the first read.
		if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			return "", err
		}
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return "", err
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	client := newTestNode(t, "c1", ca)
	for _, a := range addrs {
		if got, err := servedSerial(a, client.clientTLS()); err != nil || got != n.mat.Cert.Leaf.SerialNumber.String() {
			t.Fatalf("%s: serves %s (%v), want the first certificate %s", a, got, err, n.mat.Cert.Leaf.SerialNumber)
		}
	}
	renewed := nodeMaterial(t, ca, "n1")
	if err := d.Save(renewed); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if got, err := servedSerial(a, client.clientTLS()); err != nil || got != renewed.Cert.Leaf.SerialNumber.String() {
			t.Errorf("%s: after renewal serves %s (%v), want the renewed certificate %s", a, got, err, renewed.Cert.Leaf.SerialNumber)
		}
	}

	// A CA rotation's first step: the bundle holds the old and the new CA.
	next := newTestCA(t)
	if err := d.Save(&pki.Material{CAPEM: append(append([]byte(nil), ca.CertPEM...), next.CertPEM...)}); err != nil {
		t.Fatal(err)
	}
	newcomer := pki.NewKeeper(nodeMaterial(t, next, "c2", ca)).ClientConfig("")
	for _, a := range addrs {
		if _, err := servedSerial(a, newcomer); err == nil {
			t.Errorf("%s: a certificate of the new CA passed before the member restarted (does etcd now reload its CA file? then update TLSFiles' comment)", a)
		}
	}
	// The store restarts its member in place: it then trusts the bundle,
	// and serves requests as before.
	st, err := store.NewLocal(m, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := st.Client().Put(ctx, "before", "1"); err != nil {
		t.Fatal(err)
	}
	if err := st.RestartMember(ctx, func(ctx context.Context) (*store.Member, error) {
		return store.StartMember(ctx, n.config(""), quiet())
	}); err != nil {
		t.Fatal(err)
	}
	if st.Member() == m {
		t.Fatal("RestartMember kept the old member")
	}
	bundle, err := os.ReadFile(d.Path(pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.Member().Trusted(), bundle) || bytes.Equal(m.Trusted(), bundle) {
		t.Error("Trusted does not tell the bundle each member started with")
	}
	if got, err := st.Client().Get(ctx, "before"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("read after the restart: %v %v", got, err)
	}
	for _, a := range addrs {
		if _, err := servedSerial(a, newcomer); err != nil {
			t.Errorf("%s: a certificate of the new CA, after the restart: %v", a, err)
		}
	}
}

// TestMemberURLScheme: the advertised URLs' scheme must match the TLS
// setting.
func TestMemberURLScheme(t *testing.T) {
	n := newTestNode(t, "n1", newTestCA(t))
	mc := n.config("")
	mc.PeerURL = strings.Replace(mc.PeerURL, "https://", "http://", 1)
	if _, err := store.StartMember(context.Background(), mc, quiet()); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("TLS with an http:// peer URL: got %v, want an error asking for https://", err)
	}
	mc = n.config("")
	mc.TLS = nil
	if _, err := store.StartMember(context.Background(), mc, quiet()); err == nil || !strings.Contains(err.Error(), "http://") {
		t.Errorf("https:// URLs without TLS files: got %v, want an error asking for http://", err)
	}
}

// TestTLSClusterOfTwo: a second member joins over TLS as a learner (as
// cluster.Join does), is promoted, and both serve a TLS client; a voter's
// status probe of the other voter goes over TLS too.
func TestTLSClusterOfTwo(t *testing.T) {
	ca := newTestCA(t)
	n1, n2 := newTestNode(t, "n1", ca), newTestNode(t, "n2", ca)
	m1 := start(t, n1.config(""))
	c := remote(t, n1.clientURL(), n1.clientTLS())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	added, err := c.Client().MemberAddAsLearner(ctx, []string{n2.peerURL()})
	if err != nil {
		t.Fatal(err)
	}
	m2 := start(t, n2.config("n1="+n1.peerURL()+",n2="+n2.peerURL()))
	for {
		_, err := c.Client().MemberPromote(ctx, added.Member.ID)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("promote the TLS learner: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	tls2, err := m2.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	local2, err := store.NewLocal(m2, tls2, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer local2.Close()
	if _, err := local2.Client().Put(ctx, "from", "n2"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Client().Get(ctx, "from") // linearizable, through n1
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "n2" {
		t.Fatalf("read n2's write on n1: %v %v", got, err)
	}

	tls1, err := m1.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	local1, err := store.NewLocal(m1, tls1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer local1.Close()
	if _, err := local1.MemberStatus(ctx, n2.clientURL()); err != nil {
		t.Errorf("n1's status probe of n2 over TLS: %v", err)
	}
}

// BenchmarkRemoteStore measures a remote client's requests to a one-member
// store, plain and with mutual TLS: a Put (one fsync) and a serializable
// Get (no disk), one at a time and from many goroutines.
func BenchmarkRemoteStore(b *testing.B) {
	for _, secure := range []bool{false, true} {
		var ca *pki.CA
		mode := "plain"
		if secure {
			ca, mode = newTestCA(b), "tls"
		}
		n := newTestNode(b, "n1", ca)
		start(b, n.config(""))
		var cfg *tls.Config
		if secure {
			cfg = n.clientTLS()
		}
		c := remote(b, n.clientURL(), cfg).Client()
		ctx := context.Background()
		value := strings.Repeat("v", 128)
		if _, err := c.Put(ctx, "k", value); err != nil {
			b.Fatal(err)
		}
		ops := map[string]func() error{
			"put": func() error { _, err := c.Put(ctx, "k", value); return err },
			"get": func() error { _, err := c.Get(ctx, "k", clientv3.WithSerializable()); return err },
		}
		for _, op := range []string{"put", "get"} {
			b.Run(mode+"/"+op, func(b *testing.B) {
				for b.Loop() {
					if err := ops[op](); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(mode+"/"+op+"-parallel", func(b *testing.B) {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := ops[op](); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
