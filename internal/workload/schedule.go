// Package workload runs services' instances: the scheduler (a
// leader-elected singleton around the pure scheduler.Plan) places them by
// writing allocations to the store, and each node's Runner starts the
// processes of the allocations it is given (through internal/supervisor),
// registers them in the catalog, and stops them when they are no longer
// wanted.
package workload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// Capacity is what this machine offers to instances: its CPUs (in
// thousandths) and its memory (MB, from /proc/meminfo; 0 when unknown).
func Capacity() (cpuMillis, memoryMB int) {
	cpuMillis = runtime.NumCPU() * 1000
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return cpuMillis, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return cpuMillis, kb / 1024
		}
	}
	return cpuMillis, 0
}

// Scheduler places the instances of the services tandem runs. Any node
// may run it; one at a time holds its election.
type Scheduler struct {
	st       *store.Store
	name     string
	leaseTTL time.Duration
	// changed notifies of a change in the store (the view's Changed).
	changed func() <-chan struct{}
	log     *slog.Logger
	now     func() time.Time
	// downSince is, by node, when this holder first read the node not
	// alive; reset when it starts leading (only lead's goroutine uses it).
	downSince map[string]time.Time
}

// NewScheduler makes the scheduler of node name; changed wakes it when
// the store changes (view.Changed), leaseTTL is the nodes' lease TTL.
func NewScheduler(st *store.Store, name string, leaseTTL time.Duration, changed func() <-chan struct{}, log *slog.Logger) *Scheduler {
	return &Scheduler{st: st, name: name, leaseTTL: leaseTTL, changed: changed, log: log, now: time.Now}
}

// Run campaigns for the scheduler's election and, while it holds it,
// plans after every change of the store (and at least every second).
func (s *Scheduler) Run(ctx context.Context) error {
	ttl := max(int(s.leaseTTL/time.Second), 1)
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.st.Client(), concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		el := concurrency.NewElection(sess, keys.SchedulerElection)
		if err := el.Campaign(ctx, s.name); err != nil || !cluster.HoldsElection(ctx, el, sess) {
			sess.Close()
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		s.log.Info("this node now runs the scheduler")
		s.lead(ctx, sess, el)
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = el.Resign(rctx)
		cancel()
		sess.Close()
	}
	return nil
}

// lead plans while this node holds the election.
func (s *Scheduler) lead(ctx context.Context, sess *concurrency.Session, el *concurrency.Election) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var retry <-chan time.Time
	lastErr := ""
	s.downSince = map[string]time.Time{}
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		retryAt, err := s.planOnce(pctx, el)
		cancel()
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			s.log.Warn("scheduler: plan", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		retry = nil
		if !retryAt.IsZero() {
			retry = time.After(time.Until(retryAt))
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			s.log.Warn("scheduler: lost the election session; campaigning again")
			return
		case <-s.changed():
		case <-retry:
		case <-tick.C:
		}
	}
}

// snapshot is what one plan reads, at one store revision.
type snapshot struct {
	rev      int64
	services map[string]registry.Service
	nodes    map[string]cluster.NodeRecord
	alive    map[string]bool
	allocs   map[string]allocEntry // by alloc ID
	sched    map[string]string     // service -> its SchedStatus as stored
	// passingSince is, by instance id, since when it passes its checks.
	passingSince map[string]time.Time
	// history is, by service, the spec its last update replaced.
	history map[string]wire.WorkloadHistory
}

type allocEntry struct {
	a      wire.Allocation
	rev    int64
	status *wire.AllocStatus
}

// read takes the snapshot in one transaction.
func (s *Scheduler) read(ctx context.Context) (*snapshot, error) {
	prefixes := []string{keys.ServicesPrefix, keys.NodesPrefix, keys.AlivePrefix, keys.AllocsPrefix, keys.AllocStatusPrefix, keys.SchedPrefix, keys.HealthPrefix, keys.HistoryPrefix}
	var ops []clientv3.Op
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix()))
	}
	resp, err := s.st.Client().Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	sn := &snapshot{rev: resp.Header.Revision, services: map[string]registry.Service{}, nodes: map[string]cluster.NodeRecord{},
		alive: map[string]bool{}, allocs: map[string]allocEntry{}, sched: map[string]string{}, passingSince: map[string]time.Time{}, history: map[string]wire.WorkloadHistory{}}
	statuses := map[string]*wire.AllocStatus{}
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			k := string(kv.Key)
			switch i {
			case 0:
				var svc registry.Service
				if json.Unmarshal(kv.Value, &svc) == nil && svc.Runs() {
					sn.services[svc.Name] = svc
				}
			case 1:
				var rec cluster.NodeRecord
				if json.Unmarshal(kv.Value, &rec) == nil {
					sn.nodes[rec.Name] = rec
				}
			case 2:
				sn.alive[strings.TrimPrefix(k, keys.AlivePrefix)] = true
			case 3:
				var a wire.Allocation
				if json.Unmarshal(kv.Value, &a) == nil && a.ID != "" {
					sn.allocs[a.ID] = allocEntry{a: a, rev: kv.ModRevision}
				}
			case 4:
				var st wire.AllocStatus
				if json.Unmarshal(kv.Value, &st) == nil {
					statuses[k] = &st
				}
			case 5:
				sn.sched[strings.TrimPrefix(k, keys.SchedPrefix)] = string(kv.Value)
			case 7:
				var h wire.WorkloadHistory
				if json.Unmarshal(kv.Value, &h) == nil {
					sn.history[strings.TrimPrefix(k, keys.HistoryPrefix)] = h
				}
			case 6:
				var h registry.Health
				if json.Unmarshal(kv.Value, &h) == nil && h.Status == registry.Passing {
					sn.passingSince[k[strings.LastIndex(k, "/")+1:]] = h.Since
				}
			}
		}
	}
	for id, e := range sn.allocs {
		e.status = statuses[keys.AllocStatusKey(e.a.Node, id)]
		sn.allocs[id] = e
	}
	return sn, nil
}

// planOnce reads the store, plans, and writes the plan in one transaction
// that holds only if this node still leads the election and nothing it
// read changed. It returns when to plan again without a change.
func (s *Scheduler) planOnce(ctx context.Context, el *concurrency.Election) (time.Time, error) {
	sn, err := s.read(ctx)
	if err != nil {
		return time.Time{}, err
	}
	now := s.now()
	specs := map[string]scheduler.Workload{}
	for name, svc := range sn.services {
		w := svc.Workload
		w.Normalize()
		specs[name] = w
	}
	var nodes []scheduler.Node
	for name, rec := range sn.nodes {
		if !rec.Workloads {
			continue
		}
		nodes = append(nodes, scheduler.Node{
			Name: name, Labels: rec.Labels, Eligible: true, Alive: sn.alive[name], LostAt: s.lostAt(name, rec, sn.alive[name], now),
			Capacity: scheduler.Resources{CPUMillis: rec.CPUMillis, MemoryMB: rec.MemoryMB},
		})
	}
	var allocs []scheduler.Alloc
	var ops []clientv3.Op
	for id, e := range sn.allocs {
		if _, ok := sn.nodes[e.a.Node]; !ok {
			// The node was removed from the cluster: nothing will ever
			// stop or report this allocation.
			ops = append(ops, clientv3.OpDelete(keys.AllocKey(e.a.Node, id)), clientv3.OpDelete(keys.AllocStatusKey(e.a.Node, id)))
			continue
		}
		allocs = append(allocs, scheduler.Alloc{ID: id, Service: e.a.Service, Node: e.a.Node, Generation: e.a.Generation,
			State: allocState(e), Resources: e.a.Workload.Resources, PlacedAt: e.a.Created, HealthySince: sn.passingSince[id]})
	}
	res := scheduler.Plan(specs, nodes, allocs, now, scheduler.Options{LeaseTTL: s.leaseTTL, LossMargin: lossMargin, HealthyDeadline: healthyDeadline})
	for _, p := range res.Place {
		svc := sn.services[p.Service]
		a := wire.Allocation{ID: p.ID, Service: p.Service, Node: p.Node, Generation: svc.Generation, Desired: wire.DesiredRun,
			Created: now.UTC(), Workload: specs[p.Service], Checks: svc.Checks}
		b, _ := json.Marshal(a)
		ops = append(ops, clientv3.OpPut(keys.AllocKey(p.Node, p.ID), string(b)))
	}
	for _, st := range res.Stop {
		e := sn.allocs[st.ID]
		a := e.a
		a.Desired, a.StopReason = wire.DesiredStop, st.Reason
		b, _ := json.Marshal(a)
		ops = append(ops, clientv3.OpPut(keys.AllocKey(a.Node, a.ID), string(b)))
	}
	// What cannot be placed, and why, for `tandem service show`: written
	// when it changes.
	status := map[string]*wire.SchedStatus{}
	get := func(svc string) *wire.SchedStatus {
		if status[svc] == nil {
			status[svc] = &wire.SchedStatus{}
		}
		return status[svc]
	}
	for _, u := range res.Unplaced {
		get(u.Service).Unplaced = append(get(u.Service).Unplaced, u)
	}
	for _, st := range res.Stuck {
		get(st.Service).Stuck = append(get(st.Service).Stuck, st)
	}
	// A rollback, once made, stays on show while its generation runs.
	for svc, raw := range sn.sched {
		var old wire.SchedStatus
		if json.Unmarshal([]byte(raw), &old) == nil && old.RolledBack != nil && sn.services[svc].Generation == old.RolledBack.To {
			get(svc).RolledBack = old.RolledBack
		}
	}
	stopping := map[string]bool{}
	for _, st := range res.Stop {
		stopping[st.ID] = true
	}
	for _, st := range res.Stuck {
		if op, rb := s.rollback(sn, st, stopping); op != nil {
			ops = append(ops, op...)
			get(st.Service).RolledBack = rb
			get(st.Service).Stuck = nil
		}
	}
	for svc, st := range status {
		b, _ := json.Marshal(st)
		if sn.sched[svc] != string(b) {
			ops = append(ops, clientv3.OpPut(keys.SchedKey(svc), string(b)))
		}
	}
	for svc := range sn.sched {
		if _, ok := status[svc]; !ok {
			ops = append(ops, clientv3.OpDelete(keys.SchedKey(svc)))
		}
	}
	if len(ops) == 0 {
		return res.RetryAt, nil
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}
	for _, p := range []string{keys.ServicesPrefix, keys.NodesPrefix, keys.AlivePrefix, keys.AllocsPrefix} {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p), "<", sn.rev+1).WithPrefix())
	}
	tr, err := s.st.Client().Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return time.Time{}, err
	}
	if !tr.Succeeded {
		return time.Now(), nil // something changed, or the election was lost: read again
	}
	for _, p := range res.Place {
		s.log.Info("scheduler: placed an instance", "service", p.Service, "id", p.ID, "node", p.Node)
	}
	for _, st := range res.Stop {
		s.log.Info("scheduler: stopping an instance", "service", st.Service, "id", st.ID, "node", st.Node, "why", st.Reason)
	}
	for _, u := range res.Unplaced {
		if _, old := sn.sched[u.Service]; !old {
			s.log.Warn("scheduler: instances not placed", "service", u.Service, "count", u.Count, "why", u.Reason)
		}
	}
	return res.RetryAt, nil
}

// lossMargin is what Plan adds to the lease TTL past a lost node's last
// possible renewal before it replaces an at_most_one instance: see
// fenceAfter for what the node does meanwhile.
const lossMargin = time.Second

// lostAt is the latest time node's liveness lease can have been renewed,
// as Plan's Node.LostAt, for a node read not alive at now. The scheduler
// cannot know the node's last renewal, but it knows when it read the
// node's alive key gone (a linearizable read): the lease had ended by
// then, so it was last renewed before. That is taken from the first read
// that found the node not alive (or later: the node record's LastSeen,
// when autopilot saw the node go down after that, i.e. it came back and
// went again between two reads).
//
// It is not that time less the TTL, although a lease that expires does
// so a TTL after its last renewal: the death watch revokes the lease of a
// node it finds dead (cluster.RunDeathWatch) much sooner, and a cut-off
// node fences only half a TTL after its last renewal (fence.go).
// Neither will the node record's LastSeen alone do: autopilot writes it a
// moment after the lease ends, and until then it is zero or the time of
// an older loss, which would replace an at_most_one instance at once.
func (s *Scheduler) lostAt(node string, rec cluster.NodeRecord, alive bool, now time.Time) time.Time {
	if alive {
		delete(s.downSince, node)
		return time.Time{}
	}
	if s.downSince == nil {
		s.downSince = map[string]time.Time{}
	}
	since, ok := s.downSince[node]
	if !ok {
		since = now
		s.downSince[node] = now
	}
	if rec.LastSeen.After(since) {
		since = rec.LastSeen
	}
	return since
}

// rollback writes back the spec a stuck update replaced, as a new
// generation, when the service's update policy asks for it (the default)
// and that spec is known. The history is removed with it, so a rollback
// that gets stuck too is not rolled back again: it waits for the operator.
//
// The instances still running the spec written back are relabelled with
// the new generation (all but those being stopped, which this plan
// rewrites already): they run exactly what it says, so the rollback
// replaces only the failed update's instances instead of restarting the
// good ones. The relabelling does not restart them: a process is
// restarted only when what it runs changes.
func (s *Scheduler) rollback(sn *snapshot, st scheduler.UpdateStuck, stopping map[string]bool) ([]clientv3.Op, *wire.Rollback) {
	svc, ok := sn.services[st.Service]
	h, known := sn.history[st.Service]
	if !ok || !known || st.Generation != svc.Generation || h.Generation >= svc.Generation || !svc.Update.Rollback() {
		return nil, nil
	}
	back := svc
	count := svc.Count
	back.Workload = h.Workload
	back.Count = count
	back.Generation = svc.Generation + 1
	rb := &wire.Rollback{From: svc.Generation, Back: h.Generation, To: back.Generation, Reason: st.Reason}
	b, _ := json.Marshal(back)
	ops := []clientv3.Op{clientv3.OpPut(keys.ServiceKey(svc.Name), string(b)), clientv3.OpDelete(keys.HistoryKey(svc.Name))}
	for _, id := range slices.Sorted(maps.Keys(sn.allocs)) {
		a := sn.allocs[id].a
		if a.Service != svc.Name || a.Generation != h.Generation || a.Desired != wire.DesiredRun || stopping[id] {
			continue
		}
		a.Generation = back.Generation
		a.Workload.Generation = back.Generation
		ab, _ := json.Marshal(a)
		ops = append(ops, clientv3.OpPut(keys.AllocKey(a.Node, id), string(ab)))
	}
	s.log.Warn("scheduler: a rolling update is stuck; rolling back", "service", svc.Name, "from", rb.From, "back_to", rb.Back, "as", rb.To, "why", st.Reason)
	return ops, rb
}

// healthyDeadline is how long a new instance of a rolling update has to
// pass its checks for update.min_healthy before the update counts as stuck.
const healthyDeadline = 5 * time.Minute

// allocState is the scheduler's state of an allocation.
func allocState(e allocEntry) string {
	if e.a.Desired == wire.DesiredStop {
		return scheduler.StateStopping
	}
	if e.status == nil {
		return scheduler.StatePending
	}
	switch e.status.State {
	case wire.AllocFailed:
		return scheduler.StateFailed
	case wire.AllocStarting:
		return scheduler.StatePending
	}
	return scheduler.StateRunning
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
