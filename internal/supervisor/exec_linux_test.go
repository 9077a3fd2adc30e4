package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStopKillsWholeTree(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "tree", "")
	dir := task.LogDir
	// A background grandchild, and a daemonised one whose parent exits at
	// once, so it is orphaned to the subreaper (this test process).
	task.Command[2] = `sleep 300 & echo $! > ` + dir + `/bg; ` +
		`sh -c 'sleep 300 & echo $! > ` + dir + `/daemon'; exec sleep 300`
	h := start(t, d, task)
	bg, daemon := readPid(t, dir+"/bg"), readPid(t, dir+"/daemon")

	eventually(t, 5*time.Second, "the daemonised sleep is not reparented to the subreaper", func() bool {
		info, err := readProc(d.fs, daemon)
		return err == nil && info.pgrp == h.Pid() && ppid(daemon) == os.Getpid()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop took %s", time.Since(begin))
	for _, pid := range []int{h.Pid(), bg, daemon} {
		if alive(pid) {
			t.Errorf("pid %d still exists after Stop", pid)
		}
	}
	if !groupGone(h.Pid()) {
		t.Errorf("process group %d not gone after Stop", h.Pid())
	}
	ex := h.Exit()
	if !ex.Stopped || ex.Reason != "stopped" || ex.Signal != "SIGTERM" {
		t.Errorf("exit = %+v, want stopped by SIGTERM", ex)
	}
}

// ppid returns pid's parent, or -1 if pid is gone.
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return n
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "stubborn", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	task.StopTimeout = 300 * time.Millisecond
	h := start(t, d, task)
	eventually(t, 5*time.Second, "the script did not say ready", func() bool {
		return strings.Contains(readFile(task.StdoutPath()), "ready")
	})
	begin := time.Now()
	if err := h.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	t.Logf("stop took %s", took)
	if took < task.StopTimeout {
		t.Errorf("stop took %s, less than the %s grace", took, task.StopTimeout)
	}
	if took > task.StopTimeout+2*time.Second {
		t.Errorf("stop took %s, far more than the %s grace", took, task.StopTimeout)
	}
	if ex := h.Exit(); ex.Signal != "SIGKILL" || !ex.Stopped {
		t.Errorf("exit = %+v, want stopped by SIGKILL", ex)
	}
	if !groupGone(h.Pid()) {
		t.Error("group not gone")
	}
}

func TestStopContextEndsEscalatesAtOnce(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "stubborn", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	task.StopTimeout = time.Hour
	h := start(t, d, task)
	eventually(t, 5*time.Second, "the script did not say ready", func() bool {
		return strings.Contains(readFile(task.StdoutPath()), "ready")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want the context's error", err)
	}
	if ex := waitDone(t, h, 5*time.Second); ex.Signal != "SIGKILL" {
		t.Errorf("exit = %+v, want SIGKILL", ex)
	}
}

func TestExitStatus(t *testing.T) {
	d := newExec(t, ExecConfig{})
	for _, tc := range []struct {
		script string
		code   int
		signal string
	}{
		{"exit 0", 0, ""},
		{"exit 3", 3, ""},
		{"kill -9 $$", -1, "SIGKILL"},
	} {
		t.Run(tc.script, func(t *testing.T) {
			h := start(t, d, shTask(t, "exit", tc.script))
			ex := waitDone(t, h, 5*time.Second)
			if ex.Code != tc.code || ex.Signal != tc.signal || ex.Stopped || ex.Reason != "" || ex.Unknown {
				t.Errorf("exit = %+v, want code %d signal %q", ex, tc.code, tc.signal)
			}
			if ex.At.IsZero() {
				t.Error("exit time not set")
			}
		})
	}
}

func TestLeaderExitEndsLeftovers(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "leftover", "")
	task.Command[2] = `sleep 300 & echo $! > ` + task.LogDir + `/bg; exit 7`
	h := start(t, d, task)
	bg := readPid(t, task.LogDir+"/bg")
	ex := waitDone(t, h, 5*time.Second)
	if ex.Code != 7 {
		t.Errorf("exit = %+v, want code 7", ex)
	}
	if alive(bg) {
		t.Errorf("background pid %d survived its leader", bg)
	}
}

func TestEnvAndPorts(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "env", `echo "PORT=$PORT HTTP=$TANDEM_PORT_HTTP ADMIN=$TANDEM_PORT_ADMIN_API ID=$TANDEM_INSTANCE_ID SVC=$TANDEM_SERVICE FOO=$FOO SECRET=$SUPERVISOR_TEST_SECRET"; pwd`)
	task.Ports = []Port{{"http", 8080}, {"admin-api", 9090}}
	task.Env = map[string]string{"FOO": "bar baz", "PORT": "1"}
	task.Dir = t.TempDir()
	t.Setenv("SUPERVISOR_TEST_SECRET", "agent-only")
	h := start(t, d, task)
	waitDone(t, h, 5*time.Second)
	want := "PORT=8080 HTTP=8080 ADMIN=9090 ID=env SVC=svc FOO=bar baz SECRET=\n" + task.Dir + "\n"
	if got := readFile(task.StdoutPath()); got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func TestLogsWrittenAndRotated(t *testing.T) {
	d := newExec(t, ExecConfig{LogMaxBytes: 64 << 10, LogBackups: 2})
	task := shTask(t, "chatty", `echo to-stderr >&2; while :; do echo 0123456789012345678901234567890123456789; done`)
	h := start(t, d, task)
	eventually(t, 10*time.Second, "stdout not rotated twice", func() bool {
		_, err := os.Stat(task.StdoutPath() + ".2")
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readFile(task.StderrPath()); got != "to-stderr\n" {
		t.Errorf("stderr = %q", got)
	}
	for _, suffix := range []string{".1", ".2"} {
		fi, err := os.Stat(task.StdoutPath() + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() <= 64<<10 {
			t.Errorf("backup %s holds %d bytes, want more than the rotation size", suffix, fi.Size())
		}
		if !strings.HasPrefix(readFile(task.StdoutPath()+suffix), "0123456789") {
			t.Errorf("backup %s does not start with a whole line", suffix)
		}
	}
	matches, _ := filepath.Glob(task.StdoutPath() + ".*")
	if len(matches) != 2 {
		t.Errorf("log files %v, want exactly 2 backups", matches)
	}
}

// allocTask is a task that holds allocMB of resident memory, limited to
// limitMB.
func allocTask(t *testing.T, allocMB, limitMB int) Task {
	task := shTask(t, "alloc", "")
	task.Command, task.Env = helperCommand("alloc:" + strconv.Itoa(allocMB))
	task.MemoryMB = limitMB
	return task
}

func TestMemoryLimit(t *testing.T) {
	d := newExec(t, ExecConfig{})
	h := start(t, d, allocTask(t, 200, 50))
	ex := waitDone(t, h, 20*time.Second)
	if !strings.HasPrefix(ex.Reason, "memory limit 50 MB exceeded (RSS ") || ex.Signal != "SIGKILL" || ex.Stopped {
		t.Errorf("exit = %+v (%s), want killed for memory", ex, ex)
	}
	t.Log(ex)
}

func TestMemoryUnderLimitKeepsRunning(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := allocTask(t, 20, 200)
	h := start(t, d, task)
	eventually(t, 10*time.Second, "helper did not allocate", func() bool {
		return strings.Contains(readFile(task.StdoutPath()), "allocated")
	})
	// Several polls pass while it holds its memory.
	rss, err := groupRSS(d.fs, map[int]bool{h.Pid(): true})
	if err != nil || rss[h.Pid()] < 20<<20 {
		t.Fatalf("group RSS = %d (%v), want at least 20 MB", rss[h.Pid()], err)
	}
	select {
	case <-h.Done():
		t.Fatalf("killed under its limit: %+v", h.Exit())
	case <-time.After(10 * d.cfg.PollInterval):
	}
}

func TestAdoptAfterAgentRestart(t *testing.T) {
	task := shTask(t, "survivor", "echo started; exec sleep 300")
	task.MemoryMB = 100
	st := runOldAgent(t, task)
	t.Cleanup(func() { killGroup(st.Pgid) })
	if st.Pid <= 0 || st.Pgid != st.Pid || st.StartTime == 0 || st.BootID == "" || !st.Task.Equal(task) {
		t.Fatalf("state = %+v", st)
	}

	d := newExec(t, ExecConfig{})
	h, err := d.Adopt(st)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.State(); h.Pid() != st.Pid || got.Pid != st.Pid || got.StartTime != st.StartTime || !got.Task.Equal(st.Task) {
		t.Errorf("adopted handle reports %d %+v", h.Pid(), h.State())
	}
	select {
	case <-h.Done():
		t.Fatal("adopted process reported gone")
	case <-time.After(5 * d.cfg.PollInterval):
	}
	if err := h.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ex := h.Exit(); !ex.Unknown || !ex.Stopped {
		t.Errorf("exit = %+v, want stopped with unknown status", ex)
	}
	if alive(st.Pid) {
		t.Error("adopted process survived Stop")
	}
}

func TestAdoptedKeepsLoggingAndRotates(t *testing.T) {
	// The process writes to its log files itself, so the old agent's exit
	// costs it nothing (no broken pipe), and the new agent rotates them.
	task := shTask(t, "talker", `while :; do seq 1 2000; sleep 0.02; done`)
	st := runOldAgent(t, task)
	t.Cleanup(func() { killGroup(st.Pgid) })
	d := newExec(t, ExecConfig{LogMaxBytes: 16 << 10, LogBackups: 1})
	h, err := d.Adopt(st)
	if err != nil {
		t.Fatal(err)
	}
	cleanupStop(t, h)
	eventually(t, 10*time.Second, "adopted process's log not rotated", func() bool {
		_, err := os.Stat(task.StdoutPath() + ".1")
		return err == nil
	})
	size := func() int64 {
		fi, err := os.Stat(task.StdoutPath())
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	before := size()
	eventually(t, 5*time.Second, "adopted process stopped writing", func() bool { return size() != before })
	select {
	case <-h.Done():
		t.Fatalf("adopted process ended: %+v", h.Exit())
	default:
	}
}

func TestAdoptedExitNoticed(t *testing.T) {
	task := shTask(t, "survivor", "exec sleep 300")
	st := runOldAgent(t, task)
	t.Cleanup(func() { killGroup(st.Pgid) })
	d := newExec(t, ExecConfig{})
	h, err := d.Adopt(st)
	if err != nil {
		t.Fatal(err)
	}
	cleanupStop(t, h)
	unix.Kill(st.Pid, unix.SIGKILL)
	ex := waitDone(t, h, 5*time.Second)
	if !ex.Unknown || ex.Stopped {
		t.Errorf("exit = %+v, want an unknown status, not stopped", ex)
	}
}

func TestAdoptRefusesGoneProcess(t *testing.T) {
	d := newExec(t, ExecConfig{})
	h := start(t, d, shTask(t, "short", "exec sleep 300"))
	live := h.State()

	done := start(t, d, shTask(t, "short", "true"))
	waitDone(t, done, 5*time.Second)

	reused := live
	reused.StartTime++
	rebooted := live
	rebooted.BootID = "another-boot"
	for name, st := range map[string]State{"exited": done.State(), "reused pid": reused, "rebooted": rebooted} {
		t.Run(name, func(t *testing.T) {
			_, err := d.Adopt(st)
			if !errors.Is(err, ErrGone) {
				t.Fatalf("Adopt = %v, want ErrGone", err)
			}
			t.Log(err)
		})
	}
	if !alive(live.Pid) {
		t.Error("refusing a reused pid touched the live process")
	}
}

func TestAdoptReportsRemnantsOfDeadLeader(t *testing.T) {
	task := shTask(t, "remnant", "")
	task.Command[2] = `sleep 300 & echo $! > ` + task.LogDir + `/bg; exec sleep 300`
	st := runOldAgent(t, task)
	t.Cleanup(func() { killGroup(st.Pgid) })
	bg := readPid(t, task.LogDir+"/bg")
	unix.Kill(st.Pid, unix.SIGKILL)
	// The test process is the subreaper that inherited the leader: reap it
	// as init would.
	var ws unix.WaitStatus
	unix.Wait4(st.Pid, &ws, 0, nil)

	d := newExec(t, ExecConfig{})
	_, err := d.Adopt(st)
	if !errors.Is(err, ErrGone) || !strings.Contains(err.Error(), "["+strconv.Itoa(bg)+"]") {
		t.Fatalf("Adopt = %v, want ErrGone naming pid %d", err, bg)
	}
	t.Log(err)
	if !alive(bg) {
		t.Error("remnant was killed")
	}
}

func TestUnknownUser(t *testing.T) {
	d := newExec(t, ExecConfig{})
	task := shTask(t, "who", "id")
	task.User = "tandem-no-such-user"
	_, err := d.Start(context.Background(), task)
	if !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), `"tandem-no-such-user"`) {
		t.Fatalf("Start = %v, want ErrUnknownUser naming the user", err)
	}
	t.Log(err)
}

func TestRunsAsUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to switch users")
	}
	d := newExec(t, ExecConfig{})
	task := shTask(t, "who", `echo "$(id -u) $(id -g) $USER"`)
	task.User = "nobody"
	h := start(t, d, task)
	if ex := waitDone(t, h, 5*time.Second); ex.Code != 0 {
		t.Fatalf("exit = %+v: %s", ex, readFile(task.StderrPath()))
	}
	if got := readFile(task.StdoutPath()); got != "65534 65534 nobody\n" {
		t.Errorf("stdout = %q", got)
	}
}

// TestDenyRoot: a driver that denies root refuses a task naming root and
// one naming no user when it has no User, and runs a task naming no user
// as its User.
func TestDenyRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to switch users")
	}
	deny := newExec(t, ExecConfig{DenyRoot: true})
	for _, u := range []string{"", "root", "0"} {
		task := shTask(t, "who", "id")
		task.User = u
		_, err := deny.Start(context.Background(), task)
		if !errors.Is(err, ErrRootDenied) || !strings.Contains(err.Error(), "--workload-allow-root") {
			t.Errorf("user %q: Start = %v, want ErrRootDenied saying how to allow it", u, err)
		}
	}
	d := newExec(t, ExecConfig{DenyRoot: true, User: "nobody"})
	task := shTask(t, "who", `echo "$(id -u) $USER"`)
	h := start(t, d, task)
	if ex := waitDone(t, h, 5*time.Second); ex.Code != 0 {
		t.Fatalf("exit = %+v: %s", ex, readFile(task.StderrPath()))
	}
	if got := readFile(task.StdoutPath()); got != "65534 nobody\n" {
		t.Errorf("stdout = %q, want the driver's user", got)
	}
}

func TestStartErrors(t *testing.T) {
	d := newExec(t, ExecConfig{})
	for name, mod := range map[string]func(*Task){
		"no such program": func(tk *Task) { tk.Command = []string{"tandem-no-such-program"} },
		"no such dir":     func(tk *Task) { tk.Dir = "/nonexistent/dir" },
		"invalid":         func(tk *Task) { tk.Command = nil },
	} {
		t.Run(name, func(t *testing.T) {
			task := shTask(t, "bad", "true")
			mod(&task)
			_, err := d.Start(context.Background(), task)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			t.Log(err)
		})
	}
}

// killGroup kills what is left of a group the test started through a helper
// agent, and reaps it.
func killGroup(pgid int) {
	unix.Kill(-pgid, unix.SIGKILL)
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-pgid, &ws, 0, nil); err != nil && err != unix.EINTR {
			return
		}
	}
}

// BenchmarkMemoryScan measures one pass over /proc summing the resident
// memory of process groups, which the driver makes every poll while any
// task has a memory limit.
func BenchmarkMemoryScan(b *testing.B) {
	d, err := NewExec(ExecConfig{})
	if err != nil {
		b.Fatal(err)
	}
	procs, err := d.fs.AllProcs()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(procs)), "procs")
	groups := map[int]bool{os.Getpid(): true, 1: true}
	for b.Loop() {
		if _, err := groupRSS(d.fs, groups); err != nil {
			b.Fatal(err)
		}
	}
}
