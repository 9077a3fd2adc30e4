package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tandemhq/tandem/internal/carotate"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// followCARotation does this node's part of every CA rotation (`tandem ca
// rotate`): it follows the rotation record, does the current phase's work
// on this node once, reports it done, and moves the rotation to its next
// phase when every node has done the current one (any node may; the store
// lets one win). It wakes on every change under the rotation's keys, and
// every few seconds in case a node joined or left.
func (a *Agent) followCARotation(ctx context.Context, st *store.Store) error {
	var lastErr string
	for ctx.Err() == nil {
		rev, err := a.caRotationStep(ctx, st)
		if err != nil && ctx.Err() == nil {
			if err.Error() != lastErr {
				a.log.Warn("CA rotation: this node's part failed; retrying", "err", err)
			}
			lastErr = err.Error()
		} else {
			lastErr = ""
		}
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if err == nil && rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		for resp := range st.Client().Watch(wctx, keys.Prefix+"ca/", opts...) {
			if len(resp.Events) > 0 || resp.Err() != nil {
				break
			}
		}
		cancel()
	}
	return nil
}

// caRotationStep does one round of followCARotation, and returns the
// store revision it read the rotation at.
func (a *Agent) caRotationStep(ctx context.Context, st *store.Store) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c := st.Client()
	r, rev, storeRev, err := carotate.Load(ctx, c)
	if err != nil || r == nil || r.Phase == wire.CAPhaseDone {
		return storeRev, err
	}
	done, err := carotate.HasDone(ctx, c, r, a.cfg.Name)
	if err != nil {
		return 0, err
	}
	if !done {
		if err := a.caPhase(ctx, st, r); err != nil {
			return 0, fmt.Errorf("phase %s of rotation %s: %w", r.Phase, r.ID, err)
		}
		if err := carotate.Ack(ctx, st.Client(), r.ID, a.cfg.Name, r.Phase); err != nil {
			return 0, err
		}
		a.log.Info("CA rotation: this node did its part of a phase", "rotation", r.ID, "phase", r.Phase)
	}
	moved, err := carotate.Advance(ctx, st.Client(), r, rev, time.Now())
	if moved {
		a.log.Info("CA rotation: every node did a phase; moving on", "rotation", r.ID, "done", r.Phase)
	}
	return storeRev, err
}

// caPhase does a rotation phase's work on this node. Each phase checks
// what is already done, so a node that crashed in the middle, or joined
// during the rotation, does only what is left.
func (a *Agent) caPhase(ctx context.Context, st *store.Store, r *wire.CARotation) error {
	certs, err := pki.ParseCerts([]byte(r.NewCA))
	if err != nil || len(certs) != 1 {
		return fmt.Errorf("the rotation's new CA certificate: %v", err)
	}
	newCA := certs[0]
	switch r.Phase {
	case wire.CAPhaseTrust:
		if err := a.changeTLS(func(m *pki.Material) (*pki.Material, error) {
			if m.HasCA(newCA) {
				return nil, nil
			}
			return m.Trusting(append(slices.Clone(m.CAs), newCA))
		}); err != nil {
			return err
		}
		return a.restartMemberToTrust(ctx, st, r)
	case wire.CAPhaseIssue:
		return a.changeTLS(func(m *pki.Material) (*pki.Material, error) {
			if m.Cert.Leaf.CheckSignatureFrom(newCA) == nil {
				return nil, nil
			}
			if m.CA == nil {
				return nil, errors.New("this node holds no CA key, so it cannot open the new CA's key")
			}
			keyPEM := m.CAKeyPEM
			if !m.CA.Cert.Equal(newCA) {
				if keyPEM, err = m.CA.OpenKey(r.NewCAKey, r.ID); err != nil {
					return nil, err
				}
			}
			bundle := m.CAs
			if !m.HasCA(newCA) {
				bundle = append(slices.Clone(bundle), newCA)
			}
			ca, err := pki.ParseCA([]byte(r.NewCA), keyPEM)
			if err != nil {
				return nil, err
			}
			return a.issueWith(pki.EncodeCerts(bundle...), ca, keyPEM)
		})
	case wire.CAPhaseRetire:
		if err := a.changeTLS(func(m *pki.Material) (*pki.Material, error) {
			if len(m.CAs) == 1 && m.HasCA(newCA) {
				return nil, nil
			}
			if m.Cert.Leaf.CheckSignatureFrom(newCA) != nil {
				return nil, errors.New("this node's certificate is not from the new CA yet (it missed the issue phase): rejoin it with a new join token")
			}
			return m.Trusting([]*x509.Certificate{newCA})
		}); err != nil {
			return err
		}
		return a.restartMemberToTrust(ctx, st, r)
	}
	return fmt.Errorf("unknown phase %q (a newer version started this rotation?)", r.Phase)
}

// changeTLS replaces the node's material by what change makes of it
// (nothing when change returns nil, nil), saved to the data dir first.
func (a *Agent) changeTLS(change func(*pki.Material) (*pki.Material, error)) error {
	a.tlsMu.Lock()
	defer a.tlsMu.Unlock()
	next, err := change(a.tls.Load())
	if err != nil || next == nil {
		return err
	}
	if err := a.tlsDir().Save(next); err != nil {
		return err
	}
	a.tls.Store(next)
	return nil
}

// restartWait bounds the wait for the margin that a store member's restart
// needs (a quorum without it).
const restartWait = time.Minute

// restartMemberToTrust restarts this node's store member if the CA bundle
// it started with is not the one in the data dir now: etcd reads it only
// at start. The voters restart one at a time (a lock in the store), each
// only while the others hold a quorum without it, so the store keeps
// serving; a one-voter cluster pauses for the restart.
func (a *Agent) restartMemberToTrust(ctx context.Context, st *store.Store, r *wire.CARotation) error {
	mem := st.Member()
	if mem == nil {
		return nil // a client node, or an external store: nothing to reload
	}
	want, err := os.ReadFile(a.tlsDir().Path(pki.CAFile))
	if err != nil {
		return err
	}
	if bytes.Equal(mem.Trusted(), want) {
		return nil
	}
	// The leader restarts last: its restart moves the leadership, and
	// requests in flight then fail with "leader changed"; once per phase
	// is the least it can be.
	deadline := time.Now().Add(restartWait)
	for mem.IsLeader() && time.Now().Before(deadline) {
		_, pending, err := carotate.Progress(ctx, st.Client(), r)
		if err == nil && (len(pending) == 0 || len(pending) == 1 && pending[0] == a.cfg.Name) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	sess, err := concurrency.NewSession(st.Client(), concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	lease := sess.Lease()
	mu := concurrency.NewMutex(sess, keys.CARestartLock)
	if err := mu.Lock(ctx); err != nil {
		sess.Close()
		return fmt.Errorf("wait for the other store members' restarts: %w", err)
	}
	defer func() {
		// The session's client may be gone with the old member: release
		// the lock through the current one.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = st.Client().Revoke(rctx, lease)
		cancel()
		sess.Orphan()
	}()
	deadline = time.Now().Add(restartWait)
	for {
		h := st.Health()
		fresh := time.Since(h.Measured) < 3*time.Second
		if fresh && (h.Voters == 1 || h.LeaderID != 0 && h.Reachable-1 >= h.Quorum()) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the store member must restart to trust the new CA bundle, but only %d of %d voters are reachable: a restart now would lose the quorum; bring the voters back (or remove dead ones) and the rotation goes on", h.Reachable, h.Voters)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	a.log.Info("CA rotation: restarting the store member so that it reads the new CA bundle")
	start := time.Now()
	if err := st.RestartMember(ctx, func(ctx context.Context) (*store.Member, error) {
		return store.StartMember(ctx, a.memberConfig(""), a.log)
	}); err != nil {
		return err
	}
	a.log.Info("CA rotation: the store member restarted", "took", time.Since(start).Round(time.Millisecond))
	return nil
}
