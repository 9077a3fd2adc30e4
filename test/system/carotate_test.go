package system

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/agent"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestCARotation rotates the CA of a three-node cluster with `tandem ca
// rotate` while clients write through every node, and checks that no write
// failed, that every node trusts and shows only the new CA afterwards, that
// a certificate the old CA signs is refused by every store port and API
// (the store members reloaded their trust), that the CLI's CA file was
// updated, and that a node joins with a join token made after it.
func TestCARotation(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{})
	ctx := ctxT(t, 5*time.Minute)
	n1 := c.Nodes[0]
	old, err := pki.Dir(filepath.Join(n1.DataDir, "tls")).Load()
	if err != nil {
		t.Fatal(err)
	}
	if old.CA == nil {
		t.Fatal("the first node holds no CA key")
	}

	// A user's copy of the CA file, which the CLI updates at the end.
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, old.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TANDEM_CA", caFile)
	t.Setenv("TANDEM_TOKEN_FILE", filepath.Join(n1.DataDir, agent.AdminTokenFile))

	// A certificate the old CA signed for a stranger: the store takes it
	// before the rotation (so refusing it after means something).
	intruder := signedBy(t, old.CA, "intruder")
	if err := storePut(ctx, n1, intruder, "/intruder/before"); err != nil {
		t.Fatalf("before the rotation, the store refused a certificate of its CA: %v", err)
	}

	// Writers through every node, trusting the old CA and, once the
	// rotation starts, the new one too (as `tandem ca rotate` does).
	var roots atomic.Pointer[x509.CertPool]
	roots.Store(old.Roots)
	var writes, failed, retried atomic.Int64
	var firstErrs []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		cl := client.NewWithOptions([]string{nd.API}, client.Options{TLS: followingTLS(&roots), Token: c.AdminToken()})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				// As a client does: a write that fails (a leader change
				// when the leader's member restarts) is sent again.
				var err error
				for try := 0; try < 3; try++ {
					if try > 0 {
						retried.Add(1)
						time.Sleep(200 * time.Millisecond)
					}
					wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err = cl.Put(wctx, fmt.Sprintf("rotation/%d/%d", i, j), []byte("x"), client.WriteOptions{})
					cancel()
					if err == nil {
						break
					}
				}
				writes.Add(1)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, fmt.Sprintf("%s: %v", nd.Name, err))
					}
					mu.Unlock()
				}
			}
		}()
	}

	wg.Add(1)
	go func() { // trust the new CA too, once the rotation has made it
		defer wg.Done()
		for {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.ClientFor(n1.API).CA(rctx)
			cancel()
			if err == nil && st.Rotation != nil {
				pool := old.Roots.Clone()
				pool.AppendCertsFromPEM([]byte(st.Rotation.NewCA))
				roots.Store(pool)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	out := mustTandem(t, "ca", "rotate", "--addr", n1.API, "--wait", "3m")
	t.Logf("tandem ca rotate:\n%s", out)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || writes.Load() < 30 {
		t.Fatalf("%d of %d writes during the rotation failed three times: %v", failed.Load(), writes.Load(), firstErrs)
	}
	t.Logf("%d writes during the rotation, none failed; %d attempts were sent again", writes.Load(), retried.Load())
	if !strings.Contains(out, "phase retire") || !strings.Contains(out, "updated "+caFile) {
		t.Fatalf("the rotation's output lacks its phases or the CA file update:\n%s", out)
	}

	var st wire.CAStatus
	if err := json.Unmarshal([]byte(mustTandem(t, "ca", "status", "--json", "--addr", c.Nodes[2].API)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Rotation == nil || st.Rotation.Phase != wire.CAPhaseDone || st.Rotation.NewCAKey != "" || len(st.CAs) != 1 {
		t.Fatalf("ca status after the rotation: %+v", st)
	}
	newCAs, err := pki.ParseCerts([]byte(st.Rotation.NewCA))
	if err != nil {
		t.Fatal(err)
	}
	newCA := newCAs[0]
	if newCA.Equal(old.CA.Cert) {
		t.Fatal("the new CA is the old one")
	}
	if b, _ := os.ReadFile(caFile); string(b) != st.Bundle {
		t.Errorf("the CLI's CA file was not updated to the new bundle")
	}
	for _, nd := range c.Nodes {
		m, err := pki.Dir(filepath.Join(nd.DataDir, "tls")).Load()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.CAs) != 1 || !m.CAs[0].Equal(newCA) || m.CA == nil || !m.CA.Cert.Equal(newCA) || m.Cert.Leaf.CheckSignatureFrom(newCA) != nil {
			t.Errorf("%s after the rotation: %d CAs, signing CA %v, certificate from the new CA: %v", nd.Name, len(m.CAs), m.CA != nil, m.Cert.Leaf.CheckSignatureFrom(newCA) == nil)
		}
		if err := storePut(ctx, nd, intruder, "/intruder/after"); err == nil {
			t.Errorf("%s's store port took a certificate of the retired CA", nd.Name)
		}
		oldOnly, _ := pki.CertsClientConfig(old.CAPEM)
		if conn, err := tls.Dial("tcp", nd.API, oldOnly); err == nil {
			conn.Close()
			t.Errorf("%s's API still shows a certificate of the old CA", nd.Name)
		}
	}

	// The cluster works with the new CA alone: data written before is
	// there, a write passes, and a node joins with a new join token.
	c.ForgetCredentials()
	if _, err := c.Client().Get(ctx, "rotation/0/0", client.ReadOptions{}); err != nil {
		t.Fatalf("read a write made during the rotation: %v", err)
	}
	c.AddNode()
	c.WaitHealthy()
}

// followingTLS trusts the pool roots holds at each handshake.
func followingTLS(roots *atomic.Pointer[x509.CertPool]) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below against the current pool
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots.Load(), Intermediates: inter})
			return err
		},
	}
}

// signedBy is a client certificate that ca signs for name.
func signedBy(t *testing.T, ca *pki.CA, name string) tls.Certificate {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name, nil, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, name, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// storePut writes key into nd's store port as the holder of cert (the
// server's certificate is not checked: this is about whom the store lets
// in).
func storePut(ctx context.Context, nd *clustertest.Node, cert tls.Certificate, key string) error {
	cfg := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{nd.StoreURL()}, TLS: cfg, DialTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = cl.Put(pctx, key, "x")
	if err == nil {
		return nil
	}
	return errors.Join(errors.New("refused"), err)
}

// TestCARotationWaitsForADownNode: with one voter of three killed (its
// agent and store member gone at once, like a crash), a rotation holds at
// its first phase and restarts no store member (the two left must keep
// their quorum), while the store keeps taking writes; once the node is back
// it catches up by itself and the rotation ends, with every node on the
// new CA.
func TestCARotationWaitsForADownNode(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	ctx := ctxT(t, 4*time.Minute)
	n1, n3 := c.Nodes[0], c.Nodes[2]
	n3.Kill()
	cl := c.ClientFor(n1.API, c.Nodes[1].API)
	var st wire.CAStatus
	c.Eventually(30*time.Second, "start a rotation", func() (err error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err = cl.RotateCA(rctx)
		return err
	})
	id := st.Rotation.ID

	// Held: trust, with n3 pending; writes pass all along.
	for i := range 20 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cl.Put(rctx, fmt.Sprintf("held/%d", i), []byte("x"), client.WriteOptions{})
		cancel()
		if err != nil {
			t.Fatalf("write %d while the rotation waits for n3: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond) // spread the writes over two seconds of waiting
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := cl.CA(rctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotation == nil || st.Rotation.ID != id || st.Rotation.Phase != wire.CAPhaseTrust || !strings.Contains(strings.Join(st.Pending, ","), n3.Name) {
		t.Fatalf("with n3 down the rotation should wait in phase trust for n3: %+v pending %v", st.Rotation, st.Pending)
	}

	n3.Restart()
	c.Eventually(2*time.Minute, "the rotation ends", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.ForgetCredentials() // trust n1's bundle of the moment: it holds the new CA from the first phase
		st, err := c.ClientFor(n3.API).CA(rctx)
		if err != nil {
			return err
		}
		if st.Rotation.Phase != wire.CAPhaseDone {
			return fmt.Errorf("phase %s, pending %v", st.Rotation.Phase, st.Pending)
		}
		return nil
	})
	newCA, err := pki.ParseCerts([]byte(st.Rotation.NewCA))
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.Nodes {
		m, err := pki.Dir(filepath.Join(nd.DataDir, "tls")).Load()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.CAs) != 1 || !m.CAs[0].Equal(newCA[0]) || m.Cert.Leaf.CheckSignatureFrom(newCA[0]) != nil {
			t.Errorf("%s does not hold the new CA alone, with a certificate from it", nd.Name)
		}
	}
	c.ForgetCredentials()
	c.WaitHealthy()
}

// TestCARotationOneNode: a one-node cluster rotates too (its store pauses
// for the member's restarts), and keeps its data.
func TestCARotationOneNode(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	ctx := ctxT(t, 2*time.Minute)
	nd := c.Nodes[0]
	cliEnv(t, c)
	if _, err := c.Client().Put(ctx, "kept", []byte("1"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out := mustTandem(t, "ca", "rotate", "--addr", nd.API, "--wait", "1m")
	if !strings.Contains(out, "done:") {
		t.Fatalf("tandem ca rotate:\n%s", out)
	}
	c.ForgetCredentials()
	got, err := c.Client().Get(ctx, "kept", client.ReadOptions{})
	if err != nil || string(got.Value) != "1" {
		t.Fatalf("read after the rotation: %+v, %v", got, err)
	}
}
