package workload

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/supervisor"
	"github.com/tandemhq/tandem/internal/wire"
)

// Fencing: a node that cannot renew its liveness lease kills its
// at_most_one instances before the scheduler may place their
// replacements, so that two copies never run.
//
// The arithmetic, all durations measured on one clock each (no clock is
// compared with another's readings):
//
//   - The node's last renewal R is taken when the request was sent
//     (cluster.Manager.LastContact), so the store leader renewed the
//     lease after R.
//   - The scheduler replaces an at_most_one instance at D + TTL + margin,
//     D being when it first read the node's alive key gone
//     (Scheduler.lostAt hands Plan LostAt = D). The lease ended before D,
//     whether it expired (at least a TTL after R) or was revoked early by
//     the death watch (any time after R, as far as the node can tell), so
//     the replacement is placed after R + TTL + margin.
//   - The node kills its copy by R + fenceAfter(TTL) + one fence tick,
//     on its own monotonic clock, and the kill (SIGKILL to the group, no
//     grace) takes milliseconds.
//
// So fenceAfter + tick + kill < TTL + margin must hold: with TTL/2 and a
// tick of TTL/20 that is 0.55 TTL + kill < TTL + margin, i.e. the kill and
// a clock running slow may take up to 0.45 TTL + margin (1.9 s with the
// defaults: TTL 2 s, margin 1 s), and a replacement still starts after
// the copy is gone. fenceAfter is not shorter so that one late renewal
// (they are sent every TTL/4) does not kill anything.
//
// A lease that ends while the node still reaches the store (revoked by
// the death watch or a stale store leader, not found at a renewal) is
// replaced by a new one within a renewal interval; the node fences as
// soon as its lease changes, well within the TTL + margin the scheduler
// waits.

// fenceAfter is how long after its last lease renewal a node is cut off
// and kills its at_most_one instances.
func fenceAfter(ttl time.Duration) time.Duration { return ttl / 2 }

// fenceTick is how often the fence looks at the lease.
func fenceTick(ttl time.Duration) time.Duration { return max(ttl/20, 10*time.Millisecond) }

// fenceStep is the fence's decision at now. lastRenewal is when the last
// answered lease renewal was sent (zero: none yet; then the time counts
// from start), fencedAt when the node last fenced (zero: not fenced), and
// leaseChanged whether the node took a new lease since the last step. It
// fences when the node is cut off (no renewal for longer than after) and
// is not fenced yet, or when the lease changed; it lifts the fence once a
// renewal sent after the fence was answered.
func fenceStep(lastRenewal, fencedAt, start, now time.Time, after time.Duration, leaseChanged bool) (fence, lift bool) {
	last := lastRenewal
	if last.IsZero() {
		last = start
	}
	cut := now.Sub(last) > after
	fenced := !fencedAt.IsZero()
	if leaseChanged || (cut && !fenced) {
		return true, false
	}
	return false, fenced && !cut && lastRenewal.After(fencedAt)
}

// fencedLocked reports whether a is an at_most_one allocation the fence
// keeps from running. Called with r.mu held.
func (r *Runner) fencedLocked(a wire.Allocation) bool {
	return !r.fencedAt.IsZero() && a.Workload.OnNodeLoss == scheduler.AtMostOne
}

// runFence watches the node's lease until ctx ends, fencing and lifting;
// start is when the runner started (the node may have no lease yet).
func (r *Runner) runFence(ctx context.Context, start time.Time) {
	if r.cfg.LastRenewal == nil || r.cfg.LeaseTTL <= 0 {
		return
	}
	after, tick := fenceAfter(r.cfg.LeaseTTL), fenceTick(r.cfg.LeaseTTL)
	var leaseCh <-chan struct{}
	var lease clientv3.LeaseID
	if r.cfg.Lease != nil {
		lease, leaseCh = r.cfg.Lease()
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastSweep time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-leaseCh:
		}
		// A change of lease goes first, whichever woke the loop: a
		// renewal of the new lease must not lift the fence before it.
		changed := false
		select {
		case <-leaseCh:
			var id clientv3.LeaseID
			id, leaseCh = r.cfg.Lease()
			// The first lease, or the same one again, is no loss.
			changed = lease != 0 && id != lease
			lease = id
		default:
		}
		r.mu.Lock()
		fencedAt := r.fencedAt
		r.mu.Unlock()
		now := time.Now()
		fence, lift := fenceStep(r.cfg.LastRenewal(), fencedAt, start, now, after, changed)
		switch {
		case fence:
			r.fence(ctx, now, changed)
		case lift:
			r.lift(ctx)
		case !fencedAt.IsZero():
			// Still cut off: kill whatever a reconcile that raced the
			// fence started again.
			r.killFenced()
		case time.Since(lastSweep) > time.Second && r.leftovers():
			// Removing a stopped allocation can fail just after the
			// node came back (the store still electing): try again.
			lastSweep = time.Now()
			r.reconcile(ctx)
		}
	}
}

// fence kills every at_most_one instance of the node and keeps them from
// starting until the fence is lifted.
func (r *Runner) fence(ctx context.Context, now time.Time, leaseChanged bool) {
	r.mu.Lock()
	first := r.fencedAt.IsZero()
	r.fencedAt = now
	r.mu.Unlock()
	ids := r.killFenced()
	if first || len(ids) > 0 {
		why := "it cannot renew its liveness lease"
		if leaseChanged {
			why = "its liveness lease was lost"
		}
		r.cfg.Log.Warn("workloads: fenced: killed the at_most_one instances, since "+why, "instances", ids)
	}
	for _, id := range ids {
		go r.reportFenced(ctx, id, now)
	}
}

// killFenced kills the fenced instances the supervisor still runs, and
// returns their IDs.
func (r *Runner) killFenced() []string {
	var ids []string
	tasks := r.sup.Status()
	r.mu.Lock()
	for _, st := range tasks {
		if a, ok := r.allocs[st.Task.ID]; ok && r.fencedLocked(a) && st.State != supervisor.TaskStopping {
			ids = append(ids, st.Task.ID)
		}
	}
	r.mu.Unlock()
	if len(ids) > 0 {
		r.sup.Kill(ids...)
	}
	return ids
}

// leftovers reports whether an allocation to stop is still stored though
// its process is gone (its removal from the store failed).
func (r *Runner) leftovers() bool {
	running := map[string]bool{}
	for _, st := range r.sup.Status() {
		running[st.Task.ID] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, a := range r.allocs {
		if a.Desired == wire.DesiredStop && !running[id] {
			return true
		}
	}
	return false
}

// reportFenced writes the fenced state of allocation id, if the store can
// still be reached (a node cut off by a partition usually cannot).
func (r *Runner) reportFenced(ctx context.Context, id string, at time.Time) {
	r.mu.Lock()
	st := wire.AllocStatus{State: wire.AllocFenced, Ports: r.ports[id], Since: at.UTC(),
		Error: "killed: this node could not renew its liveness lease (on_node_loss: at_most_one)"}
	r.mu.Unlock()
	b, _ := json.Marshal(st)
	wctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL)
	defer cancel()
	_, _ = r.cfg.Store.Client().Put(wctx, keys.AllocStatusKey(r.cfg.Node, id), string(b))
}

// lift reads this node's allocations again from the store (the watch may
// have missed what happened while the node was cut off), lifts the fence,
// and reconciles: what is no longer this node's stops, and the
// at_most_one instances still allocated here start again. If the store
// cannot be read, the fence stays, and the next step tries again.
func (r *Runner) lift(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL)
	_, err := r.load(lctx)
	cancel()
	if err != nil {
		r.cfg.Log.Debug("workloads: lease renewed, but the allocations cannot be read yet; still fenced", "err", err)
		return
	}
	r.mu.Lock()
	r.fencedAt = time.Time{}
	r.mu.Unlock()
	r.cfg.Log.Info("workloads: liveness lease renewed; fence lifted, allocations read again")
	r.reconcile(ctx)
}
