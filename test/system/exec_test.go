package system

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
)

// TestExecChecksRunOnlyWhereEnabled: in a cluster where only n1 was started
// with --enable-exec-checks, an exec check runs on n1 and on no other node,
// however it reached the store: a service spec accepted by n1's API and
// inherited by instances that n2 and n3 own, an instance with its own exec
// check written straight into the store with an etcd client, a service spec
// written the same way, and each of them again after the spec changes. Each
// check appends a line to a marker file named after its service (one
// service per path and owner node), so a marker shows which node ran what.
// The refused instances stay critical with the reason and the fix as their
// output, and their node logs the refusal once per registration, not once
// per interval.
func TestExecChecksRunOnlyWhereEnabled(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{
		Mode:      clustertest.Processes,
		NodeFlags: map[string][]string{"n1": {"--enable-exec-checks"}},
	})
	ctx := ctxT(t, 3*time.Minute)
	n1 := c.Nodes[0]
	dir := t.TempDir()
	marker := func(svc string) string { return filepath.Join(dir, svc) }
	execCheck := func(svc string, interval time.Duration) []registry.Check {
		return []registry.Check{{
			Type:     registry.CheckExec,
			Command:  []string{"/bin/sh", "-c", `echo ran >> "$1"`, "sh", marker(svc)},
			Interval: config.Duration(interval),
		}}
	}
	// An etcd client of n3's store port, with n3's own certificate: what
	// any process that reaches the port can do with a node's credentials
	// (or with none, on an insecure cluster), without any node's API.
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Nodes[2].StoreURL()},
		TLS:         c.Nodes[2].StoreTLS(),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := etcd.Put(ctx, key, string(b)); err != nil {
			t.Fatalf("put %s into the store: %v", key, err)
		}
	}
	instance := func(svc string, port int) registry.Instance {
		// Passing from the start: a refused check must still turn it critical.
		return registry.Instance{Service: svc, ID: svc + "-1", Address: "127.0.0.1", Port: port, InitialState: registry.Passing}
	}

	// Three paths, one service per path and owner node.
	interval := 200 * time.Millisecond
	var services []string
	for i, nd := range c.Nodes {
		port := 9000 + i
		// 1. The spec through n1's API (n1 allows exec checks), inherited
		// by an instance registered through its owner's API.
		inherit := "inherit-" + nd.Name
		if err := n1.Client().PutService(ctx, registry.Service{Name: inherit, Checks: execCheck(inherit, interval)}); err != nil {
			t.Fatalf("spec of %s through n1: %v", inherit, err)
		}
		if _, err := nd.Client().Register(ctx, instance(inherit, port)); err != nil {
			t.Fatalf("register %s through %s: %v", inherit, nd.Name, err)
		}
		// 2. An instance with its own exec check, straight into the store.
		direct := "direct-" + nd.Name
		in := instance(direct, port)
		in.Node, in.Checks = nd.Name, execCheck(direct, interval)
		put(keys.InstanceKey(in.Service, in.ID), in)
		// 3. The spec and the instance, both straight into the store.
		raw := "rawspec-" + nd.Name
		put(keys.ServiceKey(raw), registry.Service{Name: raw, Checks: execCheck(raw, interval)})
		in = instance(raw, port)
		in.Node = nd.Name
		put(keys.InstanceKey(in.Service, in.ID), in)
		services = append(services, inherit, direct, raw)
	}

	// runs counts the lines of a service's marker: the runs of its check.
	runs := func(svc string) int {
		b, err := os.ReadFile(marker(svc))
		if err != nil {
			return 0
		}
		return bytes.Count(b, []byte("ran\n"))
	}
	ownerOf := func(svc string) string { return svc[strings.LastIndex(svc, "-")+1:] }
	// noMarkers fails the test at once if a node other than n1 ran a check.
	noMarkers := func() {
		t.Helper()
		for _, svc := range services {
			if ownerOf(svc) == "n1" {
				continue
			}
			if _, err := os.Stat(marker(svc)); !errors.Is(err, os.ErrNotExist) {
				b, _ := os.ReadFile(marker(svc))
				t.Fatalf("%s's exec check of %s ran (marker: %v, %q): a node without --enable-exec-checks ran a command", ownerOf(svc), svc, err, b)
			}
		}
	}
	// refusedOrRun waits until n1's checks have run and the other nodes'
	// instances show the refusal, as every node's view serves them.
	refusedOrRun := func(wantPort map[string]int) {
		t.Helper()
		c.Eventually(60*time.Second, "n1 runs its exec checks; n2 and n3 refuse theirs", func() error {
			noMarkers()
			for _, nd := range c.Nodes {
				for _, svc := range services {
					d, err := nd.Client().Service(ctx, svc)
					if err != nil {
						return fmt.Errorf("%s: %s: %v", nd.Name, svc, err)
					}
					if len(d.Instances) != 1 {
						return fmt.Errorf("%s: %s has %d instances", nd.Name, svc, len(d.Instances))
					}
					in := d.Instances[0]
					if p, ok := wantPort[svc]; ok && in.Port != p {
						return fmt.Errorf("%s: %s on port %d, not yet %d", nd.Name, svc, in.Port, p)
					}
					owner := ownerOf(svc)
					if owner == "n1" {
						if in.Status != registry.Passing || runs(svc) == 0 {
							return fmt.Errorf("%s: %s is %s after %d runs", nd.Name, svc, in.Status, runs(svc))
						}
						continue
					}
					want := "exec checks are disabled on node " + owner + ": start it with --enable-exec-checks"
					if in.Status != registry.Critical || in.Output != want {
						return fmt.Errorf("%s: %s is %s (%q), want critical (%q)", nd.Name, svc, in.Status, in.Output, want)
					}
				}
			}
			return nil
		})
	}
	// severalIntervals waits until every check of n1 has run five more
	// times: the other nodes, had they run theirs, would have by then.
	severalIntervals := func() {
		t.Helper()
		before := map[string]int{}
		for _, svc := range services {
			before[svc] = runs(svc)
		}
		c.Eventually(30*time.Second, "five more runs of each of n1's checks", func() error {
			noMarkers()
			for _, svc := range services {
				if ownerOf(svc) == "n1" && runs(svc) < before[svc]+5 {
					return fmt.Errorf("%s ran %d times, waiting for %d", svc, runs(svc), before[svc]+5)
				}
			}
			return nil
		})
	}
	// refusals counts the refusals a node logged for an instance.
	refusals := func(nd *clustertest.Node, svc string) int {
		b, err := os.ReadFile(nd.Log)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `msg="health check not run"`) && strings.Contains(line, " service="+svc+" ") {
				n++
			}
		}
		return n
	}

	refusedOrRun(nil)
	severalIntervals()
	noMarkers()
	for _, nd := range c.Nodes {
		want := 1
		if nd == n1 {
			want = 0
		}
		for _, kind := range []string{"inherit-", "direct-", "rawspec-"} {
			if n := refusals(nd, kind+nd.Name); n != want {
				t.Errorf("%s logged %d refusals of %s%s's check over many intervals, want %d", nd.Name, n, kind, nd.Name, want)
			}
		}
	}

	// Changes restart the checks: a new spec through n1's API and straight
	// into the store, a new port for the direct instances. Still refused.
	wantPort := map[string]int{}
	for i, nd := range c.Nodes {
		inherit, direct, raw := "inherit-"+nd.Name, "direct-"+nd.Name, "rawspec-"+nd.Name
		if err := n1.Client().PutService(ctx, registry.Service{Name: inherit, Checks: execCheck(inherit, interval+100*time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		put(keys.ServiceKey(raw), registry.Service{Name: raw, Checks: execCheck(raw, interval+100*time.Millisecond)})
		in := instance(direct, 9100+i)
		in.Node, in.Checks = nd.Name, execCheck(direct, interval)
		put(keys.InstanceKey(in.Service, in.ID), in)
		wantPort[direct] = in.Port
	}
	c.Eventually(30*time.Second, "n2 and n3 restart their instances' checks after the changes", func() error {
		for _, nd := range c.Nodes[1:] {
			for _, kind := range []string{"inherit-", "direct-", "rawspec-"} {
				if n := refusals(nd, kind+nd.Name); n != 2 {
					return fmt.Errorf("%s logged %d refusals of %s%s's check, want 2", nd.Name, n, kind, nd.Name)
				}
			}
		}
		return nil
	})
	refusedOrRun(wantPort)
	severalIntervals()
	noMarkers()
}
