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
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/view"
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

// RegisterService stores a service's spec (checks, balancing, ports).
func (c *Catalog) RegisterService(ctx context.Context, s registry.Service) (int64, error) {
	if err := s.Validate(c.rules); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, _ := json.Marshal(s)
	resp, err := c.st.Client().Put(ctx, keys.ServiceKey(s.Name), string(b))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
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
