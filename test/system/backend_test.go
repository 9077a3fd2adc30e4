package system

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

	"github.com/tandemhq/tandem/internal/clustertest"
)

// TestMain lets the test binary double as a backend process: with
// TANDEM_TEST_BACKEND=host:port it serves HTTP there instead of running
// tests, so tests can kill -9 a real instance process.
func TestMain(m *testing.M) {
	if addr := os.Getenv("TANDEM_TEST_BACKEND"); addr != "" {
		name := os.Getenv("TANDEM_TEST_BACKEND_NAME")
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		// POSTs are logged by request id, one per line, to find duplicates.
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
		if err := http.ListenAndServe(addr, mux); err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// backend is a real HTTP server process serving an instance.
type backend struct {
	t    *testing.T
	name string
	Port int
	// PostLog lists the request ids of the POSTs it received.
	PostLog string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startBackend starts a backend process on a free loopback port.
func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{t: t, name: name, Port: clustertest.FreePorts(t, 1)[0], PostLog: filepath.Join(t.TempDir(), name+".posts")}
	b.start()
	t.Cleanup(b.Kill)
	return b
}

func (b *backend) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port)) }

func (b *backend) start() {
	b.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_BACKEND="+b.addr(), "TANDEM_TEST_BACKEND_NAME="+b.name, "TANDEM_TEST_BACKEND_POSTLOG="+b.PostLog)
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(b.done) }()
	if err := clustertest.Poll(10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", b.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		b.t.Fatalf("backend %s did not listen: %v", b.name, err)
	}
}

// Kill kills the backend with SIGKILL and waits for it.
func (b *backend) Kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
}

// Restart starts the backend again on the same port.
func (b *backend) Restart() { b.start() }
