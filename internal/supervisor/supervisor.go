package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"
)

// EventKind says what happened to a task.
type EventKind string

// The kinds of Event.
const (
	// EventStarted: a process of the task is running (started or adopted).
	EventStarted EventKind = "started"
	// EventExited: the process ended without being asked to (even with
	// status 0: a service is meant to keep running), or could not start;
	// the supervisor restarts it after Event.Delay.
	EventExited EventKind = "exited"
	// EventFailed: the task keeps failing (or cannot run on this node), and
	// the supervisor gave it up: hand it back to the scheduler. It stays
	// given up until Apply drops it or changes it.
	EventFailed EventKind = "failed"
	// EventStopped: the process was stopped because the task is no longer
	// desired (Apply, StopAll). A task dropped while it had no process
	// (backing off, given up) gets one too, without a Pid.
	EventStopped EventKind = "stopped"
)

// Event reports a change in one task's life.
type Event struct {
	Kind EventKind
	// Task is the task concerned, with its ports.
	Task Task
	// Pid is the process's leader (started, exited, stopped).
	Pid int
	// Adopted is set on the started event of a process an earlier run of
	// the agent started, found again by Adopt.
	Adopted bool
	// Exit says how the process ended (exited, stopped, and failed when a
	// run ended it).
	Exit *Exit
	// Err is why a start failed (exited, failed), or why the task was given
	// up (failed).
	Err error
	// Restarts counts the restarts of the task so far.
	Restarts int
	// Delay is the wait before the next start (exited).
	Delay time.Duration
	// At is when it happened.
	At time.Time
}

// Config configures a Supervisor.
type Config struct {
	// Driver starts and adopts processes. Required.
	Driver Driver
	// Restart is the restart policy of every task.
	Restart RestartPolicy
	// OnEvent, if set, is called for every event, from the goroutine of the
	// task concerned: one call at a time per task, concurrently across
	// tasks. It must not block for long. It may call Apply, Status and
	// States, but not StopAll or Adopt, which wait for task goroutines.
	OnEvent func(Event)
	// Logger receives the supervisor's messages; nil discards them.
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Driver == nil {
		return errors.New("supervisor: no driver configured")
	}
	return c.Restart.Validate()
}

// TaskState is where a task stands.
type TaskState string

// The states of a task.
const (
	TaskStarting TaskState = "starting"
	TaskRunning  TaskState = "running"
	TaskBackoff  TaskState = "backoff" // waiting to restart
	TaskFailed   TaskState = "failed"  // given up: see EventFailed
	TaskStopping TaskState = "stopping"
)

// TaskStatus describes one task the supervisor runs.
type TaskStatus struct {
	Task     Task
	State    TaskState
	Pid      int // zero when no process runs
	Restarts int
	LastExit *Exit
	// Error is why the task failed, or why its last start failed.
	Error string
	// Since is when the task entered State.
	Since time.Time
}

// Supervisor keeps this node's set of tasks running: it starts the tasks it
// is given, stops the ones taken away, restarts crashed ones with backoff,
// and gives up a task that keeps failing.
//
// Each task has one goroutine, which alone starts, watches and stops the
// task's process. Run's end detaches those goroutines and leaves the
// processes running, for the next agent to adopt; StopAll stops them. All
// methods are safe for concurrent use.
type Supervisor struct {
	drv    Driver
	policy RestartPolicy
	emitFn func(Event)
	log    *slog.Logger

	mu       sync.Mutex
	ctx      context.Context // Run's; nil before Run
	desired  map[string]Task
	runners  map[string]*runner // by task ID; the current one for each ID
	stopping map[*runner]bool   // runners told to stop, not yet done
	wg       sync.WaitGroup
}

// runner is the life of one task on this node. Its fields other than task,
// prev, stop and done are guarded by Supervisor.mu.
type runner struct {
	task Task
	prev []*runner // runners of the same ID still stopping: wait for them
	stop chan struct{}
	done chan struct{}

	handle  Handle // current process, or nil
	started bool   // the goroutine runs
	stopped bool   // stop is closed
	kill    bool   // stop with SIGKILL at once (Kill), not after StopTimeout
	status  TaskStatus
}

// New returns a supervisor; it starts processes once Run runs.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	emit := cfg.OnEvent
	if emit == nil {
		emit = func(Event) {}
	}
	return &Supervisor{
		drv:      cfg.Driver,
		policy:   cfg.Restart.withDefaults(),
		emitFn:   emit,
		log:      log,
		desired:  map[string]Task{},
		runners:  map[string]*runner{},
		stopping: map[*runner]bool{},
	}, nil
}

// Run starts the tasks given so far and keeps supervising until ctx ends.
// It then returns once every task goroutine has ended, leaving the
// processes running: call StopAll first to stop them.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ctx != nil {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.ctx = ctx
	s.reconcile()
	s.mu.Unlock()
	<-ctx.Done()
	s.wg.Wait()
	return nil
}

// Apply makes desired the set of tasks this node runs: tasks not running yet
// are started, running tasks missing from desired are stopped (in the
// background: watch EventStopped), and a task whose fields changed is
// stopped and started again. It does not wait for processes to start or
// stop. Before Run, the set is kept and applied when Run starts.
func (s *Supervisor) Apply(desired []Task) error {
	want := make(map[string]Task, len(desired))
	for _, t := range desired {
		if _, dup := want[t.ID]; dup {
			return fmt.Errorf("%w %q: given twice", ErrInvalidTask, t.ID)
		}
		want[t.ID] = t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.desired = want
	s.reconcile()
	return nil
}

// reconcile brings the runners in line with s.desired. Called with s.mu
// held.
func (s *Supervisor) reconcile() {
	for id, r := range s.runners {
		if t, ok := s.desired[id]; !ok || !t.Equal(r.task) {
			s.stopRunner(r)
		}
	}
	for id, t := range s.desired {
		if s.runners[id] == nil {
			s.runners[id] = s.newRunner(t, nil)
		}
	}
	if s.ctx == nil {
		return
	}
	for _, r := range s.runners {
		if !r.started {
			r.started = true
			s.wg.Add(1)
			go s.runTask(s.ctx, r)
		}
	}
}

// newRunner makes the runner of t, to start once any earlier runner of the
// same ID is done. Called with s.mu held.
func (s *Supervisor) newRunner(t Task, h Handle) *runner {
	r := &runner{
		task:   t,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		handle: h,
		status: TaskStatus{Task: t, State: TaskStarting, Since: time.Now()},
	}
	for old := range s.stopping {
		if old.task.ID == t.ID {
			r.prev = append(r.prev, old)
		}
	}
	return r
}

// stopRunner tells r to stop its process and end. Called with s.mu held.
func (s *Supervisor) stopRunner(r *runner) {
	delete(s.runners, r.task.ID)
	select {
	case <-r.done:
		return // its goroutine ended with Run's
	default:
	}
	if !r.started {
		// Never ran: the process of an adopted task still has to stop,
		// which only a goroutine can do.
		if r.handle == nil {
			close(r.done)
			return
		}
		r.started = true
		s.wg.Add(1)
		go s.runTask(context.Background(), r)
	}
	if !r.stopped {
		r.stopped = true
		close(r.stop)
	}
	s.stopping[r] = true
}

// Kill drops the tasks ids from the desired set, as Apply without them
// would, but ends their processes at once: SIGKILL to the whole group
// right behind the SIGTERM, without waiting for StopTimeout. It does not
// wait for them to end: watch EventStopped. A later Apply that gives a
// task again starts it again.
func (s *Supervisor) Kill(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.desired, id)
		if r := s.runners[id]; r != nil {
			r.kill = true
		}
	}
	s.reconcile()
}

// StopAll stops every task and forgets the desired set, and returns once
// every process is gone or ctx ends. Call it while Run runs: once Run has
// returned, no goroutine is left to stop the processes.
func (s *Supervisor) StopAll(ctx context.Context) error {
	s.mu.Lock()
	s.desired = map[string]Task{}
	s.reconcile()
	var dones []chan struct{}
	for r := range s.stopping {
		dones = append(dones, r.done)
	}
	s.mu.Unlock()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("stop all tasks: %w", ctx.Err())
		}
	}
	return nil
}

// Status describes every task, sorted by ID; a task being replaced appears
// twice, the stopping runner after the current one.
func (s *Supervisor) Status() []TaskStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []TaskStatus
	for _, r := range s.all() {
		out = append(out, r.status)
	}
	return out
}

// States returns the State of every process running now, for the agent to
// keep and adopt after it restarts.
func (s *Supervisor) States() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []State
	for _, r := range s.all() {
		if r.handle != nil {
			out = append(out, r.handle.State())
		}
	}
	return out
}

// all returns the current runners and those still stopping, sorted by task
// ID, current first. Called with s.mu held.
func (s *Supervisor) all() []*runner {
	out := make([]*runner, 0, len(s.runners)+len(s.stopping))
	for _, r := range s.runners {
		out = append(out, r)
	}
	for r := range s.stopping {
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].task.ID != out[j].task.ID {
			return out[i].task.ID < out[j].task.ID
		}
		return !out[i].stopped && out[j].stopped
	})
	return out
}

// Orphans splits the processes an earlier run of the agent left running
// (states) into those to keep, whose task is still desired unchanged, and
// those to stop. Of two states with the same task ID, only the first is
// kept.
func Orphans(states []State, desired []Task) (keep, stop []State) {
	want := make(map[string]Task, len(desired))
	for _, t := range desired {
		want[t.ID] = t
	}
	kept := map[string]bool{}
	for _, st := range states {
		t, ok := want[st.Task.ID]
		if ok && !kept[t.ID] && t.Equal(st.Task) {
			kept[t.ID] = true
			keep = append(keep, st)
			continue
		}
		stop = append(stop, st)
	}
	return keep, stop
}

// Adopt takes over the processes an earlier run of the agent left running
// and sets the desired tasks, as Apply does. Each process whose task is
// still desired unchanged is watched again instead of started anew; every
// other one is stopped before Adopt returns. A state whose process is gone
// (ErrGone) is skipped: Apply's rules start the task again. Call it once,
// before or after Run starts and before any Apply.
func (s *Supervisor) Adopt(ctx context.Context, states []State, desired []Task) error {
	keep, stop := Orphans(states, desired)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, st := range stop {
		h, err := s.drv.Adopt(st)
		if errors.Is(err, ErrGone) {
			s.log.Info("left-over process already gone", "task", st.Task.ID, "pid", st.Pid, "err", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("stopping left-over process", "task", st.Task.ID, "pid", st.Pid)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	adopted := map[string]Handle{}
	for _, st := range keep {
		h, err := s.drv.Adopt(st)
		if errors.Is(err, ErrGone) {
			s.log.Info("process to adopt is gone; starting it again", "task", st.Task.ID, "pid", st.Pid, "err", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		adopted[st.Task.ID] = h
	}
	wg.Wait()
	want := make(map[string]Task, len(desired))
	for _, t := range desired {
		want[t.ID] = t
	}
	s.mu.Lock()
	for id, h := range adopted {
		if s.runners[id] != nil {
			errs = append(errs, fmt.Errorf("adopt %s: the task is already running; call Adopt before Apply", id))
			go h.Stop(context.WithoutCancel(ctx))
			continue
		}
		s.runners[id] = s.newRunner(want[id], h)
	}
	s.desired = want
	s.reconcile()
	s.mu.Unlock()
	return errors.Join(errs...)
}

// Equal reports whether t and u run the same thing the same way; a nil map
// or slice equals an empty one.
func (t Task) Equal(u Task) bool {
	return t.ID == u.ID && t.Service == u.Service && slices.Equal(t.Command, u.Command) &&
		maps.Equal(t.Env, u.Env) && t.Dir == u.Dir && t.User == u.User && slices.Equal(t.Ports, u.Ports) &&
		t.MemoryMB == u.MemoryMB && t.CPUMillis == u.CPUMillis && t.LogDir == u.LogDir &&
		t.StopTimeout == u.StopTimeout && t.RestartDelay == u.RestartDelay && t.RestartMaxDelay == u.RestartMaxDelay
}

// permanent reports a start error that another attempt on this node will
// not mend.
func permanent(err error) bool {
	return errors.Is(err, ErrInvalidTask) || errors.Is(err, ErrUnknownUser) || errors.Is(err, ErrRootDenied)
}

// runTask is the goroutine of runner r: it starts (or has adopted) the
// task's process, watches it, restarts it under the policy, gives it up,
// or stops it when told to. When ctx ends it returns and leaves the process
// running.
func (s *Supervisor) runTask(ctx context.Context, r *runner) {
	defer s.wg.Done()
	stoppedSent := false
	defer func() {
		s.mu.Lock()
		delete(s.stopping, r)
		st := r.status
		s.mu.Unlock()
		// A task told to stop while it had no process (backing off,
		// given up, waiting for its predecessor) still ends with
		// EventStopped: whoever dropped it waits for that event. It is
		// sent before done closes, so it comes before the events of a
		// task of the same ID that waits for this one.
		if !stoppedSent && ctx.Err() == nil && isClosed(r.stop) {
			s.emit(Event{Kind: EventStopped, Task: r.task, Exit: st.LastExit, Restarts: st.Restarts})
		}
		close(r.done)
	}()
	for _, p := range r.prev {
		select {
		case <-p.done:
		case <-r.stop:
			return
		case <-ctx.Done():
			return
		}
	}
	rs := newRestarts(s.policy.forTask(r.task))
	s.mu.Lock()
	h := r.handle
	s.mu.Unlock()
	adopted := h != nil
	for {
		if h == nil {
			select {
			case <-r.stop:
				return
			default:
			}
			s.setStatus(r, func(st *TaskStatus) { st.State = TaskStarting })
			var err error
			h, err = s.drv.Start(ctx, r.task)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				now := time.Now()
				if permanent(err) {
					s.giveUp(ctx, r, rs, nil, err)
					return
				}
				delay, giveUp := rs.next(now, now)
				if giveUp {
					s.giveUp(ctx, r, rs, nil, fmt.Errorf("failed %d times within %s; last start: %w", s.policy.MaxFailures, s.policy.Window, err))
					return
				}
				s.setStatus(r, func(st *TaskStatus) { st.State, st.Error, st.Restarts = TaskBackoff, err.Error(), rs.count })
				s.log.Warn("task did not start", "task", r.task.ID, "err", err, "retry_in", delay)
				s.emit(Event{Kind: EventExited, Task: r.task, Err: err, Restarts: rs.count, Delay: delay})
				if !s.sleep(ctx, r, delay) {
					return
				}
				continue
			}
		}
		pid, started := h.Pid(), h.State().Started
		s.setStatus(r, func(st *TaskStatus) { st.State, st.Pid, st.Error = TaskRunning, pid, "" })
		s.mu.Lock()
		r.handle = h
		s.mu.Unlock()
		s.emit(Event{Kind: EventStarted, Task: r.task, Pid: pid, Adopted: adopted, Restarts: rs.count})
		adopted = false

		select {
		case <-h.Done():
		case <-r.stop:
			s.setStatus(r, func(st *TaskStatus) { st.State = TaskStopping })
			// Finish the stop even if ctx ends: a half-stopped group
			// would be nobody's.
			sctx := context.WithoutCancel(ctx)
			s.mu.Lock()
			kill := r.kill
			s.mu.Unlock()
			if kill {
				// A stop whose context has ended sends SIGKILL at once.
				var cancel context.CancelFunc
				sctx, cancel = context.WithCancel(sctx)
				cancel()
			}
			if err := h.Stop(sctx); err != nil && !kill {
				s.log.Warn("stop task", "task", r.task.ID, "err", err)
			}
			if kill {
				<-h.Done() // the SIGKILLed group is gone: Exit is valid
			}
			ex := h.Exit()
			s.setStatus(r, func(st *TaskStatus) { st.Pid, st.LastExit = 0, &ex })
			s.clearHandle(r)
			s.emit(Event{Kind: EventStopped, Task: r.task, Pid: pid, Exit: &ex, Restarts: rs.count})
			stoppedSent = true
			return
		case <-ctx.Done():
			return
		}
		ex := h.Exit()
		h = nil
		s.clearHandle(r)
		delay, giveUp := rs.next(started, ex.At)
		s.setStatus(r, func(st *TaskStatus) { st.Pid, st.LastExit = 0, &ex })
		if giveUp {
			s.giveUp(ctx, r, rs, &ex, fmt.Errorf("ended %d times within %s; last: %s", s.policy.MaxFailures, s.policy.Window, ex))
			return
		}
		s.log.Info("task exited; restarting", "task", r.task.ID, "pid", pid, "exit", ex.String(), "retry_in", delay)
		s.setStatus(r, func(st *TaskStatus) { st.State, st.Restarts = TaskBackoff, rs.count })
		s.emit(Event{Kind: EventExited, Task: r.task, Pid: pid, Exit: &ex, Restarts: rs.count, Delay: delay})
		if !s.sleep(ctx, r, delay) {
			return
		}
	}
}

// sleep waits d; false if r is told to stop or ctx ends meanwhile.
func (s *Supervisor) sleep(ctx context.Context, r *runner, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// giveUp marks r failed, reports it, and waits for r to be dropped.
func (s *Supervisor) giveUp(ctx context.Context, r *runner, rs *restarts, ex *Exit, err error) {
	s.log.Warn("task failed; giving it up", "task", r.task.ID, "err", err)
	s.setStatus(r, func(st *TaskStatus) { st.State, st.Error, st.Restarts = TaskFailed, err.Error(), rs.count })
	s.emit(Event{Kind: EventFailed, Task: r.task, Exit: ex, Err: err, Restarts: rs.count})
	select {
	case <-r.stop:
	case <-ctx.Done():
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (s *Supervisor) setStatus(r *runner, f func(*TaskStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := r.status.State
	f(&r.status)
	if r.status.State != before {
		r.status.Since = time.Now()
	}
}

func (s *Supervisor) clearHandle(r *runner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.handle = nil
}

func (s *Supervisor) emit(e Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	s.emitFn(e)
}
