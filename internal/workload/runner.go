package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/catalog"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/supervisor"
	"github.com/tandemhq/tandem/internal/wire"
)

// RunnerConfig is what a node's Runner needs.
type RunnerConfig struct {
	Store   *store.Store
	Catalog *catalog.Catalog
	// Node is this node's name, Address the address other nodes reach
	// its instances at.
	Node, Address string
	// Dir holds the runner's files: logs/ and the processes' states.
	Dir string
	// PortLo and PortHi bound the ports handed to instances.
	PortLo, PortHi int
	// NoSubreaper: see config.Config.NoSubreaper.
	NoSubreaper bool
	// User runs the instances that name no user (empty: the agent's);
	// DenyRoot refuses to run any as root. See supervisor.ExecConfig.
	User     string
	DenyRoot bool
	// LeaseTTL is the TTL of the node's liveness lease; LastRenewal
	// returns when the last answered renewal of it was sent (zero before
	// the first), with a monotonic reading; Lease returns the current
	// lease and a channel closed when it changes (cluster.Manager's
	// LastContact and Lease). With them the runner fences: see fence.go.
	// Without them (nil) it never fences.
	LeaseTTL    time.Duration
	LastRenewal func() time.Time
	Lease       func() (clientv3.LeaseID, <-chan struct{})
	Log         *slog.Logger
}

// Runner runs the allocations the scheduler gives this node.
type Runner struct {
	cfg RunnerConfig
	sup *supervisor.Supervisor

	mu     sync.Mutex
	allocs map[string]wire.Allocation // by ID, as the store holds them
	ports  map[string]map[string]int  // by alloc ID: the ports handed to it
	ctx    context.Context
	// fencedAt, when not zero, is when the node was cut off from its lease
	// and killed its at_most_one instances (fence.go).
	fencedAt time.Time

	drains drains // instances drained before they stop (drain.go)
}

// NewRunner makes a node's runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("workloads: %w", err)
	}
	return &Runner{cfg: cfg, allocs: map[string]wire.Allocation{}, ports: map[string]map[string]int{}}, nil
}

// statesFile keeps the processes' states, for adoption after a restart.
func (r *Runner) statesFile() string { return filepath.Join(r.cfg.Dir, "processes.json") }

// Run starts the supervisor, adopts the processes an earlier run left,
// and follows this node's allocations until ctx ends. The processes keep
// running after it returns: the next start adopts them.
func (r *Runner) Run(ctx context.Context) error {
	start := time.Now()
	if r.cfg.NoSubreaper {
		// inside another program: leave its orphans to it
	} else if err := supervisor.BecomeSubreaper(); err != nil {
		r.cfg.Log.Warn("workloads: cannot become the child subreaper; orphaned grandchildren of instances go to init", "err", err)
	}
	drv, err := supervisor.NewExec(supervisor.ExecConfig{User: r.cfg.User, DenyRoot: r.cfg.DenyRoot, Logger: r.cfg.Log})
	if err != nil {
		return fmt.Errorf("workloads: %w", err)
	}
	r.sup, err = supervisor.New(supervisor.Config{Driver: drv, OnEvent: r.onEvent, Logger: r.cfg.Log})
	if err != nil {
		return fmt.Errorf("workloads: %w", err)
	}
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	supDone := make(chan error, 1)
	go func() { supDone <- r.sup.Run(ctx) }()

	rev, err := r.load(ctx)
	for err != nil {
		if ctx.Err() != nil {
			return nil
		}
		sleep(ctx, 500*time.Millisecond)
		rev, err = r.load(ctx)
	}
	var states []supervisor.State
	if b, err := os.ReadFile(r.statesFile()); err == nil {
		if err := json.Unmarshal(b, &states); err != nil {
			r.cfg.Log.Warn("workloads: the saved process states are damaged; not adopting", "err", err)
			states = nil
		}
	}
	r.mu.Lock()
	desired := r.desiredLocked()
	r.mu.Unlock()
	if err := r.sup.Adopt(ctx, states, desired); err != nil {
		r.cfg.Log.Warn("workloads: adopt the processes left running", "err", err)
	}
	r.reconcile(ctx)
	fenceDone := make(chan struct{})
	go func() {
		defer close(fenceDone)
		r.runFence(ctx, start)
	}()

	for ctx.Err() == nil {
		wch := r.cfg.Store.Client().Watch(ctx, keys.NodeAllocsPrefix(r.cfg.Node), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if err := resp.Err(); err != nil {
				break
			}
			r.mu.Lock()
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), keys.NodeAllocsPrefix(r.cfg.Node))
				if ev.Type == clientv3.EventTypeDelete {
					delete(r.allocs, id)
					continue
				}
				var a wire.Allocation
				if json.Unmarshal(ev.Kv.Value, &a) == nil {
					r.allocs[id] = a
				}
			}
			rev = resp.Header.Revision
			r.mu.Unlock()
			r.reconcile(ctx)
		}
		if ctx.Err() != nil {
			break
		}
		// The watch ended (store client switched, compaction): read again.
		if n, err := r.load(ctx); err == nil {
			rev = n
			r.reconcile(ctx)
		} else {
			sleep(ctx, 500*time.Millisecond)
		}
	}
	<-fenceDone
	r.saveStates()
	<-supDone
	r.drains.wg.Wait()
	return nil
}

// load reads this node's allocations and their statuses (for the ports
// handed out before).
func (r *Runner) load(ctx context.Context) (int64, error) {
	c := r.cfg.Store.Client()
	resp, err := c.Txn(ctx).Then(
		clientv3.OpGet(keys.NodeAllocsPrefix(r.cfg.Node), clientv3.WithPrefix()),
		clientv3.OpGet(keys.AllocStatusPrefix+r.cfg.Node+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allocs = map[string]wire.Allocation{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var a wire.Allocation
		if json.Unmarshal(kv.Value, &a) == nil {
			r.allocs[a.ID] = a
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var st wire.AllocStatus
		id := strings.TrimPrefix(string(kv.Key), keys.AllocStatusPrefix+r.cfg.Node+"/")
		if json.Unmarshal(kv.Value, &st) == nil && len(st.Ports) > 0 && r.ports[id] == nil {
			r.ports[id] = st.Ports
		}
	}
	return resp.Header.Revision, nil
}

// desiredLocked is the tasks of the allocations to run.
func (r *Runner) desiredLocked() []supervisor.Task {
	var out []supervisor.Task
	for _, id := range slices.Sorted(maps.Keys(r.allocs)) {
		a := r.allocs[id]
		if a.Desired != wire.DesiredRun || r.fencedLocked(a) {
			continue
		}
		t, err := r.taskLocked(a)
		if err != nil {
			r.cfg.Log.Warn("workloads: cannot run an allocation", "id", a.ID, "err", err)
			continue
		}
		out = append(out, t)
	}
	return out
}

// taskLocked is the process of allocation a, with its ports (handed out
// here the first time).
func (r *Runner) taskLocked(a wire.Allocation) (supervisor.Task, error) {
	w := a.Workload
	ports := r.ports[a.ID]
	if ports == nil && len(w.Ports) > 0 {
		ports = map[string]int{}
		for _, p := range w.Ports {
			n, err := r.freePortLocked()
			if err != nil {
				return supervisor.Task{}, err
			}
			ports[p.Name] = n
		}
		r.ports[a.ID] = ports
	}
	env := map[string]string{}
	maps.Copy(env, w.Run.Env)
	env["TANDEM_INSTANCE"] = a.ID
	env["TANDEM_SERVICE"] = a.Service
	env["TANDEM_NODE"] = r.cfg.Node
	env["TANDEM_ADDRESS"] = r.cfg.Address
	t := supervisor.Task{
		ID: a.ID, Service: a.Service, Command: w.Run.Command, Env: env, Dir: w.Run.Dir, User: w.Run.User,
		MemoryMB: w.Resources.MemoryMB, CPUMillis: w.Resources.CPUMillis,
		LogDir: filepath.Join(r.cfg.Dir, "logs"), StopTimeout: w.StopTimeout.D(),
		RestartDelay: w.Restart.Delay.D(), RestartMaxDelay: w.Restart.MaxDelay.D(),
	}
	for _, p := range w.Ports {
		t.Ports = append(t.Ports, supervisor.Port{Name: p.Name, Number: ports[p.Name]})
	}
	return t, nil
}

// freePortLocked picks a port of the range that no allocation of this node
// holds and that can be bound now.
func (r *Runner) freePortLocked() (int, error) {
	used := map[int]bool{}
	for _, ps := range r.ports {
		for _, n := range ps {
			used[n] = true
		}
	}
	span := r.cfg.PortHi - r.cfg.PortLo + 1
	start := int(time.Now().UnixNano() % int64(span))
	for i := range span {
		n := r.cfg.PortLo + (start+i)%span
		if used[n] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(r.cfg.Address, strconv.Itoa(n)))
		if err != nil {
			continue
		}
		ln.Close()
		return n, nil
	}
	return 0, fmt.Errorf("no free port left in %d-%d (--workload-ports)", r.cfg.PortLo, r.cfg.PortHi)
}

// reconcile makes the processes match the allocations: an instance to
// stop that runs is drained first (it keeps running until every alive
// node's proxy has dropped it and finished its requests to it: drain.go),
// the desired set is applied (which stops the others), and allocations
// that are stopped are forgotten. Calls are serialized: the watch loop
// and the drains that end both reconcile.
func (r *Runner) reconcile(ctx context.Context) {
	r.drains.rec.Lock()
	defer r.drains.rec.Unlock()
	status := r.sup.Status()
	r.mu.Lock()
	desired := r.desiredLocked()
	var stopping []wire.Allocation
	fenced := map[string]bool{}
	for _, a := range r.allocs {
		if a.Desired == wire.DesiredStop {
			stopping = append(stopping, a)
			fenced[a.ID] = r.fencedLocked(a)
		}
	}
	r.mu.Unlock()
	desired = append(desired, r.hold(ctx, stopping, fenced, status)...)
	if err := r.sup.Apply(desired); err != nil {
		r.cfg.Log.Warn("workloads: apply", "err", err)
	}
	running := map[string]bool{}
	for _, st := range r.sup.Status() {
		running[st.Task.ID] = true
	}
	for _, a := range stopping {
		if !running[a.ID] {
			r.forget(ctx, a)
		}
	}
	r.saveStates()
}

// forget removes a stopped allocation and its status from the store.
func (r *Runner) forget(ctx context.Context, a wire.Allocation) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.cfg.Store.Client().Txn(dctx).Then(append([]clientv3.Op{
		clientv3.OpDelete(keys.AllocKey(r.cfg.Node, a.ID)),
		clientv3.OpDelete(keys.AllocStatusKey(r.cfg.Node, a.ID)),
	}, drainKeysOps(a.ID)...)...).Commit()
	if err != nil {
		r.cfg.Log.Warn("workloads: remove a stopped allocation", "id", a.ID, "err", err)
		return
	}
	r.mu.Lock()
	delete(r.allocs, a.ID)
	delete(r.ports, a.ID)
	r.mu.Unlock()
	r.cfg.Log.Info("workloads: stopped an instance", "service", a.Service, "id", a.ID, "why", a.StopReason)
}

// onEvent follows the supervisor: it registers a started instance in the
// catalog and reports each allocation's state.
func (r *Runner) onEvent(e supervisor.Event) {
	r.mu.Lock()
	ctx := r.ctx
	a, known := r.allocs[e.Task.ID]
	ports := r.ports[e.Task.ID]
	r.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	st := wire.AllocStatus{Pid: e.Pid, Ports: ports, Restarts: e.Restarts, Since: e.At.UTC()}
	if e.Exit != nil {
		st.LastExit = e.Exit.String()
	}
	if e.Err != nil {
		st.Error = e.Err.Error()
	}
	switch e.Kind {
	case supervisor.EventStarted:
		st.State = wire.AllocRunning
		if known && a.Desired == wire.DesiredRun && len(e.Task.Ports) > 0 {
			r.register(ctx, a, e.Task.Ports[0].Number)
		}
	case supervisor.EventExited:
		st.State = wire.AllocBackoff
	case supervisor.EventFailed:
		st.State = wire.AllocFailed
		r.deregister(ctx, e.Task.Service, e.Task.ID)
		r.cfg.Log.Warn("workloads: an instance keeps failing; handing it back to the scheduler", "id", e.Task.ID, "err", st.Error, "last_exit", st.LastExit)
	case supervisor.EventStopped:
		r.deregister(ctx, e.Task.Service, e.Task.ID)
		if known && a.Desired == wire.DesiredStop {
			go r.forget(ctx, a)
		}
		return
	}
	if !known {
		return
	}
	b, _ := json.Marshal(st)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.cfg.Store.Client().Put(wctx, keys.AllocStatusKey(r.cfg.Node, e.Task.ID), string(b)); err != nil {
		r.cfg.Log.Warn("workloads: report an instance's state", "id", e.Task.ID, "err", err)
	}
	r.saveStates()
}

// register puts the instance in the catalog, owned by this node (its
// health bound to the node's lease, checked by this node).
func (r *Runner) register(ctx context.Context, a wire.Allocation, port int) {
	in := registry.Instance{
		ID: a.ID, Service: a.Service, Address: r.cfg.Address, Port: port,
		Meta: map[string]string{"alloc": a.ID, "generation": strconv.FormatInt(a.Generation, 10)},
	}
	for attempt := 0; attempt < 3; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := r.cfg.Catalog.RegisterOwned(rctx, in)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, catalog.ErrInvalid) || ctx.Err() != nil {
			r.cfg.Log.Warn("workloads: register an instance", "id", a.ID, "err", err)
			return
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func (r *Runner) deregister(ctx context.Context, svc, id string) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, _, err := r.cfg.Catalog.Deregister(dctx, svc, id); err != nil {
		r.cfg.Log.Warn("workloads: deregister an instance", "id", id, "err", err)
	}
}

// saveStates writes the processes' states for the next start to adopt.
func (r *Runner) saveStates() {
	if r.sup == nil {
		return
	}
	b, err := json.Marshal(r.sup.States())
	if err == nil {
		err = pki.WriteFileAtomic(r.statesFile(), b, 0o600)
	}
	if err != nil {
		r.cfg.Log.Warn("workloads: save the process states", "err", err)
	}
}
