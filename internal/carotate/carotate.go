// Package carotate keeps the state of a cluster CA rotation in the store:
// starting one, reading it, the phase each node has done, and moving to
// the next phase once every node has done the current one. The work of
// each phase on a node is the agent's (internal/agent, carotate.go).
//
// A rotation adds before it removes: every node (and every store member,
// by a restart, since etcd reads its CA bundle only at start) trusts the
// new CA before any node shows a certificate it signed, and every node
// shows one before any node stops trusting the old CA.
package carotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// CATTL is the lifetime of a cluster CA: a bootstrap's, or a rotation's
// new one.
const CATTL = 10 * 365 * 24 * time.Hour

// ErrInProgress is a rotation asked for while another is not done.
var ErrInProgress = errors.New("a CA rotation is in progress")

// ErrRefused is a rotation the node asked cannot start.
var ErrRefused = errors.New("cannot start a CA rotation")

// phases are a rotation's phases, in order.
var phases = []string{wire.CAPhaseTrust, wire.CAPhaseIssue, wire.CAPhaseRetire, wire.CAPhaseDone}

// Load reads the current or last rotation: nil when the cluster never
// rotated its CA. rev is the record's mod revision, for Advance; storeRev
// the store's revision when it was read, to watch for changes from.
func Load(ctx context.Context, c *clientv3.Client) (r *wire.CARotation, rev, storeRev int64, err error) {
	resp, err := c.Get(ctx, keys.CARotationKey)
	if err != nil {
		return nil, 0, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, resp.Header.Revision, nil
	}
	r = &wire.CARotation{}
	if err := json.Unmarshal(resp.Kvs[0].Value, r); err != nil {
		return nil, 0, 0, fmt.Errorf("the CA rotation record in the store is damaged: %w", err)
	}
	return r, resp.Kvs[0].ModRevision, resp.Header.Revision, nil
}

// Start begins a rotation from the material m of the node that serves the
// request: a new CA, its key sealed under m's CA key. It fails with
// ErrInProgress while a rotation is not done.
func Start(ctx context.Context, c *clientv3.Client, m *pki.Material, by string, now time.Time) (*wire.CARotation, error) {
	if m.CA == nil {
		return nil, fmt.Errorf("%w: this node holds no CA key; ask another node", ErrRefused)
	}
	cur, rev, _, err := Load(ctx, c)
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.Phase != wire.CAPhaseDone {
		return cur, fmt.Errorf("%w (%s, phase %s)", ErrInProgress, cur.ID, cur.Phase)
	}
	if len(m.CAs) > 1 {
		return nil, fmt.Errorf("%w: this node still trusts %d CAs (the last rotation has not finished on it); wait a moment and retry", ErrRefused, len(m.CAs))
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b[:])
	cluster := strings.TrimSpace(strings.TrimPrefix(m.CA.Cert.Subject.CommonName, "tandem CA "))
	if f := strings.Fields(cluster); len(f) > 0 {
		cluster = f[0]
	} else {
		cluster = "cluster"
	}
	ca, err := pki.NewCA(cluster, now, CATTL)
	if err != nil {
		return nil, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	sealed, err := m.CA.SealKey(keyPEM, id)
	if err != nil {
		return nil, err
	}
	r := &wire.CARotation{
		ID: id, Phase: wire.CAPhaseTrust, Started: now.UTC(), Changed: now.UTC(), StartedBy: by,
		OldCA: string(m.CA.CertPEM), NewCA: string(ca.CertPEM), NewCAKey: sealed,
	}
	val, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(keys.CARotationKey), "=", rev)).
		Then(clientv3.OpPut(keys.CARotationKey, string(val))).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: another node started one at the same moment", ErrInProgress)
	}
	return r, nil
}

// Ack records that node has done phase of rotation id.
func Ack(ctx context.Context, c *clientv3.Client, id, node, phase string) error {
	_, err := c.Put(ctx, keys.CAAckKey(id, node), phase)
	return err
}

// Progress splits the cluster's nodes into those that have done r's
// current phase and those that have not, each sorted.
func Progress(ctx context.Context, c *clientv3.Client, r *wire.CARotation) (done, pending []string, err error) {
	nodes, err := c.Get(ctx, keys.NodesPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, err
	}
	acks, err := c.Get(ctx, keys.CAAcksPrefix(r.ID), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, err
	}
	did := map[string]bool{}
	for _, kv := range acks.Kvs {
		did[strings.TrimPrefix(string(kv.Key), keys.CAAcksPrefix(r.ID))] = reached(string(kv.Value), r.Phase)
	}
	for _, kv := range nodes.Kvs {
		name := strings.TrimPrefix(string(kv.Key), keys.NodesPrefix)
		if did[name] {
			done = append(done, name)
		} else {
			pending = append(pending, name)
		}
	}
	slices.Sort(done)
	slices.Sort(pending)
	return done, pending, nil
}

// reached reports whether a node that has done phase has done want.
func reached(phase, want string) bool {
	i, j := slices.Index(phases, phase), slices.Index(phases, want)
	return i >= 0 && j >= 0 && i >= j
}

// Advance moves r (read at revision rev) to its next phase if every node
// has done the current one, and reports whether it did. Once done, the
// sealed key is dropped from the record and the acks are deleted. Two
// nodes advancing at once are fine: the revision guard lets one win.
func Advance(ctx context.Context, c *clientv3.Client, r *wire.CARotation, rev int64, now time.Time) (bool, error) {
	i := slices.Index(phases, r.Phase)
	if i < 0 || i == len(phases)-1 {
		return false, nil
	}
	to := phases[i+1]
	_, pending, err := Progress(ctx, c, r)
	if err != nil || len(pending) > 0 {
		return false, err
	}
	n := *r
	n.Phase, n.Changed = to, now.UTC()
	ops := []clientv3.Op{}
	if to == wire.CAPhaseDone {
		n.NewCAKey = ""
		ops = append(ops, clientv3.OpDelete(keys.CAAcksPrefix(r.ID), clientv3.WithPrefix()))
	}
	val, err := json.Marshal(&n)
	if err != nil {
		return false, err
	}
	ops = append(ops, clientv3.OpPut(keys.CARotationKey, string(val)))
	resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(keys.CARotationKey), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Public is r as the API shows it: without the sealed key.
func Public(r *wire.CARotation) *wire.CARotation {
	if r == nil {
		return nil
	}
	p := *r
	p.NewCAKey = ""
	return &p
}

// HasDone reports whether node has done r's current phase.
func HasDone(ctx context.Context, c *clientv3.Client, r *wire.CARotation, node string) (bool, error) {
	resp, err := c.Get(ctx, keys.CAAckKey(r.ID, node))
	if err != nil || len(resp.Kvs) == 0 {
		return false, err
	}
	return reached(string(resp.Kvs[0].Value), r.Phase), nil
}
