package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a helper program instead of
// running tests: "alloc:<MB>" holds that much resident memory and sleeps;
// "agent" is an agent that starts the task given as JSON in
// SUPERVISOR_TEST_TASK, prints the State and exits, leaving it running.
const helperEnv = "SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	switch h := os.Getenv(helperEnv); {
	case strings.HasPrefix(h, "alloc:"):
		mb, _ := strconv.Atoi(strings.TrimPrefix(h, "alloc:"))
		buf := make([]byte, mb<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		fmt.Println("allocated")
		time.Sleep(time.Hour)
		fmt.Println(buf[len(buf)/2])
		os.Exit(0)
	case h == "agent":
		os.Exit(helperAgent())
	}
	if err := BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
		// Every test stops what it started: no child (orphans come to
		// this process, the subreaper) may be left, not even a zombie.
		if kids := children(5 * time.Second); len(kids) > 0 {
			fmt.Fprintln(os.Stderr, "processes left running by the tests:", kids)
			code = 1
		}
	}
	os.Exit(code)
}

// children waits up to d for this process to have no children, and returns
// the pids of those left.
func children(d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var kids []int
		self := os.Getpid()
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if pid, err := strconv.Atoi(e.Name()); err == nil && ppid(pid) == self {
				kids = append(kids, pid)
			}
		}
		if len(kids) == 0 || time.Now().After(deadline) {
			return kids
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func helperAgent() int {
	var t Task
	if err := json.Unmarshal([]byte(os.Getenv("SUPERVISOR_TEST_TASK")), &t); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	d, err := NewExec(ExecConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h, err := d.Start(context.Background(), t)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(h.State()); err != nil {
		return 1
	}
	return 0
}

// testLogger routes logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newExec returns an exec driver with a fast poll, logging to t.
func newExec(t *testing.T, cfg ExecConfig) *Exec {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	cfg.Logger = testLogger(t)
	d, err := NewExec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// shTask is a task running script with sh -c, logging to a temporary
// directory.
func shTask(t *testing.T, id, script string) Task {
	return Task{ID: id, Service: "svc", Command: []string{"sh", "-c", script}, LogDir: t.TempDir(), StopTimeout: 2 * time.Second}
}

// start starts task and stops it when the test ends.
func start(t *testing.T, d Driver, task Task) Handle {
	t.Helper()
	h, err := d.Start(context.Background(), task)
	if err != nil {
		t.Fatalf("start %s: %v", task.ID, err)
	}
	cleanupStop(t, h)
	return h
}

func cleanupStop(t *testing.T, h Handle) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDone waits for h's group to be gone and returns its Exit.
func waitDone(t *testing.T, h Handle, d time.Duration) Exit {
	t.Helper()
	select {
	case <-h.Done():
		return h.Exit()
	case <-time.After(d):
		t.Fatalf("process %d still running after %s", h.Pid(), d)
		return Exit{}
	}
}

// alive reports whether pid exists (a zombie counts).
func alive(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// readPid waits for a file holding a pid, written by a test script.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, 5*time.Second, "no pid in "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// readFile returns a file's content, or "" if it cannot be read.
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// helperCommand runs this test binary as a helper program.
func helperCommand(mode string) ([]string, map[string]string) {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return []string{exe, "-test.run=^$"}, map[string]string{helperEnv: mode}
}

// runOldAgent runs an "agent" in another process that starts task and exits,
// and returns the State it printed.
func runOldAgent(t *testing.T, task Task) State {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=agent", "SUPERVISOR_TEST_TASK="+string(b))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("old agent: %v: %s", err, out)
	}
	var st State
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("old agent printed %q: %v", out, err)
	}
	return st
}
