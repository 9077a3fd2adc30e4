package workload

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/supervisor"
	"github.com/tandemhq/tandem/internal/wire"
)

// drains are the instances of this node that are being drained before
// they stop: each keeps running (it stays in the supervisor's desired set)
// until every alive node has acknowledged its drain request, or its
// drain_timeout has passed. The reconcile that decides to stop an
// allocation starts its drain; a goroutine per drain waits for the
// acknowledgements and then reconciles again, which stops the process.
type drains struct {
	mu  sync.Mutex
	by  map[string]*draining // by allocation ID
	wg  sync.WaitGroup       // the drains' goroutines
	rec sync.Mutex           // serializes reconcile (the watch loop's and the drains')
}

// draining is one instance being drained.
type draining struct {
	task supervisor.Task // as the supervisor runs it, so that holding it does not restart it
	done bool            // acknowledged (or timed out): stop it
}

// hold returns the tasks of the allocations to stop that must keep
// running while they drain, and starts a drain for each one that runs
// and has none yet. status is the supervisor's, read before this
// reconcile applies anything. An allocation whose task does not run
// (starting, backing off, failed) has nothing to drain, and one the fence
// keeps from running (fenced) must not be held: they are only taken out
// of the catalog.
func (r *Runner) hold(ctx context.Context, stopping []wire.Allocation, fenced map[string]bool, status []supervisor.TaskStatus) []supervisor.Task {
	runs := map[string]supervisor.TaskStatus{}
	for _, st := range status {
		if st.State == supervisor.TaskRunning && st.Pid > 0 {
			runs[st.Task.ID] = st
		}
	}
	r.drains.mu.Lock()
	defer r.drains.mu.Unlock()
	if r.drains.by == nil {
		r.drains.by = map[string]*draining{}
	}
	var held []supervisor.Task
	stops := map[string]bool{}
	for _, a := range stopping {
		stops[a.ID] = true
		if d := r.drains.by[a.ID]; d != nil {
			if !d.done && !fenced[a.ID] {
				held = append(held, d.task)
			}
			continue
		}
		st, ok := runs[a.ID]
		if !ok || fenced[a.ID] {
			r.deregister(ctx, a.Service, a.ID)
			continue
		}
		d := &draining{task: st.Task}
		r.drains.by[a.ID] = d
		held = append(held, d.task)
		r.drains.wg.Add(1)
		go func() {
			defer r.drains.wg.Done()
			r.drain(ctx, a)
			r.drains.mu.Lock()
			d.done = true
			r.drains.mu.Unlock()
			if ctx.Err() == nil {
				r.reconcile(ctx)
			}
		}()
	}
	for id, d := range r.drains.by {
		if d.done && !stops[id] { // stopped and forgotten
			delete(r.drains.by, id)
		}
	}
	return held
}

// drain asks every node to drain allocation a's instance, takes it out
// of the catalog, and waits until every alive node has acknowledged, or
// a's drain_timeout has passed.
func (r *Runner) drain(ctx context.Context, a wire.Allocation) {
	start := time.Now()
	timeout := a.Workload.DrainTimeout.D()
	if timeout <= 0 {
		timeout = scheduler.DefaultDrainTimeout
	}
	b, _ := json.Marshal(DrainRequest{Service: a.Service, Instance: a.ID, Node: r.cfg.Node})
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := r.cfg.Store.Client().Put(pctx, keys.DrainRequestKey(a.ID), string(b))
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || time.Since(start) > timeout {
			r.cfg.Log.Warn("workloads: cannot ask the nodes to drain an instance; stopping it anyway", "id", a.ID, "err", err)
			r.deregister(ctx, a.Service, a.ID)
			return
		}
		sleep(ctx, 200*time.Millisecond)
	}
	// Out of every proxy's view now: the nodes acknowledge once theirs
	// has dropped it and finished what was in flight to it.
	r.deregister(ctx, a.Service, a.ID)
	wctx, cancel := context.WithTimeout(ctx, timeout-time.Since(start))
	defer cancel()
	acked, missing := awaitAcks(wctx, r.cfg.Store.Client, a.ID)
	if ctx.Err() != nil {
		return
	}
	if len(missing) > 0 {
		r.cfg.Log.Warn("workloads: drain timed out; stopping the instance anyway", "service", a.Service, "id", a.ID,
			"drain_timeout", timeout, "not_acknowledged", strings.Join(missing, ","), "acknowledged", strings.Join(acked, ","))
		return
	}
	r.cfg.Log.Info("workloads: instance drained from every node; stopping it", "service", a.Service, "id", a.ID,
		"took", time.Since(start).Round(time.Millisecond), "nodes", strings.Join(acked, ","))
}

// awaitAcks waits until every alive node (one whose alive key, bound to
// its liveness lease, exists) has acknowledged allocation id's drain, or
// ctx ends. A node that dies meanwhile stops counting when its lease
// ends; one that joins counts from then on. It returns the alive nodes
// that acknowledged and those that did not, sorted.
func awaitAcks(ctx context.Context, client func() *clientv3.Client, id string) (acked, missing []string) {
	alive, acks := map[string]bool{}, map[string]bool{}
	result := func() ([]string, []string) {
		acked, missing = nil, nil
		for _, n := range slices.Sorted(maps.Keys(alive)) {
			if acks[n] {
				acked = append(acked, n)
			} else {
				missing = append(missing, n)
			}
		}
		return acked, missing
	}
	for ctx.Err() == nil {
		c := client()
		resp, err := c.Txn(ctx).Then(
			clientv3.OpGet(keys.AlivePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
			clientv3.OpGet(keys.DrainAcksPrefix(id), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		).Commit()
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		clear(alive)
		clear(acks)
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			alive[strings.TrimPrefix(string(kv.Key), keys.AlivePrefix)] = true
		}
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			acks[strings.TrimPrefix(string(kv.Key), keys.DrainAcksPrefix(id))] = true
		}
		if _, missing := result(); len(missing) == 0 {
			return result()
		}
		// Follow both prefixes from the revision read until the set is
		// complete or a watch ends (then read again).
		wctx, cancel := context.WithCancel(ctx)
		rev := clientv3.WithRev(resp.Header.Revision + 1)
		wAlive := c.Watch(wctx, keys.AlivePrefix, clientv3.WithPrefix(), rev)
		wAcks := c.Watch(wctx, keys.DrainAcksPrefix(id), clientv3.WithPrefix(), rev)
		for {
			var wr clientv3.WatchResponse
			var ok bool
			var set map[string]bool
			var prefix string
			select {
			case wr, ok = <-wAlive:
				set, prefix = alive, keys.AlivePrefix
			case wr, ok = <-wAcks:
				set, prefix = acks, keys.DrainAcksPrefix(id)
			}
			if !ok || wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), prefix)
				if ev.Type == clientv3.EventTypeDelete {
					delete(set, name)
				} else {
					set[name] = true
				}
			}
			if _, missing := result(); len(missing) == 0 {
				cancel()
				return result()
			}
		}
		cancel()
	}
	return result()
}

// drainKeysOps deletes allocation id's drain request and its
// acknowledgements.
func drainKeysOps(id string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(keys.DrainRequestKey(id)),
		clientv3.OpDelete(keys.DrainAcksPrefix(id), clientv3.WithPrefix()),
	}
}
