package system

import (
	"context"
	"fmt"
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
)

// startEtcd runs Debian's etcd server (package etcd-server) as a one-member
// cluster on loopback and returns its client URL. scripts/test.sh installs
// it; a missing binary fails the test rather than skipping it.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("the etcd server binary is needed (apt-get install etcd-server; scripts/test.sh installs it): %v", err)
	}
	ports := clustertest.FreePorts(t, 2)
	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }
	logf, err := os.Create(filepath.Join(t.TempDir(), "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--name", "external", "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-peer-urls", url(ports[0]), "--initial-advertise-peer-urls", url(ports[0]),
		"--listen-client-urls", url(ports[1]), "--advertise-client-urls", url(ports[1]),
		"--initial-cluster", "external="+url(ports[0]),
		"--heartbeat-interval", "50", "--election-timeout", "500")
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
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url(ports[1])}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := clustertest.Poll(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Status(ctx, url(ports[1]))
		return err
	}); err != nil {
		t.Fatalf("etcd did not serve within 30s: %v", err)
	}
	return url(ports[1])
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
