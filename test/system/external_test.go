package system

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
)

// startEtcd runs Debian's etcd server (package etcd-server) as a one-member
// cluster on loopback and returns its client URL. scripts/test.sh installs
// it; a missing binary fails the test rather than skipping it.
func startEtcd(t *testing.T) string {
	t.Helper()
	return startEtcdWith(t, nil)
}

// etcdTLS is an external etcd's TLS: files for its server certificate and
// key, and the CA it checks client certificates against.
type etcdTLS struct {
	cert, key, ca string
	client        *tls.Config
}

// startEtcdWith starts Debian's etcd; with tl, its client URL is https and
// it asks for client certificates signed by tl.ca.
func startEtcdWith(t *testing.T, tl *etcdTLS) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("the etcd server binary is needed (apt-get install etcd-server; scripts/test.sh installs it): %v", err)
	}
	ports := clustertest.FreePorts(t, 2)
	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }
	clientURL := url(ports[1])
	var tlsArgs []string
	var clientTLS *tls.Config
	if tl != nil {
		clientURL = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
		tlsArgs = []string{"--cert-file", tl.cert, "--key-file", tl.key, "--trusted-ca-file", tl.ca, "--client-cert-auth"}
		clientTLS = tl.client
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--name", "external", "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-peer-urls", url(ports[0]), "--initial-advertise-peer-urls", url(ports[0]),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--initial-cluster", "external="+url(ports[0]),
		"--heartbeat-interval", "50", "--election-timeout", "500")
	cmd.Args = append(cmd.Args, tlsArgs...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("etcd log:\n%s", b)
		}
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, TLS: clientTLS, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := clustertest.Poll(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Status(ctx, clientURL)
		return err
	}); err != nil {
		t.Fatalf("etcd did not serve within 30s: %v", err)
	}
	return clientURL
}

// TestExternalStoreTLS points agents at an external etcd that serves TLS and
// asks for client certificates: with --store-ca, --store-cert and
// --store-key they use it; the store refuses a client without a
// certificate.
func TestExternalStoreTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("external", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) (string, string) {
		key, keyPEM, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, name, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Sign(csr, name, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := os.WriteFile(certFile, cert, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey := issue("etcd")
	clientCert, clientKey := issue("agent")
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	testClient := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}
	endpoint := startEtcdWith(t, &etcdTLS{cert: serverCert, key: serverKey, ca: caFile, client: testClient})
	ctx := ctxT(t, time.Minute)

	c := clustertest.Start(t, 2, clustertest.Options{StoreEndpoints: []string{endpoint},
		Flags: []string{"--store-ca", caFile, "--store-cert", clientCert, "--store-key", clientKey}})
	if _, err := c.Nodes[0].Client().Put(ctx, "ext/tls", []byte("v"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Nodes[1].Client().Get(ctx, "ext/tls", client.ReadOptions{})
	if err != nil || got.Value != "v" {
		t.Fatalf("read through the other agent: %v %+v", err, got)
	}
	// Without a client certificate the store refuses.
	noCert, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: &tls.Config{RootCAs: roots}, DialTimeout: 2 * time.Second})
	if err == nil {
		defer noCert.Close()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := noCert.Get(rctx, keys.UserKey("ext/tls")); err == nil {
			t.Fatal("the external store answered a client without a certificate")
		}
	}
}

// TestExternalStore points agents at an existing etcd cluster (the real
// etcd server from Debian's package) with --store-endpoints: they run no
// store member, all are client nodes, and the KV API and liveness work
// through the external store.
func TestExternalStore(t *testing.T) {
	endpoint := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c := clustertest.Start(t, 2, clustertest.Options{StoreEndpoints: []string{endpoint}})
	ms, err := c.Client().Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Members {
		if (m.Name == "n1" || m.Name == "n2") && (m.Role != "client" || !m.Alive) {
			t.Fatalf("agent %s on an external store: role %s alive %v, want an alive client", m.Name, m.Role, m.Alive)
		}
	}
	// The external member is reported as etcd reports it: an alive voter,
	// the leader, with its term and revision; quorum met.
	st, err := c.Client().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Voters != 1 || st.VotersAlive != 1 || st.FaultTolerance != 0 || st.Leader != "external" || st.Term == 0 || st.Revision == 0 || st.TargetVoters != 1 {
		t.Fatalf("status on an external store: %+v, want its one member alive, leading, with term and revision", st)
	}
	for _, m := range ms.Members {
		if m.Name == "external" && (!m.Alive || !m.Leader || m.Role != "voter") {
			t.Fatalf("the external etcd member: %+v, want an alive leading voter", m)
		}
	}
	if _, err := c.Nodes[0].Client().Put(ctx, "ext/k", []byte("v"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Nodes[1].Client().Get(ctx, "ext/k", client.ReadOptions{})
	if err != nil || got.Value != "v" {
		t.Fatalf("read through the other agent: %v %+v", err, got)
	}
	// The key really is in the external etcd, under the user namespace.
	ec, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	resp, err := ec.Get(ctx, keys.UserKey("ext/k"))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("key not in the external store: %v %+v", err, resp)
	}
}
