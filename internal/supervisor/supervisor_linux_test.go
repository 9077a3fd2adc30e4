package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recorder keeps a supervisor's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// find returns the events of task id of kind k.
func (r *recorder) find(id string, k EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Task.ID == id && e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// wait waits for the n-th event of task id of kind k and returns it.
func (r *recorder) wait(t *testing.T, id string, k EventKind, n int) Event {
	t.Helper()
	var got []Event
	eventually(t, 15*time.Second, fmt.Sprintf("no %s event #%d for %s", k, n, id), func() bool {
		got = r.find(id, k)
		return len(got) >= n
	})
	return got[n-1]
}

// kinds lists the kinds of task id's events in order.
func (r *recorder) kinds(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []string
	for _, e := range r.events {
		if e.Task.ID == id {
			ks = append(ks, string(e.Kind))
		}
	}
	return strings.Join(ks, " ")
}

// runSupervisor runs a supervisor over driver d until the test ends, and
// then stops everything it still runs. detach ends Run early, leaving the
// processes running, as an agent that stops does.
func runSupervisor(t *testing.T, d Driver, p RestartPolicy) (s *Supervisor, rec *recorder, detach func()) {
	t.Helper()
	rec = &recorder{}
	s, err := New(Config{Driver: d, Restart: p, OnEvent: rec.record, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	detach = func() {
		cancel()
		<-done
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer stopCancel()
			if err := s.StopAll(stopCtx); err != nil {
				t.Error(err)
			}
		}
		detach()
	})
	return s, rec, detach
}

func TestSupervisorRestartsThenGivesUp(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{Delay: 50 * time.Millisecond, MaxDelay: time.Second, MaxFailures: 3})
	task := shTask(t, "crash", "echo up; exit 2")
	if err := s.Apply([]Task{task}); err != nil {
		t.Fatal(err)
	}
	failed := rec.wait(t, "crash", EventFailed, 1)
	if got, want := rec.kinds("crash"), "started exited started exited started failed"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if failed.Exit == nil || failed.Exit.Code != 2 || failed.Restarts != 2 || !strings.Contains(failed.Err.Error(), "exit status 2") {
		t.Errorf("failed event = %+v (%v)", failed, failed.Err)
	}
	exited := rec.find("crash", EventExited)
	for i, e := range exited {
		if e.Restarts != i+1 || e.Exit == nil || e.Exit.Code != 2 {
			t.Errorf("exited event %d = %+v", i, e)
		}
	}
	st := s.Status()
	if len(st) != 1 || st[0].State != TaskFailed || st[0].Restarts != 2 || st[0].Pid != 0 {
		t.Errorf("status = %+v", st)
	}
	// Given up, it stays given up while the same task is applied again.
	if err := s.Apply([]Task{task}); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st[0].State != TaskFailed {
		t.Errorf("status after re-applying = %+v", st)
	}
	// Dropping it ends it, with a stopped event (no process) that says
	// how it last ended.
	if err := s.Apply(nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "failed task not dropped", func() bool { return len(s.Status()) == 0 })
	if stopped := rec.wait(t, "crash", EventStopped, 1); stopped.Pid != 0 || stopped.Exit == nil || stopped.Exit.Code != 2 {
		t.Errorf("stopped event of the given-up task = %+v", stopped)
	}
}

// TestSupervisorStopInBackoff drops a task while it waits to restart: it
// ends with a stopped event and is not started again.
func TestSupervisorStopInBackoff(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{Delay: time.Minute, MaxDelay: time.Minute, MaxFailures: 3})
	if err := s.Apply([]Task{shTask(t, "crash", "exit 3")}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "crash", EventExited, 1)
	if err := s.Apply(nil); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "crash", EventStopped, 1)
	eventually(t, 5*time.Second, "task in backoff not dropped", func() bool { return len(s.Status()) == 0 })
	if got, want := rec.kinds("crash"), "started exited stopped"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestSupervisorFirstRestartWithinASecond(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{}) // the defaults
	task := shTask(t, "crash", "")
	task.Command[2] = `sleep 0.1; kill -9 $$`
	if err := s.Apply([]Task{task}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		exited := rec.wait(t, "crash", EventExited, i)
		started := rec.wait(t, "crash", EventStarted, i+1)
		gap := started.At.Sub(exited.Exit.At)
		t.Logf("restart %d after %s (delay %s)", i, gap, exited.Delay)
		if exited.Exit.Signal != "SIGKILL" {
			t.Errorf("exit = %+v", exited.Exit)
		}
		if i == 1 && gap > time.Second {
			t.Errorf("first restart after %s, want at most 1s", gap)
		}
		if started.Restarts != i {
			t.Errorf("started event counts %d restarts, want %d", started.Restarts, i)
		}
	}
}

func TestSupervisorApplyStartsStopsReplaces(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{})
	a, b := shTask(t, "a", "exec sleep 300"), shTask(t, "b", "exec sleep 300")
	if err := s.Apply([]Task{a, b}); err != nil {
		t.Fatal(err)
	}
	pa, pb := rec.wait(t, "a", EventStarted, 1).Pid, rec.wait(t, "b", EventStarted, 1).Pid

	if err := s.Apply([]Task{a}); err != nil {
		t.Fatal(err)
	}
	stopped := rec.wait(t, "b", EventStopped, 1)
	if stopped.Pid != pb || stopped.Exit == nil || !stopped.Exit.Stopped || alive(pb) {
		t.Errorf("b stopped: %+v, alive %v", stopped, alive(pb))
	}
	if !alive(pa) || len(rec.find("a", EventStopped)) != 0 {
		t.Error("a was touched when b was dropped")
	}

	// A changed task replaces the old process; the new one starts only
	// once the old one is gone.
	a2 := a
	a2.Env = map[string]string{"VERSION": "2"}
	if err := s.Apply([]Task{a2}); err != nil {
		t.Fatal(err)
	}
	second := rec.wait(t, "a", EventStarted, 2)
	first := rec.wait(t, "a", EventStopped, 1)
	if second.Pid == pa || alive(pa) || !second.Task.Equal(a2) || second.At.Before(first.At) {
		t.Errorf("replacement: started %+v after stopped %+v", second, first)
	}
	if states := s.States(); len(states) != 1 || states[0].Pid != second.Pid {
		t.Errorf("states = %+v", states)
	}

	if err := s.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if alive(second.Pid) || len(s.Status()) != 0 || len(s.States()) != 0 {
		t.Errorf("after StopAll: alive %v, status %+v", alive(second.Pid), s.Status())
	}
}

func TestSupervisorReplacesOneAtATime(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{})
	task := shTask(t, "a", "exec sleep 300")
	task.StopTimeout = 200 * time.Millisecond
	var versions []Task
	for v := range 4 {
		tv := task
		tv.Env = map[string]string{"VERSION": fmt.Sprint(v)}
		versions = append(versions, tv)
	}
	if err := s.Apply(versions[:1]); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "a", EventStarted, 1)
	// Three changes in a row: the middle versions may never start, and no
	// two processes of "a" ever run at once.
	for _, v := range versions[1:] {
		if err := s.Apply([]Task{v}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "last version not started", func() bool {
		for _, e := range rec.find("a", EventStarted) {
			if e.Task.Equal(versions[3]) {
				return true
			}
		}
		return false
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	running := 0
	for _, e := range rec.events {
		switch e.Kind {
		case EventStarted:
			running++
		case EventStopped:
			running--
		}
		if running > 1 {
			t.Fatalf("two processes of a at once: %v", rec.events)
		}
	}
}

func TestSupervisorApplyBeforeRun(t *testing.T) {
	d := newExec(t, ExecConfig{})
	rec := &recorder{}
	s, err := New(Config{Driver: d, OnEvent: rec.record, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]Task{shTask(t, "early", "exec sleep 300")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]Task{shTask(t, "x", "true"), shTask(t, "x", "true")}); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("Apply with a duplicate ID = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	rec.wait(t, "early", EventStarted, 1)
	if err := s.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
}

func TestSupervisorPermanentStartFailure(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{})
	task := shTask(t, "nouser", "true")
	task.User = "tandem-no-such-user"
	if err := s.Apply([]Task{task}); err != nil {
		t.Fatal(err)
	}
	failed := rec.wait(t, "nouser", EventFailed, 1)
	if !errors.Is(failed.Err, ErrUnknownUser) || len(rec.find("nouser", EventExited)) != 0 {
		t.Errorf("failed = %+v, events %q", failed, rec.kinds("nouser"))
	}
}

func TestSupervisorAdoptsAfterRestart(t *testing.T) {
	d1 := newExec(t, ExecConfig{})
	s1, rec1, detach1 := runSupervisor(t, d1, RestartPolicy{})
	keep, drop := shTask(t, "keep", "exec sleep 300"), shTask(t, "drop", "exec sleep 300")
	if err := s1.Apply([]Task{keep, drop}); err != nil {
		t.Fatal(err)
	}
	pk, pd := rec1.wait(t, "keep", EventStarted, 1).Pid, rec1.wait(t, "drop", EventStarted, 1).Pid
	// The agent stops: its supervisor detaches and leaves both running.
	detach1()
	states := s1.States()
	if len(states) != 2 || !alive(pk) || !alive(pd) {
		t.Fatalf("after Run ended: states %+v, alive %v %v", states, alive(pk), alive(pd))
	}

	// The next agent is allocated only "keep".
	d2 := newExec(t, ExecConfig{})
	s2, rec2, _ := runSupervisor(t, d2, RestartPolicy{})
	if err := s2.Adopt(context.Background(), states, []Task{keep}); err != nil {
		t.Fatal(err)
	}
	if alive(pd) {
		t.Error("Adopt returned with the orphan still running")
	}
	if started := rec2.wait(t, "keep", EventStarted, 1); started.Pid != pk || !started.Adopted {
		t.Errorf("keep started again as %d instead of adopting %d", started.Pid, pk)
	}
	if got := s2.States(); len(got) != 1 || got[0].Pid != pk {
		t.Errorf("states = %+v", got)
	}
	// Crash of the adopted process: it is restarted as a child.
	if err := unix.Kill(pk, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exited := rec2.wait(t, "keep", EventExited, 1)
	if exited.Exit == nil || !exited.Exit.Unknown {
		t.Errorf("exit of adopted process = %+v", exited.Exit)
	}
	if again := rec2.wait(t, "keep", EventStarted, 2); again.Pid == pk || again.Adopted {
		t.Error("not restarted")
	}
}

func TestOrphans(t *testing.T) {
	a := Task{ID: "a", Command: []string{"x"}, LogDir: "/l"}
	aEmptyEnv := a
	aEmptyEnv.Env = map[string]string{}
	aChanged := a
	aChanged.Command = []string{"y"}
	b := Task{ID: "b", Command: []string{"x"}, LogDir: "/l"}
	st := func(t Task, pid int) State { return State{Task: t, Pid: pid} }

	for _, tc := range []struct {
		name       string
		states     []State
		desired    []Task
		keep, stop []int
	}{
		{"nothing left", nil, []Task{a}, nil, nil},
		{"still desired", []State{st(a, 1)}, []Task{aEmptyEnv, b}, []int{1}, nil},
		{"no longer desired", []State{st(a, 1), st(b, 2)}, []Task{b}, []int{2}, []int{1}},
		{"changed", []State{st(a, 1)}, []Task{aChanged}, nil, []int{1}},
		{"twice", []State{st(a, 1), st(a, 2)}, []Task{a}, []int{1}, []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, stop := Orphans(tc.states, tc.desired)
			if got := pids(keep); fmt.Sprint(got) != fmt.Sprint(tc.keep) {
				t.Errorf("keep %v, want %v", got, tc.keep)
			}
			if got := pids(stop); fmt.Sprint(got) != fmt.Sprint(tc.stop) {
				t.Errorf("stop %v, want %v", got, tc.stop)
			}
		})
	}
}

func pids(states []State) []int {
	var out []int
	for _, s := range states {
		out = append(out, s.Pid)
	}
	return out
}

// TestSupervisorTaskRestartDelay: a task's own restart delay replaces the
// supervisor's.
func TestSupervisorTaskRestartDelay(t *testing.T) {
	d := newExec(t, ExecConfig{})
	s, rec, _ := runSupervisor(t, d, RestartPolicy{Delay: 50 * time.Millisecond, MaxDelay: time.Second})
	task := shTask(t, "slow", "exit 1")
	task.RestartDelay, task.RestartMaxDelay = 3*time.Second, 10*time.Second
	if err := s.Apply([]Task{task}); err != nil {
		t.Fatal(err)
	}
	// ±20% randomisation around the task's 3 s.
	if e := rec.wait(t, "slow", EventExited, 1); e.Delay < 2400*time.Millisecond || e.Delay > 3600*time.Millisecond {
		t.Errorf("first restart in %s, want about 3s", e.Delay)
	}
}
