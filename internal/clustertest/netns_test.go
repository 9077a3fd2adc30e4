package clustertest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/tandemhq/tandem/internal/client"
)

func TestNetns(t *testing.T) {
	NeedNetns(t)
	var router, hostIf string
	t.Run("cluster", func(t *testing.T) {
		c := Start(t, 3, Options{Mode: Processes, Netns: true})
		router, hostIf = c.net.router, c.net.hostIf
		self, _ := os.Readlink("/proc/self/ns/net")

		for _, nd := range c.Nodes {
			if !strings.HasPrefix(nd.API, "10.") {
				t.Errorf("%s: API %s is not its namespace's address", nd.Name, nd.API)
			}
			// ip netns exec execs the agent: the pid we signal is tandem's,
			// in the node's own namespace.
			exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(nd.Pid()), "exe"))
			if filepath.Base(exe) != "tandem" {
				t.Errorf("%s: pid %d runs %q, want the tandem binary", nd.Name, nd.Pid(), exe)
			}
			if ns, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(nd.Pid()), "ns", "net")); ns == self || ns == "" {
				t.Errorf("%s: runs in network namespace %q, the test's is %q", nd.Name, ns, self)
			}
		}

		leader := c.Leader()
		var follower *Node
		for _, nd := range c.Nodes {
			if nd != leader {
				follower = nd
				break
			}
		}

		t.Run("stop and cont reach the agent", func(t *testing.T) {
			follower.Stop()
			c.Eventually(5*time.Second, follower.Name+" stopped", func() error { return isState(follower.Pid(), "T") })
			follower.Cont()
			c.Eventually(5*time.Second, follower.Name+" running", func() error {
				if isState(follower.Pid(), "T") == nil {
					return errors.New("still stopped")
				}
				return nil
			})
		})

		t.Run("isolate", func(t *testing.T) {
			c.Isolate(follower)
			// The majority keeps taking writes.
			c.Eventually(10*time.Second, "a write through the majority", func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				_, err := c.ClientFor(leader.API).Put(ctx, "netns/a", []byte("1"), client.WriteOptions{Timeout: 2 * time.Second})
				return err
			})
			// The isolated node still answers the test, with an error: it
			// cannot reach a quorum.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.ClientFor(follower.API).Get(ctx, "netns/a", client.ReadOptions{Timeout: time.Second})
			if !client.IsStatus(err, 503) {
				t.Errorf("linearizable read on isolated %s: got %v, want a 503", follower.Name, err)
			}
			if n := c.Dropped(); n == 0 {
				t.Errorf("isolating %s dropped no packet", follower.Name)
			}
			c.Heal()
			if n := c.Dropped(); n != 0 {
				t.Errorf("after Heal, %d packets counted, want the rules gone", n)
			}
			c.WaitHealthy()
		})

		t.Run("one way", func(t *testing.T) {
			c.PartitionOneWay(follower, leader)
			c.Eventually(10*time.Second, "packets dropped", func() error {
				if c.Dropped() == 0 {
					return errors.New("none yet")
				}
				return nil
			})
			c.Heal()
			c.WaitHealthy()
		})

		t.Run("blackhole", func(t *testing.T) {
			c.Blackhole(follower)
			// A dial does not fail at once (refused): it times out.
			conn, err := net.DialTimeout("tcp", follower.API, 500*time.Millisecond)
			if err == nil {
				conn.Close()
				t.Fatalf("dialled blackholed %s", follower.Name)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("dial blackholed %s: %v, want a timeout", follower.Name, err)
			}
			c.Heal()
			conn, err = net.DialTimeout("tcp", follower.API, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %s after Heal: %v", follower.Name, err)
			}
			conn.Close()
			c.WaitHealthy()
		})
	})
	// The cleanups removed the namespaces, and the root namespace's end of
	// the link (and so its route) with them.
	if router == "" {
		return
	}
	if _, err := os.Stat(filepath.Join("/run/netns", router)); err == nil {
		t.Errorf("namespace %s left behind", router)
	}
	if _, err := net.InterfaceByName(hostIf); err == nil {
		t.Errorf("interface %s left behind", hostIf)
	}
}

// isState reports whether process pid is in state s (a /proc stat letter).
func isState(pid int, s string) error {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return err
	}
	st, err := p.Stat()
	if err != nil {
		return err
	}
	if st.State != s {
		return errors.New("state " + st.State)
	}
	return nil
}
