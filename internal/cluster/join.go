package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// This file is the joining side of admission: starting the store member of
// a learner that Admit (or autopilot) added, safely when other nodes join at
// the same moment.
//
// etcd starts a joining member from an initial cluster (name=peerURL for
// every member) and refuses to start when that list does not match the
// member list it then fetches from a peer ("member count is unequal"). So
// the member list must not change between a learner's addition and its
// start (Admit and autopilot add a learner only while there is none: see
// decideAdmit and Plan), the initial cluster is read after the addition,
// and the start waits until every started member has applied the addition.
// A start that still fails for a passing reason is retried with backoff on
// a clean store dir (StartMember removes a failed join's dir).

// ErrLearnerGone means the learner a node was to start its member as is no
// longer a store member (autopilot or an operator removed it): the node
// must ask to be admitted again.
var ErrLearnerGone = errors.New("this node's store learner is no longer a member")

// StartFunc starts this node's store member with the given initial cluster.
type StartFunc func(ctx context.Context, initialCluster string) (*store.Member, error)

// learnerStartTimeout bounds one attempt to start a learner's member; a
// member that has not joined by then is stopped and started afresh.
const learnerStartTimeout = 30 * time.Second

// joinBackOff is the backoff between attempts to join or start a learner:
// from 200 ms up to 5 s, each wait randomised by ±50% so that nodes started
// together do not retry in step.
func joinBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.RandomizationFactor = 0.5
	return b
}

// retryJoin calls op with joinBackOff until it succeeds, fails for good
// (Permanent) or ctx ends; the error then names op's last failure too.
func retryJoin[T any](ctx context.Context, log *slog.Logger, what string, op func() (T, error)) (T, error) {
	var last error
	res, err := backoff.Retry(ctx, func() (T, error) {
		res, err := op()
		if err != nil {
			last = err
		}
		return res, err
	}, backoff.WithBackOff(joinBackOff()), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			log.Warn(what+" failed; trying again", "err", err, "in", next.Round(time.Millisecond))
		}))
	if err != nil && ctx.Err() != nil && last != nil && !errors.Is(err, last) {
		err = fmt.Errorf("%w (last error: %v)", err, last)
	}
	return res, err
}

// permanentStart reports whether a member start failed for a reason that
// retrying cannot fix: a port held by another process, or a data dir the
// agent may not write.
func permanentStart(err error) bool {
	return errors.Is(err, store.ErrPortTaken) || errors.Is(err, fs.ErrPermission)
}

// StartLearner starts this node's store member as learner id (name is the
// node's name), through c, a client of the existing voters. Each attempt
// reads the member list after the learner's addition, waits until the
// started members have applied it, and starts the member with that list;
// an attempt that fails for a passing reason (a peer not ready, a
// membership change racing it) is retried with backoff. It returns
// ErrLearnerGone when the learner has been removed meanwhile.
func StartLearner(ctx context.Context, c *clientv3.Client, tlsCfg *tls.Config, id uint64, name string, start StartFunc, log *slog.Logger) (*store.Member, error) {
	return retryJoin(ctx, log, "start store learner", func() (*store.Member, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ml, err := c.MemberList(rctx) // linearizable: includes every change committed before
		cancel()
		if err != nil {
			return nil, fmt.Errorf("read store members: %w", err)
		}
		if !slices.ContainsFunc(ml.Members, func(m *etcdserverpb.Member) bool { return m.ID == id }) {
			return nil, backoff.Permanent(fmt.Errorf("%w (member %x)", ErrLearnerGone, id))
		}
		jr := memberResponse(ml.Members, id, name)
		if err := waitApplied(ctx, ml.Members, tlsCfg, id, log); err != nil {
			return nil, err
		}
		log.Info("starting store member as a learner", "initial_cluster", jr.InitialCluster)
		sctx, cancel := context.WithTimeout(ctx, learnerStartTimeout)
		mem, err := start(sctx, jr.InitialCluster)
		cancel()
		if err != nil && permanentStart(err) {
			return nil, backoff.Permanent(err)
		}
		return mem, err
	})
}

// waitApplied waits, for up to 5 s, until every started member other than
// id lists id among its members: a joining member fetches the member list
// from one of them and refuses to start if it differs from its initial
// cluster. A member that does not answer is not waited for (the joiner
// cannot fetch from it either); one that answers without id is.
func waitApplied(ctx context.Context, members []*etcdserverpb.Member, tlsCfg *tls.Config, id uint64, log *slog.Logger) error {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var lagging []string
	for _, mem := range members {
		if mem.ID == id || len(mem.ClientURLs) == 0 {
			continue
		}
		if !hasApplied(wctx, mem.ClientURLs, tlsCfg, id, log) {
			lagging = append(lagging, mem.Name)
		}
	}
	if len(lagging) > 0 {
		return fmt.Errorf("store members %v have not yet applied this node's addition", lagging)
	}
	return nil
}

// hasApplied polls the member at eps (its own view, serializable) until it
// lists id, it cannot be reached, or ctx ends; it reports false only when
// the member answered without id to the end.
func hasApplied(ctx context.Context, eps []string, tlsCfg *tls.Config, id uint64, log *slog.Logger) bool {
	c, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: tlsCfg, DialTimeout: time.Second, Logger: store.ZapLogger(log, zapcore.ErrorLevel)})
	if err != nil {
		return true
	}
	defer c.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		ml, err := c.MemberList(rctx, clientv3.WithSerializable())
		cancel()
		if err != nil {
			return ctx.Err() == nil // unreachable: not waited for
		}
		if slices.ContainsFunc(ml.Members, func(m *etcdserverpb.Member) bool { return m.ID == id }) {
			return true
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return false
		}
	}
}

// AbandonLearner removes learner id through c, under the membership lock,
// for a joiner giving up: an added member that never starts would lower
// the cluster's fault tolerance. A member that is no longer a learner (it
// was promoted) or no longer exists is left alone.
func AbandonLearner(ctx context.Context, c *clientv3.Client, id uint64) error {
	return lockedWith(ctx, c, func(c *clientv3.Client) error {
		ml, err := c.MemberList(ctx)
		if err != nil {
			return err
		}
		for _, mem := range ml.Members {
			if mem.ID == id && mem.IsLearner {
				_, err := c.MemberRemove(ctx, id)
				return err
			}
		}
		return nil
	})
}

// Joiner joins this node to a cluster on its first start. Its funcs do the
// node's I/O: the agent wires them.
type Joiner struct {
	Name string
	// Admit asks a node of the cluster to admit this one (Manager.Admit
	// through the API); an ErrConflict-like refusal must come back as a
	// backoff.Permanent error.
	Admit func(ctx context.Context) (wire.JoinResponse, error)
	// Start starts this node's store member (StartMember on its store dir).
	Start StartFunc
	// Save persists the node's identity once its role is settled; for a
	// voter, after its member started (its store dir holds data from then).
	Save func(role string, endpoints []string) error
	// Clear removes what Save and Start left (the identity and the store
	// dir), for a join that gives up after its member started.
	Clear func() error
	// StoreTLS is the TLS configuration to reach the store's members with
	// (https:// endpoints); nil for a store without TLS.
	StoreTLS *tls.Config
	Log      *slog.Logger
}

// Join asks to be admitted and, when added as a learner, starts the store
// member and promotes it to voter. It returns a store client (using the
// member for a voter) and the node's role. A failure that can pass is
// retried with backoff, a learner removed meanwhile is asked for again;
// when it gives up, it removes its learner and its half-made state, so
// that no unstarted member lowers the cluster's fault tolerance and a
// restart joins afresh.
func (j Joiner) Join(ctx context.Context) (*store.Store, string, error) {
	type joined struct {
		st   *store.Store
		role string
	}
	res, err := retryJoin(ctx, j.Log, "join", func() (joined, error) {
		resp, err := j.Admit(ctx)
		if err != nil {
			return joined{}, err
		}
		remote, err := store.NewRemote(resp.Endpoints, j.StoreTLS, j.Log)
		if err != nil {
			return joined{}, err
		}
		if resp.Role == RoleClient {
			j.Log.Info("joined as a client node", "endpoints", resp.Endpoints)
			if err := j.Save(RoleClient, resp.Endpoints); err != nil {
				remote.Close()
				return joined{}, backoff.Permanent(err)
			}
			return joined{remote, RoleClient}, nil
		}
		j.Log.Info("admitted as a store learner", "member", fmt.Sprintf("%x", resp.MemberID))
		mem, err := StartLearner(ctx, remote.Client(), j.StoreTLS, resp.MemberID, j.Name, j.Start, j.Log)
		if errors.Is(err, ErrLearnerGone) {
			remote.Close()
			return joined{}, err // ask to be admitted again
		}
		if err == nil {
			if err = j.Save(RoleVoter, nil); err == nil {
				err = PromoteSelf(ctx, remote.Client(), resp.MemberID)
			}
			if err != nil {
				mem.Close() // abandon clears its store dir
			}
		}
		if err != nil {
			j.abandon(remote.Client(), resp.MemberID)
			remote.Close()
			return joined{}, backoff.Permanent(err)
		}
		j.Log.Info("promoted to store voter")
		remote.UseMember(mem)
		return joined{remote, RoleVoter}, nil
	})
	return res.st, res.role, err
}

// abandon removes the node's learner and its half-made state, on a context
// of its own: the join's may have ended.
func (j Joiner) abandon(c *clientv3.Client, id uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := AbandonLearner(ctx, c, id); err != nil {
		j.Log.Warn("remove this node's store learner after a failed join (autopilot removes it later)", "member", fmt.Sprintf("%x", id), "err", err)
	}
	if err := j.Clear(); err != nil {
		j.Log.Warn("clear the failed join's store dir and identity", "err", err)
	}
}
