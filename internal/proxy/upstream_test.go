package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// dialUpstream connects an upstream to a raw instance (see instance).
func dialUpstream(t *testing.T, ln net.Listener) *upstream {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	u := newUpstream(c)
	t.Cleanup(u.close)
	return u
}

// send writes msg through u's buffer with flushAwait, as exchange does,
// and returns the first line of the answer.
func send(t *testing.T, u *upstream, msg string) (string, error) {
	t.Helper()
	u.bw.WriteString(msg)
	if err := u.flushAwait(30 * time.Second); err != nil {
		t.Fatalf("flushAwait: %v", err)
	}
	_ = u.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return u.br.ReadString('\n')
}

// An answer that comes at once, or later than awaitLimit, is read, in
// step, on the same connection.
func TestFlushAwaitAnswers(t *testing.T) {
	ln := instance(t, func(c net.Conn, _ int) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "slow\n" {
				time.Sleep(2 * awaitLimit)
			}
			io.WriteString(c, "re: "+line)
		}
	})
	u := dialUpstream(t, ln)
	for i, msg := range []string{"a\n", "b\n", "slow\n", "c\n", "slow\n", "d\n"} {
		got, err := send(t, u, msg)
		if err != nil || got != "re: "+msg {
			t.Fatalf("message %d %q: answer %q, %v", i, msg, got, err)
		}
	}
}

// A connection the instance closed while idle ends the wait with the
// reset its request draws, long before the header timeout.
func TestFlushAwaitClosedConnection(t *testing.T) {
	closed := make(chan struct{})
	ln := instance(t, func(c net.Conn, _ int) {
		c.Close()
		close(closed)
	})
	u := dialUpstream(t, ln)
	<-closed
	waitFIN(t, u)
	start := time.Now()
	u.bw.WriteString("hello\n")
	err := u.flushAwait(30 * time.Second)
	if err == nil {
		_ = u.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = u.br.Peek(1)
	}
	if err == nil {
		t.Fatal("a closed connection gave no error")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the error came after %v: the wait missed the reset", d)
	}
}

// A connection the instance half-closed while idle (FIN, then still
// reading, as a lingering close does) gives the end of the stream once
// awaitLimit has passed, not after the header timeout: the poller had
// reported the FIN before flushAwait armed it.
func TestFlushAwaitHalfClosedConnection(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ln := instance(t, func(c net.Conn, _ int) {
		defer c.Close()
		c.(*net.TCPConn).CloseWrite()
		go io.Copy(io.Discard, c)
		<-release
	})
	u := dialUpstream(t, ln)
	waitFIN(t, u)
	start := time.Now()
	_, err := send(t, u, "hello\n")
	if err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the end of the stream was seen after %v: the wait went on to the deadline", d)
	}
}

// waitFIN waits until u's connection has the instance's FIN waiting,
// without reading from it (a peek).
func waitFIN(t *testing.T, u *upstream) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for u.stillOpen() {
		if time.Now().After(deadline) {
			t.Fatal("the instance's FIN did not arrive")
		}
		time.Sleep(time.Millisecond)
	}
}
