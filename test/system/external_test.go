package system

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/store"
)

// TestExternalStore points agents at an existing etcd cluster with
// --store-endpoints: they run no store member, all are client nodes, and
// the KV API and liveness work through the external store.
func TestExternalStore(t *testing.T) {
	ports := clustertest.FreePorts(t, 2)
	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := store.StartMember(ctx, store.MemberConfig{
		Name: "external", Dir: filepath.Join(t.TempDir(), "etcd"), BindIP: "127.0.0.1",
		PeerURL: url(ports[0]), ClientURL: url(ports[1]), PeerPort: ports[0], StorePort: ports[1],
		Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()

	c := clustertest.Start(t, 2, clustertest.Options{StoreEndpoints: []string{url(ports[1])}})
	ms, err := c.Client().Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Members {
		if (m.Name == "n1" || m.Name == "n2") && (m.Role != "client" || !m.Alive) {
			t.Fatalf("agent %s on an external store: role %s alive %v, want an alive client", m.Name, m.Role, m.Alive)
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
	resp, err := etcd.Etcd.Server.KV().Range(ctx, []byte(keys.UserKey("ext/k")), nil, mvccRangeOptions())
	if err != nil || len(resp.KVs) != 1 {
		t.Fatalf("key not in the external store: %v", err)
	}
}
