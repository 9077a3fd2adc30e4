// Package catalog does the service catalog's writes: registering and
// deregistering services and instances under the registry's rules, TTL
// renewals, and (runner.go) running the health checks of the instances this
// node owns and writing their health when it changes.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/view"
	"github.com/tandemhq/tandem/internal/wire"
)

// Errors callers test for.
var (
	// ErrInvalid means the registration breaks a rule; nothing was written.
	ErrInvalid = errors.New("invalid registration")
	// ErrConflict means the instance id is owned by another node.
	ErrConflict = errors.New("conflict")
)

// Catalog writes registrations for one node.
type Catalog struct {
	st    *store.Store
	node  string
	rules registry.Rules
}

// New returns the catalog writer of node.
func New(st *store.Store, node string, rules registry.Rules) *Catalog {
	return &Catalog{st: st, node: node, rules: rules}
}

// RegisterService stores a service's spec (checks, balancing, ports, and
// what to run). The workload's generation is tandem's: it stays when only
// the count changes (or nothing), and grows by one when what an instance
// runs changes, which makes the scheduler replace the instances.
func (c *Catalog) RegisterService(ctx context.Context, s registry.Service) (int64, error) {
	if err := s.Validate(c.rules); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c.updateServiceOps(ctx, s.Name, func(old *registry.Service) (registry.Service, []clientv3.Op, error) {
		s.Generation = 0
		var ops []clientv3.Op
		if s.Runs() {
			s.Generation = 1
			if old != nil && old.Runs() {
				s.Generation = old.Generation
				if !sameInstances(old.Workload, s.Workload) {
					s.Generation++
					// What an automatic rollback goes back to.
					b, _ := json.Marshal(wire.WorkloadHistory{Generation: old.Generation, Workload: old.Workload})
					ops = append(ops, clientv3.OpPut(keys.HistoryKey(s.Name), string(b)))
				}
			}
		}
		return s, ops, nil
	})
}

// ErrNoService is a change to a service that has no spec.
var ErrNoService = errors.New("no such service")

// Scale sets the instance count of a service tandem runs.
func (c *Catalog) Scale(ctx context.Context, name string, count int) (int64, error) {
	return c.updateService(ctx, name, func(old *registry.Service) (registry.Service, error) {
		if old == nil {
			return registry.Service{}, fmt.Errorf("%w %q: deploy it first (tandem deploy -f FILE)", ErrNoService, name)
		}
		if !old.Runs() {
			return registry.Service{}, fmt.Errorf("%w: service %q has no run command: tandem does not run its instances, so it cannot scale them", ErrInvalid, name)
		}
		s := *old
		s.Count = count
		if err := s.Validate(c.rules); err != nil {
			return registry.Service{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return s, nil
	})
}

// updateService writes what change makes of the stored spec (nil when
// there is none), in a transaction that fails if the spec changed in
// between; it tries again a few times.
func (c *Catalog) updateService(ctx context.Context, name string, change func(*registry.Service) (registry.Service, error)) (int64, error) {
	return c.updateServiceOps(ctx, name, func(old *registry.Service) (registry.Service, []clientv3.Op, error) {
		s, err := change(old)
		return s, nil, err
	})
}

// updateServiceOps is updateService whose change also gives operations to
// commit with the spec.
func (c *Catalog) updateServiceOps(ctx context.Context, name string, change func(*registry.Service) (registry.Service, []clientv3.Op, error)) (int64, error) {
	k := keys.ServiceKey(name)
	for try := 0; ; try++ {
		resp, err := c.st.Client().Get(ctx, k)
		if err != nil {
			return 0, err
		}
		var old *registry.Service
		var rev int64
		if len(resp.Kvs) > 0 {
			old = &registry.Service{}
			if err := json.Unmarshal(resp.Kvs[0].Value, old); err != nil {
				old = nil // a damaged spec is replaced
			}
			rev = resp.Kvs[0].ModRevision
		}
		s, extra, err := change(old)
		if err != nil {
			return 0, err
		}
		b, _ := json.Marshal(s)
		tr, err := c.st.Client().Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
			Then(append([]clientv3.Op{clientv3.OpPut(k, string(b))}, extra...)...).Commit()
		if err != nil {
			return 0, err
		}
		if tr.Succeeded {
			return tr.Header.Revision, nil
		}
		if try == 5 {
			return 0, fmt.Errorf("%w: service %q changed under this request six times in a row; retry", ErrConflict, name)
		}
	}
}

// sameInstances reports whether two workloads run the same instances:
// equal apart from the count (and the generation).
func sameInstances(a, b scheduler.Workload) bool {
	a.Normalize()
	b.Normalize()
	a.Count, b.Count, a.Generation, b.Generation = 0, 0, 0, 0
	return reflect.DeepEqual(a, b)
}

// DeleteService removes a service's spec (its instances stay registered).
func (c *Catalog) DeleteService(ctx context.Context, name string) (bool, error) {
	resp, err := c.st.Client().Delete(ctx, keys.ServiceKey(name))
	if err != nil {
		return false, err
	}
	return resp.Deleted > 0, nil
}

// Register stores an instance owned by this node and returns the store
// revision of the write. An id owned by another node is a conflict, unless
// the registration is the same (same address, port, tags, checks...): then
// it succeeds and the instance stays with its owner, so that running the
// same registration again succeeds wherever it is sent. Re-registering
// one's own instance replaces it.
func (c *Catalog) Register(ctx context.Context, in registry.Instance) (int64, error) {
	rev, _, err := c.RegisterOwned(ctx, in)
	return rev, err
}

// RegisterOwned is Register that also returns the instance's owner node
// after the call: this node, or the node that already owned the same
// registration.
func (c *Catalog) RegisterOwned(ctx context.Context, in registry.Instance) (int64, string, error) {
	in.Node = c.node
	if err := in.Validate(c.rules); err != nil {
		return 0, "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	in.Normalize()
	key := keys.InstanceKey(in.Service, in.ID)
	b, _ := json.Marshal(in)
	cl := c.st.Client()
	modRev := int64(0) // first try: create
	for {
		resp, err := cl.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, string(b))).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return 0, "", err
		}
		if resp.Succeeded {
			return resp.Header.Revision, c.node, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			modRev = 0 // deleted meanwhile: create
			continue
		}
		var old registry.Instance
		if json.Unmarshal(kvs[0].Value, &old) == nil && old.Node != c.node {
			owner := old.Node
			old.Node = c.node
			old.Normalize()
			if same, _ := json.Marshal(old); bytes.Equal(same, b) {
				return resp.Header.Revision, owner, nil // the same registration: already done
			}
			return 0, "", fmt.Errorf("%w: instance %s of %s is owned by node %s; deregister it first or pick another id", ErrConflict, in.ID, in.Service, owner)
		}
		modRev = kvs[0].ModRevision // ours: replace it, unless it changes again
	}
}

// Deregister removes an instance everywhere: registration, health and TTL.
func (c *Catalog) Deregister(ctx context.Context, svc, id string) (int64, bool, error) {
	resp, err := c.st.Client().Txn(ctx).Then(
		clientv3.OpDelete(keys.InstanceKey(svc, id)),
		clientv3.OpDelete(keys.HealthKey(svc, id)),
		clientv3.OpDelete(keys.TTLKey(svc, id)),
	).Commit()
	if err != nil {
		return 0, false, err
	}
	return resp.Header.Revision, resp.Responses[0].GetResponseDeleteRange().Deleted > 0, nil
}

// RenewTTL records a TTL check's renewal; the owner's runner reads it from
// its view. status is passing, warning or critical.
func (c *Catalog) RenewTTL(ctx context.Context, svc, id, status, output string) error {
	switch status {
	case registry.Passing, registry.Warning, registry.Critical:
	default:
		return fmt.Errorf("%w: status %q: use passing, warning or critical", ErrInvalid, status)
	}
	if len(output) > 4096 {
		output = output[:4096]
	}
	cur, err := c.st.Client().Get(ctx, keys.InstanceKey(svc, id), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if cur.Count == 0 {
		return fmt.Errorf("%w: no instance %s of %s", store.ErrNotFound, id, svc)
	}
	b, _ := json.Marshal(view.TTLRenewal{Status: status, Output: output, At: time.Now().UTC()})
	_, err = c.st.Client().Put(ctx, keys.TTLKey(svc, id), string(b))
	return err
}
