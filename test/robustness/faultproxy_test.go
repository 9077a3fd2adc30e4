package robustness

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *FaultProxy {
	t.Helper()
	p, err := NewFaultProxy("127.0.0.1:0", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip sends a line and returns how long the echo took.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.SetDeadline(start.Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if got != line+"\n" {
		t.Fatalf("echo: got %q, want %q", got, line)
	}
	return time.Since(start)
}

func TestFaultProxy(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	if d := roundTrip(t, c, r, "plain"); d > time.Second {
		t.Errorf("no faults: round trip took %s", d)
	}

	// Delay applies to each direction: a round trip takes twice as long.
	p.Set(Faults{Delay: 50 * time.Millisecond})
	if d := roundTrip(t, c, r, "delayed"); d < 100*time.Millisecond {
		t.Errorf("delay 50ms: round trip took %s, want at least 100ms", d)
	}

	// Loss 1: every chunk is held back LossStall, each way.
	p.Set(Faults{Loss: 1})
	if d := roundTrip(t, c, r, "lost"); d < 2*LossStall {
		t.Errorf("loss 100%%: round trip took %s, want at least %s", d, 2*LossStall)
	}

	// A stall holds the bytes until it is cleared; none is lost.
	p.Set(Faults{Stall: true})
	if _, err := io.WriteString(c, "stalled\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a stalled proxy forwarded a line")
	}
	p.Set(Faults{})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "stalled\n" {
		t.Fatalf("after the stall: got %q, %v; want the held line", got, err)
	}

	// Cut closes open connections; new ones work.
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("read on a cut connection succeeded")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2, bufio.NewReader(c2), "again")
}

// A half-close passes through: the server sees EOF and its answer still
// comes back.
func TestFaultProxyHalfClose(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("got %q, %v; want the echo then EOF", got, err)
	}
}

// A target that refuses makes the proxy close the client's connection.
func TestFaultProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p := newProxy(t, target)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read through a proxy whose target is down succeeded")
	}
}

// HoldFrom and HoldTo hold one direction of the named client's
// connections only.
func TestFaultProxyHold(t *testing.T) {
	p, err := NewFaultProxy("127.0.0.1:0", echoServer(t), func(net.Conn) string { return "a" })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "before")

	for _, f := range []Faults{{HoldFrom: map[string]bool{"a": true}}, {HoldTo: map[string]bool{"a": true}}} {
		p.Set(f)
		if _, err := io.WriteString(c, "held\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := r.ReadString('\n'); err == nil {
			t.Fatalf("%s: a line came back", f)
		}
		if p.Held() == 0 {
			t.Errorf("%s: Held() is 0", f)
		}
		p.Set(Faults{HoldFrom: map[string]bool{"b": true}}) // someone else
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
			t.Fatalf("%s lifted: got %q, %v; want the held line", f, got, err)
		}
	}
}
