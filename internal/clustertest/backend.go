package clustertest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ServeBackendIfAsked lets a test binary double as an instance process, so
// that tests can kill -9 a real instance. Call it first in TestMain: when
// the binary was started by StartBackend it serves HTTP and never returns;
// otherwise it returns at once. The instance answers every path with its
// name (/healthz with "ok") and logs the X-Request-Id of every POST, one
// per line, to find requests delivered twice.
func ServeBackendIfAsked() {
	addr := os.Getenv("TANDEM_TEST_BACKEND")
	if addr == "" {
		return
	}
	name := os.Getenv("TANDEM_TEST_BACKEND_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	var postLog *os.File
	if path := os.Getenv("TANDEM_TEST_BACKEND_POSTLOG"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(2)
		}
		postLog = f
	}
	var mu sync.Mutex
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && postLog != nil {
			mu.Lock()
			fmt.Fprintln(postLog, r.Header.Get("X-Request-Id"))
			mu.Unlock()
		}
		fmt.Fprintln(w, name)
	})
	err := http.ListenAndServe(addr, mux)
	fmt.Fprintln(os.Stderr, "backend:", err)
	os.Exit(2)
}

// Backend is an instance process started from the test binary (see
// ServeBackendIfAsked).
type Backend struct {
	t    testing.TB
	Name string
	Port int
	// PostLog lists the request ids of the POSTs it received.
	PostLog string
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartBackend starts an instance process on a free loopback port and
// waits until it listens; the test's cleanup kills it.
func StartBackend(t testing.TB, name string) *Backend {
	t.Helper()
	b := &Backend{t: t, Name: name, Port: FreePorts(t, 1)[0], PostLog: filepath.Join(t.TempDir(), name+".posts")}
	b.start()
	t.Cleanup(b.Kill)
	return b
}

// Addr is the instance's host:port.
func (b *Backend) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port)) }

func (b *Backend) start() {
	b.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_BACKEND="+b.Addr(), "TANDEM_TEST_BACKEND_NAME="+b.Name, "TANDEM_TEST_BACKEND_POSTLOG="+b.PostLog)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(b.done) }()
	if err := Poll(10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		b.t.Fatalf("backend %s did not listen: %v", b.Name, err)
	}
}

// Kill kills the instance with SIGKILL and waits for it to exit.
func (b *Backend) Kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
}

// Restart starts the instance again on the same port.
func (b *Backend) Restart() { b.start() }
