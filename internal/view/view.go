// Package view keeps every node's local, watch-fed copy of the cluster's
// nodes, services, instances and health. It lists once, then watches from
// that revision, and lists again only after a compaction or a broken watch;
// it never polls. DNS, the proxy and stale API reads serve from it, so they
// keep answering (from the last known state) when the node is cut off from
// the store's majority.
package view

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
)

// TTLRenewal is the last renewal of an instance's TTL check.
type TTLRenewal struct {
	Status string    `json:"status"`
	Output string    `json:"output,omitempty"`
	At     time.Time `json:"at"`
}

// View is the local copy. Run feeds it; the read methods may be called from
// any goroutine and return copies.
type View struct {
	client func() *clientv3.Client
	log    *slog.Logger

	mu         sync.RWMutex
	rev        int64
	catalogRev int64     // revision of the last change to what the view holds
	applied    time.Time // when rev was applied
	nodes      map[string]cluster.NodeRecord
	alive      map[string]int64 // node -> the lease its alive key is bound to
	services   map[string]registry.Service
	instances  map[string]map[string]registry.Instance // service -> id
	instRev    map[string]map[string]int64             // mod revision of each instance
	svcRev     map[string]int64                        // mod revision of each spec
	health     map[string]map[string]registry.Health
	ttl        map[string]map[string]TTLRenewal
	tokens     map[string]auth.Record
	changed    chan struct{} // closed and replaced on every applied change
	synced     chan struct{} // closed after the first full list
}

// New returns a view reading through client (called per operation, since a
// node's client can change when it is promoted to voter).
func New(client func() *clientv3.Client, log *slog.Logger) *View {
	v := &View{client: client, log: log, changed: make(chan struct{}), synced: make(chan struct{})}
	v.reset()
	return v
}

func (v *View) reset() {
	v.nodes = map[string]cluster.NodeRecord{}
	v.alive = map[string]int64{}
	v.services = map[string]registry.Service{}
	v.instances = map[string]map[string]registry.Instance{}
	v.instRev = map[string]map[string]int64{}
	v.svcRev = map[string]int64{}
	v.health = map[string]map[string]registry.Health{}
	v.ttl = map[string]map[string]TTLRenewal{}
	v.tokens = map[string]auth.Record{}
}

// Synced is closed once the view has loaded the store's state.
func (v *View) Synced() <-chan struct{} { return v.synced }

// Run lists and watches until ctx ends.
func (v *View) Run(ctx context.Context) error {
	// A failed list is retried soon (it decides how fast a node serves again
	// after a partition heals), then less often, with jitter so nodes cut
	// off together do not list in step. A list that succeeds resets it.
	b := &backoff.ExponentialBackOff{InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 500 * time.Millisecond}
	b.Reset()
	for ctx.Err() == nil {
		rev, err := v.load(ctx)
		if err != nil {
			v.log.Debug("view: list failed; retrying", "err", err)
			sleep(ctx, b.NextBackOff())
			continue
		}
		b.Reset()
		err = v.watch(ctx, rev+1)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			v.log.Info("view: watch history compacted; listing again")
		} else {
			v.log.Debug("view: watch ended; listing again", "err", err)
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return nil
}

// prefixes the view holds.
var prefixes = []string{keys.NodesPrefix, keys.AlivePrefix, keys.ServicesPrefix, keys.InstancesPrefix, keys.HealthPrefix, keys.TTLPrefix, keys.TokensPrefix}

// load reads every prefix at one revision and replaces the view's state.
func (v *View) load(ctx context.Context) (int64, error) {
	var ops []clientv3.Op
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix()))
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := v.client().Txn(lctx).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.reset()
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			v.applyLocked(mvccpb.PUT, kv)
		}
	}
	v.rev = resp.Header.Revision
	v.catalogRev = resp.Header.Revision
	v.applied = time.Now()
	v.notifyLocked()
	v.mu.Unlock()
	select {
	case <-v.synced:
	default:
		close(v.synced)
	}
	return resp.Header.Revision, nil
}

func (v *View) watch(ctx context.Context, from int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := v.client().Watch(wctx, keys.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		v.mu.Lock()
		relevant := false
		for _, ev := range wr.Events {
			relevant = v.applyLocked(ev.Type, ev.Kv) || relevant
		}
		if wr.Header.Revision > v.rev {
			v.rev = wr.Header.Revision
			v.applied = time.Now()
		}
		if relevant {
			v.catalogRev = wr.Header.Revision
			v.notifyLocked() // events, elections, locks and stats do not wake readers
		}
		v.mu.Unlock()
	}
	return errors.New("watch closed")
}

func (v *View) notifyLocked() {
	close(v.changed)
	v.changed = make(chan struct{})
}

// applyLocked applies one key's put or delete and reports whether the key
// is one the view holds.
func (v *View) applyLocked(typ mvccpb.Event_EventType, kv *mvccpb.KeyValue) bool {
	key := string(kv.Key)
	del := typ == mvccpb.DELETE
	switch {
	case strings.HasPrefix(key, keys.NodesPrefix):
		name := key[len(keys.NodesPrefix):]
		var rec cluster.NodeRecord
		if del || json.Unmarshal(kv.Value, &rec) != nil {
			delete(v.nodes, name)
			return true
		}
		v.nodes[name] = rec
	case strings.HasPrefix(key, keys.AlivePrefix):
		name := key[len(keys.AlivePrefix):]
		if del {
			delete(v.alive, name)
		} else {
			v.alive[name] = kv.Lease
		}
	case strings.HasPrefix(key, keys.ServicesPrefix):
		name := key[len(keys.ServicesPrefix):]
		var s registry.Service
		if del || json.Unmarshal(kv.Value, &s) != nil {
			delete(v.services, name)
			delete(v.svcRev, name)
			return true
		}
		v.services[name] = s
		v.svcRev[name] = kv.ModRevision
	case strings.HasPrefix(key, keys.InstancesPrefix):
		rest := key[len(keys.InstancesPrefix):]
		applyNested(v.instances, rest, del, kv.Value)
		if svc, id, ok := strings.Cut(rest, "/"); ok {
			if _, kept := v.instances[svc][id]; kept {
				if v.instRev[svc] == nil {
					v.instRev[svc] = map[string]int64{}
				}
				v.instRev[svc][id] = kv.ModRevision
			} else {
				delete(v.instRev[svc], id)
				if len(v.instRev[svc]) == 0 {
					delete(v.instRev, svc)
				}
			}
		}
	case strings.HasPrefix(key, keys.HealthPrefix):
		applyNested(v.health, key[len(keys.HealthPrefix):], del, kv.Value)
	case strings.HasPrefix(key, keys.TTLPrefix):
		applyNested(v.ttl, key[len(keys.TTLPrefix):], del, kv.Value)
	case strings.HasPrefix(key, keys.TokensPrefix):
		// Tokens are not catalog state: a change wakes no reader.
		id := key[len(keys.TokensPrefix):]
		var rec auth.Record
		if del || json.Unmarshal(kv.Value, &rec) != nil || rec.ID != id {
			delete(v.tokens, id)
		} else {
			v.tokens[id] = rec
		}
		return false
	default:
		return false
	}
	return true
}

// applyNested stores or deletes the JSON value at "svc/id" in m.
func applyNested[T any](m map[string]map[string]T, rest string, del bool, value []byte) {
	svc, id, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	var x T
	if del || json.Unmarshal(value, &x) != nil {
		delete(m[svc], id)
		if len(m[svc]) == 0 {
			delete(m, svc)
		}
		return
	}
	if m[svc] == nil {
		m[svc] = map[string]T{}
	}
	m[svc][id] = x
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Token returns the token record with id, as the view last saw it. A
// token revoked anywhere is gone from every view as soon as the deletion's
// watch event arrives (milliseconds on a LAN).
func (v *View) Token(id string) (auth.Record, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	rec, ok := v.tokens[id]
	return rec, ok
}

// Tokens returns every token record, sorted by creation time.
func (v *View) Tokens() []auth.Record {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]auth.Record, 0, len(v.tokens))
	for _, rec := range v.tokens {
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b auth.Record) int { return a.Created.Compare(b.Created) })
	return out
}

// Revision is the store revision the view has applied, and when.
func (v *View) Revision() (int64, time.Time) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rev, v.applied
}

// CatalogRevision is the store revision of the last change to what the view
// holds (nodes, services, instances, health): the catalog's index.
func (v *View) CatalogRevision() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.catalogRev
}

// Changed returns a channel closed at the next change.
func (v *View) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// WaitRevision waits until the view has applied rev or ctx ends.
func (v *View) WaitRevision(ctx context.Context, rev int64) error {
	for {
		v.mu.RLock()
		cur, ch := v.rev, v.changed
		v.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(100 * time.Millisecond): // progress without events
		}
	}
}

// effective computes an instance's served health.
func (v *View) effectiveLocked(in registry.Instance) registry.InstanceHealth {
	out := registry.InstanceHealth{Instance: in, Status: registry.Critical}
	if _, alive := v.alive[in.Node]; !alive {
		out.Output = "owner node " + in.Node + " is down"
		return out
	}
	h, ok := v.health[in.Service][in.ID]
	if !ok {
		if in.InitialState != "" {
			out.Status = in.InitialState
		}
		out.Output = "no check result yet"
		return out
	}
	out.Status, out.Output, out.Since, out.Checks = h.Status, h.Output, h.Since, h.Checks
	return out
}

// Instances returns the instances of svc, sorted by id, with effective
// health; nil if the service has no instances.
func (v *View) Instances(svc string) []registry.InstanceHealth {
	v.mu.RLock()
	defer v.mu.RUnlock()
	m := v.instances[svc]
	if len(m) == 0 {
		return nil
	}
	out := make([]registry.InstanceHealth, 0, len(m))
	for _, in := range m {
		out = append(out, v.effectiveLocked(in))
	}
	slices.SortFunc(out, func(a, b registry.InstanceHealth) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Service returns a service's spec, if stored.
func (v *View) Service(svc string) (registry.Service, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.services[svc]
	return s, ok
}

// Services returns the names of services with a spec or instances, sorted.
func (v *View) Services() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var names []string
	for n := range v.services {
		names = append(names, n)
	}
	for n := range v.instances {
		if _, ok := v.services[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Owned is an instance a node owns, with what it was built from.
type Owned struct {
	registry.Instance
	// Spec is the service's spec, if stored.
	Spec *registry.Service
	// Version changes whenever the registration or the service's spec does.
	Version [2]int64
}

// OwnedBy returns the instances owned by node.
func (v *View) OwnedBy(node string) []Owned {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Owned
	for svc, m := range v.instances {
		var spec *registry.Service
		if s, ok := v.services[svc]; ok {
			spec = &s
		}
		for id, in := range m {
			if in.Node == node {
				out = append(out, Owned{Instance: in, Spec: spec, Version: [2]int64{v.instRev[svc][id], v.svcRev[svc]}})
			}
		}
	}
	return out
}

// Instance returns one instance's registration.
func (v *View) Instance(svc, id string) (registry.Instance, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	in, ok := v.instances[svc][id]
	return in, ok
}

// TTL returns the last renewal of an instance's TTL check.
func (v *View) TTL(svc, id string) (TTLRenewal, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.ttl[svc][id]
	return r, ok
}

// Nodes returns every known node, sorted by name.
func (v *View) Nodes() []Node {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]Node, 0, len(v.nodes))
	for name, rec := range v.nodes {
		host := rec.API
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = strings.Trim(host[:i], "[]")
		}
		_, alive := v.alive[name]
		out = append(out, Node{Name: name, Addr: host, Role: rec.Role, Alive: alive})
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AliveNodes returns the alive nodes whose records the view holds, with
// their API addresses and the leases their alive keys are bound to.
func (v *View) AliveNodes() []cluster.AliveNode {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]cluster.AliveNode, 0, len(v.alive))
	for name, lease := range v.alive {
		if rec, ok := v.nodes[name]; ok {
			out = append(out, cluster.AliveNode{Name: name, API: rec.API, Lease: lease})
		}
	}
	return out
}

// All returns every instance keyed "service/id", to compare views.
func (v *View) All() map[string]registry.Instance {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string]registry.Instance{}
	for svc, m := range v.instances {
		for id, in := range m {
			out[svc+"/"+id] = in
		}
	}
	return out
}
