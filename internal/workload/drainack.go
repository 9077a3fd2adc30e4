package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/store"
)

// DrainRequest is what a node that is about to stop an instance writes
// at keys.DrainRequestKey(alloc id) before it takes the instance out of
// the catalog. Every alive node acknowledges it once its proxy is done
// with the instance; the stopping node sends SIGTERM only then.
type DrainRequest struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Node     string `json:"node"` // the node that runs the instance
}

// DrainView is what the acknowledger reads of the node's view.
type DrainView interface {
	Instance(svc, id string) (registry.Instance, bool)
	Revision() (int64, time.Time)
	Changed() <-chan struct{}
}

// DrainProxy is what the acknowledger asks of the node's proxy
// (proxy.Proxy implements it).
type DrainProxy interface {
	Routing(svc, id string) (routed bool, inflight int64)
}

// DrainAckerConfig is what a node's DrainAcker needs.
type DrainAckerConfig struct {
	Store *store.Store
	Node  string
	View  DrainView
	Proxy DrainProxy
	// Lease returns the node's liveness lease (0 when it has none) and a
	// channel closed when it changes (cluster.Manager.Lease).
	Lease func() (clientv3.LeaseID, <-chan struct{})
	Log   *slog.Logger
}

// DrainAcker is a node's part in draining instances that stop: it
// follows the drain requests and acknowledges each one, under its own
// liveness lease, once the node's view has applied the request and no
// longer holds the instance, and its proxy neither routes to the instance
// nor has anything in flight to it. Run is its only goroutine.
type DrainAcker struct {
	cfg DrainAckerConfig
}

// drainPoll is how often a pending request is checked again between view
// changes, for the requests in flight to end.
const drainPoll = 10 * time.Millisecond

// NewDrainAcker makes a node's drain acknowledger.
func NewDrainAcker(cfg DrainAckerConfig) (*DrainAcker, error) {
	if cfg.Store == nil || cfg.Node == "" || cfg.View == nil || cfg.Proxy == nil || cfg.Lease == nil || cfg.Log == nil {
		return nil, fmt.Errorf("drain acknowledger: incomplete config")
	}
	return &DrainAcker{cfg: cfg}, nil
}

// pendingDrain is a request this node follows.
type pendingDrain struct {
	req   DrainRequest
	rev   int64            // the request's revision: the view must reach it
	acked clientv3.LeaseID // the lease the ack was written under, 0 before
	since time.Time        // when this node first saw it
}

// Run follows the drain requests until ctx ends.
func (d *DrainAcker) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		pending, rev, err := d.load(ctx)
		if err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		d.follow(ctx, pending, rev)
	}
	return nil
}

// load reads the drain requests.
func (d *DrainAcker) load(ctx context.Context) (map[string]*pendingDrain, int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := d.cfg.Store.Client().Get(lctx, keys.DrainRequestsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	pending := map[string]*pendingDrain{}
	for _, kv := range resp.Kvs {
		d.add(pending, kv.Key, kv.Value, kv.ModRevision)
	}
	return pending, resp.Header.Revision, nil
}

func (d *DrainAcker) add(pending map[string]*pendingDrain, key, value []byte, rev int64) {
	var req DrainRequest
	if err := json.Unmarshal(value, &req); err != nil {
		d.cfg.Log.Warn("workloads: a drain request is damaged; ignoring it", "key", string(key), "err", err)
		return
	}
	id := strings.TrimPrefix(string(key), keys.DrainRequestsPrefix)
	pending[id] = &pendingDrain{req: req, rev: rev, since: time.Now()}
}

// follow watches the requests from rev+1 and acknowledges each once it
// can, until the watch ends.
func (d *DrainAcker) follow(ctx context.Context, pending map[string]*pendingDrain, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := d.cfg.Store.Client().Watch(wctx, keys.DrainRequestsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		lease, leaseChanged := d.cfg.Lease()
		waiting := d.ackReady(ctx, pending, lease)
		var poll <-chan time.Time
		if waiting {
			poll = tick.C
		}
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(pending, strings.TrimPrefix(string(ev.Kv.Key), keys.DrainRequestsPrefix))
					continue
				}
				d.add(pending, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
			}
		case <-d.cfg.View.Changed():
		case <-leaseChanged:
		case <-poll:
		}
	}
}

// ackReady acknowledges, under lease, each pending request whose
// instance this node is done with, and reports whether some are left to
// wait for. Without a lease the node is not alive: no one waits for it.
func (d *DrainAcker) ackReady(ctx context.Context, pending map[string]*pendingDrain, lease clientv3.LeaseID) bool {
	waiting := false
	for id, p := range pending {
		if lease == 0 || p.acked == lease {
			continue
		}
		if !d.drained(p) {
			waiting = true
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := d.cfg.Store.Client().Put(actx, keys.DrainAckKey(id, d.cfg.Node), "", clientv3.WithLease(lease))
		cancel()
		if err != nil {
			d.cfg.Log.Warn("workloads: acknowledge a drain", "id", id, "err", err)
			waiting = true
			continue
		}
		p.acked = lease
		d.cfg.Log.Debug("workloads: drained an instance from this node", "service", p.req.Service, "id", id, "took", time.Since(p.since))
	}
	return waiting
}

// drained reports whether this node is done with p's instance: its view
// has applied the request (so the instance's registration, which came
// before, is not still to come) and no longer holds the instance, and its
// proxy neither routes to it nor has anything in flight to it.
func (d *DrainAcker) drained(p *pendingDrain) bool {
	if rev, _ := d.cfg.View.Revision(); rev < p.rev {
		return false
	}
	if _, ok := d.cfg.View.Instance(p.req.Service, p.req.Instance); ok {
		return false
	}
	routed, inflight := d.cfg.Proxy.Routing(p.req.Service, p.req.Instance)
	return !routed && inflight == 0
}
