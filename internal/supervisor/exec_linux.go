package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Exec is the driver that runs a task as a plain process in its own process
// group. Its methods are safe for concurrent use. It keeps one goroutine,
// which polls /proc, while any of its handles is live.
type Exec struct {
	cfg    ExecConfig
	log    *slog.Logger
	fs     procfs.FS
	bootID string

	mu      sync.Mutex
	handles map[*execHandle]struct{}
	polling bool
}

// NewExec returns the exec driver.
func NewExec(cfg ExecConfig) (*Exec, error) {
	cfg = cfg.withDefaults()
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return nil, fmt.Errorf("exec driver: open /proc: %w", err)
	}
	id, err := bootID()
	if err != nil {
		return nil, fmt.Errorf("exec driver: %w", err)
	}
	return &Exec{cfg: cfg, log: cfg.Logger, fs: fs, bootID: id, handles: map[*execHandle]struct{}{}}, nil
}

// Start runs t in a new process group whose id is the leader's pid, with
// stdin from /dev/null and stdout and stderr appended to t's log files.
func (d *Exec) Start(ctx context.Context, t Task) (Handle, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	path, err := exec.LookPath(t.Command[0])
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	base := map[string]string{"PATH": os.Getenv("PATH")}
	if base["PATH"] == "" {
		base["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	name := t.User
	if name == "" {
		name = d.cfg.User
	}
	cred, err := credential(name, base)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	if d.cfg.DenyRoot && (cred == nil && os.Getuid() == 0 || cred != nil && cred.Uid == 0) {
		return nil, fmt.Errorf("start %s: it would run as root, and %w: give the service a run.user, or start this node's agent with --workload-allow-root", t.ID, ErrRootDenied)
	}
	if t.Dir != "" {
		if fi, err := os.Stat(t.Dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("start %s: working directory %q does not exist or is not a directory", t.ID, t.Dir)
		}
	}
	if err := os.MkdirAll(t.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: create log dir: %w", t.ID, err)
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	defer stdin.Close()
	stdout, err := openLog(t.StdoutPath())
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	defer stdout.Close()
	stderr, err := openLog(t.StderrPath())
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", t.ID, err)
	}
	defer stderr.Close()

	pid, err := syscall.ForkExec(path, t.Command, &syscall.ProcAttr{
		Dir:   t.Dir,
		Env:   t.environ(base),
		Files: []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: cred},
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: run %s: %w", t.ID, path, err)
	}
	started := time.Now()
	d.setLimits(pid, t.ID)
	// The leader is our child and nobody has reaped it yet, so its /proc
	// entry is there even if it already exited.
	info, err := readProc(d.fs, pid)
	if err != nil {
		unix.Kill(-pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		return nil, fmt.Errorf("start %s: read /proc/%d/stat: %w", t.ID, pid, err)
	}
	h := d.newHandle(State{
		Driver:    ExecDriverName,
		Task:      t,
		Pid:       pid,
		Pgid:      pid,
		StartTime: info.startTime,
		BootID:    d.bootID,
		Started:   started,
	}, true)
	go h.reap()
	return h, nil
}

// Adopt finds the process s describes, started by an earlier run of the
// agent, and watches it again. It returns an error wrapping ErrGone if the
// node rebooted since, or the leader exited, or its pid now belongs to
// another process (another start time).
//
// The adopted process is not the agent's child, so its exit status cannot
// be read: the driver polls /proc to see it end, and Exit.Unknown is set.
func (d *Exec) Adopt(s State) (Handle, error) {
	if s.Driver != ExecDriverName {
		return nil, fmt.Errorf("adopt %s: driver %q is not %q", s.Task.ID, s.Driver, ExecDriverName)
	}
	if err := s.Task.Validate(); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	if s.Pid <= 1 || s.Pgid != s.Pid {
		return nil, fmt.Errorf("adopt %s: pid %d and pgid %d do not describe a process group leader", s.Task.ID, s.Pid, s.Pgid)
	}
	if s.BootID != d.bootID {
		return nil, fmt.Errorf("adopt %s: %w: the node rebooted since pid %d started", s.Task.ID, ErrGone, s.Pid)
	}
	info, err := readProc(d.fs, s.Pid)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("adopt %s: %w: pid %d has exited%s", s.Task.ID, ErrGone, s.Pid, d.remnants(s.Pgid))
	case err != nil:
		return nil, fmt.Errorf("adopt %s: %w", s.Task.ID, err)
	case info.startTime != s.StartTime:
		return nil, fmt.Errorf("adopt %s: %w: pid %d now belongs to another process (start time %d, not %d)",
			s.Task.ID, ErrGone, s.Pid, info.startTime, s.StartTime)
	case info.state == "Z" || info.state == "X":
		return nil, fmt.Errorf("adopt %s: %w: pid %d has exited%s", s.Task.ID, ErrGone, s.Pid, d.remnants(s.Pgid))
	case info.pgrp != s.Pgid:
		return nil, fmt.Errorf("adopt %s: pid %d left its process group %d for %d: stop it by hand", s.Task.ID, s.Pid, s.Pgid, info.pgrp)
	}
	return d.newHandle(s, false), nil
}

// remnants describes the processes left in group pgid after its leader
// exited, for an error message: they cannot be told apart with certainty
// from a later group that reused the number, so they are not touched.
func (d *Exec) remnants(pgid int) string {
	if groupGone(pgid) {
		return ""
	}
	procs, err := d.fs.AllProcs()
	if err != nil {
		return ""
	}
	var pids []int
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PGRP == pgid && st.State != "Z" {
			pids = append(pids, p.PID)
		}
	}
	if len(pids) == 0 {
		return ""
	}
	return fmt.Sprintf("; processes %v are still in its group %d and were left running: check and stop them by hand", pids, pgid)
}

// openLog opens a log file for appending, creating it if needed.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// credential returns who to run as for user name (empty: the agent's own
// user) and adds HOME, USER and LOGNAME to env.
func credential(name string, env map[string]string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if _, numeric := strconv.Atoi(name); numeric == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		var unknownName user.UnknownUserError
		var unknownID user.UnknownUserIdError
		if errors.As(err, &unknownName) || errors.As(err, &unknownID) {
			return nil, fmt.Errorf("%w %q: no such user on this node; create it or change the task's user", ErrUnknownUser, name)
		}
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q has uid %q and gid %q, not numbers", name, u.Uid, u.Gid)
	}
	if os.Getuid() != 0 && int(uid) != os.Getuid() {
		return nil, fmt.Errorf("run as user %q (uid %d): the agent runs as uid %d; only an agent running as root can switch users", name, uid, os.Getuid())
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: os.Getuid() != 0}
	if !cred.NoSetGroups {
		ids, err := u.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("list groups of user %q: %w", name, err)
		}
		for _, s := range ids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(g))
			}
		}
	}
	env["HOME"], env["USER"], env["LOGNAME"] = u.HomeDir, u.Username, u.Username
	return cred, nil
}

// setLimits gives a new process its resource limits. They are set just after
// the exec, so a child it forks in its first instants keeps the agent's
// limits; that is logged, not fatal.
func (d *Exec) setLimits(pid int, id string) {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err == nil {
		n := min(d.cfg.NoFile, own.Max)
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}, nil); err != nil {
			d.log.Warn("set RLIMIT_NOFILE", "task", id, "pid", pid, "err", err)
		}
	}
	// No core dumps: they fill the disk of a node that restarts a crashing
	// process again and again. The hard limit is left for the task to raise.
	var core unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_CORE, nil, &core); err == nil {
		core.Cur = 0
		if err := unix.Prlimit(pid, unix.RLIMIT_CORE, &core, nil); err != nil {
			d.log.Warn("set RLIMIT_CORE", "task", id, "pid", pid, "err", err)
		}
	}
}

// execHandle is one process group started or adopted by the exec driver.
//
// Its goroutines: run owns the stop sequence and closes done; reap (only
// for a child) reaps the group's processes that are the agent's children;
// the driver's poll goroutine reports memory overuse and, for an adopted
// process, the leader's end.
type execHandle struct {
	d     *Exec
	state State
	child bool // the leader is the agent's child: its status can be read

	leaderExit chan Exit     // the leader's end, sent once (buffered)
	stopReq    chan struct{} // closed by Stop or kill
	killReq    chan struct{} // closed to send SIGKILL at once
	done       chan struct{} // closed once the group is gone

	// checking is held by the poll goroutine while it checks this handle,
	// and by run to close done: no rotation runs once Done is closed.
	checking sync.Mutex

	mu        sync.Mutex
	leaderEnd bool   // leaderExit was sent
	stopped   bool   // Stop was called first
	reason    string // why tandem ended it
	stopOnce  bool
	killOnce  bool
	exit      Exit
}

func (d *Exec) newHandle(s State, child bool) *execHandle {
	h := &execHandle{
		d:          d,
		state:      s,
		child:      child,
		leaderExit: make(chan Exit, 1),
		stopReq:    make(chan struct{}),
		killReq:    make(chan struct{}),
		done:       make(chan struct{}),
	}
	d.register(h)
	go h.run()
	return h
}

// Pid implements Handle.
func (h *execHandle) Pid() int { return h.state.Pid }

// State implements Handle.
func (h *execHandle) State() State { return h.state }

// Done implements Handle.
func (h *execHandle) Done() <-chan struct{} { return h.done }

// Exit implements Handle.
func (h *execHandle) Exit() Exit {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exit
}

// Stop implements Handle.
func (h *execHandle) Stop(ctx context.Context) error {
	h.request("stopped", true, false)
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		h.request("", false, true)
		return fmt.Errorf("stop %s (pid %d): %w; SIGKILL sent, the group is still ending", h.state.Task.ID, h.state.Pid, ctx.Err())
	}
}

// request asks run to end the group: with SIGTERM first, or at once with
// SIGKILL. The first reason given is kept.
func (h *execHandle) request(reason string, stop, kill bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reason == "" && reason != "" {
		h.reason = reason
		h.stopped = stop
	}
	if !h.stopOnce {
		h.stopOnce = true
		close(h.stopReq)
	}
	if kill && !h.killOnce {
		h.killOnce = true
		close(h.killReq)
	}
}

// leaderEnded hands the leader's end to run, once.
func (h *execHandle) leaderEnded(e Exit) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leaderEnd {
		return
	}
	h.leaderEnd = true
	e.At = time.Now()
	h.leaderExit <- e
}

// run waits for the leader to end or for a stop, then ends whatever is left
// of the group: SIGTERM, SIGKILL after the grace, and waits until no process
// of the group remains.
func (h *execHandle) run() {
	defer h.d.unregister(h)
	var leader *Exit
	select {
	case e := <-h.leaderExit:
		leader = &e
	case <-h.stopReq:
	}
	pgid := h.state.Pgid
	gone := false
	h.mu.Lock()
	killNow := h.killOnce // request closes stopReq and killReq under mu
	h.mu.Unlock()
	if !killNow {
		h.d.log.Debug("SIGTERM to group", "task", h.state.Task.ID, "pgid", pgid)
		unix.Kill(-pgid, unix.SIGTERM)
		grace := time.NewTimer(h.state.Task.stopTimeout())
		gone = h.waitGone(grace.C, h.killReq)
		grace.Stop()
	}
	if !gone {
		h.d.log.Debug("SIGKILL to group", "task", h.state.Task.ID, "pgid", pgid)
		unix.Kill(-pgid, unix.SIGKILL)
		h.waitGone(nil, nil)
	}
	if leader == nil {
		if h.child {
			// The group is gone, so the leader was reaped, by reap or by
			// waitGone, which both report it.
			e := <-h.leaderExit
			leader = &e
		} else {
			leader = &Exit{Code: -1, Unknown: true, At: time.Now()}
		}
	}
	h.mu.Lock()
	h.exit = *leader
	h.exit.Reason = h.reason
	h.exit.Stopped = h.stopped
	h.mu.Unlock()
	h.checking.Lock()
	close(h.done)
	h.checking.Unlock()
}

// waitGone polls until no process of the group remains (true), or timeout
// fires or escalate is closed (false). Meanwhile it reaps the group's
// processes that are the agent's children: those reparented to it after
// the reap goroutine ended, or, for an adopted group, left to it by an
// earlier driver in this same process.
func (h *execHandle) waitGone(timeout <-chan time.Time, escalate <-chan struct{}) bool {
	delay := 2 * time.Millisecond
	for {
		h.sweep()
		if groupGone(h.state.Pgid) {
			return true
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-timeout:
			t.Stop()
			return false
		case <-escalate:
			t.Stop()
			return false
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// sweep reaps, without blocking, the group's processes that are the agent's
// children and have exited.
func (h *execHandle) sweep() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-h.state.Pgid, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		h.reaped(pid, ws)
	}
}

// reap waits for the processes of the group that are the agent's children:
// the leader, and its descendants orphaned to the agent (a subreaper). It
// ends when none is left. If the leader left the group, it then waits for
// the leader alone.
func (h *execHandle) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-h.state.Pgid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break
		}
		h.reaped(pid, ws)
	}
	h.mu.Lock()
	ended := h.leaderEnd
	h.mu.Unlock()
	if ended {
		return
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(h.state.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Reaped elsewhere (a sweep racing with us): that sweep
			// reported it, and leaderEnded ignores a second report.
			h.leaderEnded(Exit{Code: -1, Unknown: true})
			return
		}
		h.reaped(h.state.Pid, ws)
		return
	}
}

// reaped records a reaped process; only the leader's status matters.
func (h *execHandle) reaped(pid int, ws unix.WaitStatus) {
	if pid != h.state.Pid {
		return
	}
	if ws.Signaled() {
		h.leaderEnded(Exit{Code: -1, Signal: unix.SignalName(ws.Signal())})
		return
	}
	h.leaderEnded(Exit{Code: ws.ExitStatus()})
}

func (d *Exec) register(h *execHandle) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handles[h] = struct{}{}
	if !d.polling {
		d.polling = true
		go d.poll()
	}
}

func (d *Exec) unregister(h *execHandle) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.handles, h)
}

// poll checks every live handle each PollInterval; it ends when none is
// left, and register starts it again.
func (d *Exec) poll() {
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for range t.C {
		d.mu.Lock()
		if len(d.handles) == 0 {
			d.polling = false
			d.mu.Unlock()
			return
		}
		hs := make([]*execHandle, 0, len(d.handles))
		for h := range d.handles {
			hs = append(hs, h)
		}
		d.mu.Unlock()
		d.check(hs)
	}
}

// check enforces memory limits, rotates logs and notices the end of adopted
// leaders, for the handles hs.
func (d *Exec) check(hs []*execHandle) {
	limited := map[int]bool{}
	for _, h := range hs {
		if h.state.Task.MemoryMB > 0 {
			limited[h.state.Pgid] = true
		}
	}
	var rss map[int]int64
	if len(limited) > 0 {
		var err error
		if rss, err = groupRSS(d.fs, limited); err != nil {
			d.log.Warn("memory check", "err", err)
		}
	}
	for _, h := range hs {
		d.checkOne(h, rss)
	}
}

// checkOne rotates h's logs, enforces its memory limit and, for an adopted
// process, notices the leader's end; rss holds the groups' resident memory.
func (d *Exec) checkOne(h *execHandle, rss map[int]int64) {
	h.checking.Lock()
	defer h.checking.Unlock()
	select {
	case <-h.done:
		return
	default:
	}
	t := h.state.Task
	for _, p := range []string{t.StdoutPath(), t.StderrPath()} {
		if _, err := rotateLog(p, d.cfg.LogMaxBytes, d.cfg.LogBackups); err != nil {
			d.log.Warn("log rotation", "task", t.ID, "err", err)
		}
	}
	if limit := int64(t.MemoryMB) << 20; limit > 0 && rss[h.state.Pgid] > limit {
		reason := fmt.Sprintf("memory limit %d MB exceeded (RSS %d MB)", t.MemoryMB, rss[h.state.Pgid]>>20)
		d.log.Info("killing process group", "task", t.ID, "pgid", h.state.Pgid, "reason", reason)
		h.request(reason, false, true)
	}
	if !h.child {
		info, err := readProc(d.fs, h.state.Pid)
		if errors.Is(err, os.ErrNotExist) || (err == nil && (info.startTime != h.state.StartTime || info.state == "Z" || info.state == "X")) {
			h.leaderEnded(Exit{Code: -1, Unknown: true})
		}
	}
}
