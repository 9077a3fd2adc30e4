package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// MemberConfig describes the embedded etcd member of a voter node.
type MemberConfig struct {
	Name      string
	Dir       string // etcd's data dir
	BindIP    string
	PeerURL   string // advertised, http://ip:port
	ClientURL string // advertised, http://ip:port
	PeerPort  int
	StorePort int
	Heartbeat time.Duration
	Election  time.Duration
	// InitialCluster is name=peerURL,... for a member joining an existing
	// cluster; empty to bootstrap a new one-member cluster (or when Dir
	// already holds data, in which case it is ignored).
	InitialCluster string
}

// HasData reports whether dir holds an etcd member's data.
func HasData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

// Member is a running embedded etcd member.
type Member struct {
	Etcd      *embed.Etcd
	closeOnce sync.Once
}

// StartMember starts the embedded etcd member and waits until it has joined
// Raft and is ready to serve, or ctx ends. A member that is restarting on its
// data dir can only become ready once a quorum of voters is up, so callers
// that start several members at once must start them all before waiting.
func StartMember(ctx context.Context, mc MemberConfig, log *slog.Logger) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Name = mc.Name
	cfg.Dir = mc.Dir
	cfg.TickMs = uint(mc.Heartbeat / time.Millisecond)
	cfg.ElectionMs = uint(mc.Election / time.Millisecond)
	cfg.MaxLearners = 3
	// etcd's strict check refuses even a learner while one voter of three is
	// down, which would stop autopilot from adding a replacement before it
	// removes the dead voter. tandem checks quorum itself before every
	// change (cluster.Plan, checkQuorumAfterRemoval); etcd still refuses to
	// promote a learner that has not caught up.
	cfg.StrictReconfigCheck = false
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = "100000"
	cfg.SnapshotCount = 20000
	cfg.InitialClusterToken = "tandem"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(ZapLogger(log.With("component", "etcd"), zapcore.WarnLevel))
	cfg.Metrics = "basic"

	mustURL := func(s string) url.URL {
		u, _ := url.Parse(s)
		return *u
	}
	cfg.ListenPeerUrls = []url.URL{mustURL(fmt.Sprintf("http://%s:%d", mc.BindIP, mc.PeerPort))}
	cfg.ListenClientUrls = []url.URL{mustURL(fmt.Sprintf("http://%s:%d", mc.BindIP, mc.StorePort))}
	cfg.AdvertisePeerUrls = []url.URL{mustURL(mc.PeerURL)}
	cfg.AdvertiseClientUrls = []url.URL{mustURL(mc.ClientURL)}
	joining := mc.InitialCluster != "" && !HasData(mc.Dir)
	if joining {
		cfg.InitialCluster = mc.InitialCluster
		cfg.ClusterState = embed.ClusterStateFlagExisting
	} else {
		cfg.InitialCluster = mc.Name + "=" + mc.PeerURL
		cfg.ClusterState = embed.ClusterStateFlagNew
	}
	if err := os.MkdirAll(mc.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	m, err := startEtcd(ctx, cfg)
	if err != nil && joining {
		// A member that failed to join leaves a data dir that could not
		// start again (etcd finds no term in it): remove it, so that the
		// next attempt, or a restart, joins afresh.
		if rmErr := os.RemoveAll(mc.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove the failed member's store dir: %w", rmErr))
		}
	}
	return m, err
}

func startEtcd(ctx context.Context, cfg *embed.Config) (*Member, error) {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("start store member: %w (%w: another process holds the peer or store port; pick others with --peer-port/--store-port)", err, ErrPortTaken)
		}
		return nil, fmt.Errorf("start store member: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Member{Etcd: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store member failed: %w", err)
	case <-e.Server.StopNotify():
		e.Close()
		return nil, errors.New("store member stopped before it was ready (was this member removed from the cluster? then remove the data dir and join again)")
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start store member: %w", ctx.Err())
	}
}

// ID is the member's etcd ID.
func (m *Member) ID() uint64 { return uint64(m.Etcd.Server.MemberID()) }

// IsLeader reports whether this member is the Raft leader now.
func (m *Member) IsLeader() bool { return m.Etcd.Server.Lead() == m.ID() }

// Close stops the member, handing over leadership first if it holds it.
// It may be called more than once.
//
// etcd's own Close waits up to its request timeout (5 s plus two election
// timeouts) for the hand-over, which never finishes when the other voters
// are stopping at the same moment (a host shutdown, 'tandem up' on Ctrl-C):
// then every agent took over 6 s to stop. Here the hand-over gets two
// election timeouts, and ends early once this member is no longer leader
// (it handed over, or stepped down for want of a quorum); then the member
// stops without waiting any more. Nothing acknowledged is lost by this: a
// write is acknowledged only once a quorum has it on disk.
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		s := m.Etcd.Server
		if m.IsLeader() {
			bound := 2 * time.Duration(s.Cfg.ElectionTicks) * time.Duration(s.Cfg.TickMs) * time.Millisecond
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = s.TryTransferLeadershipOnShutdown()
			}()
			deadline := time.NewTimer(bound)
			tick := time.NewTicker(time.Duration(s.Cfg.TickMs) * time.Millisecond)
		wait:
			for {
				select {
				case <-done:
					break wait
				case <-deadline.C:
					break wait
				case <-tick.C:
					if !m.IsLeader() {
						break wait
					}
				}
			}
			deadline.Stop()
			tick.Stop()
			// HardStop ends a transfer still waiting (it cancels the
			// server's context), so Close's own attempt returns at once.
			s.HardStop()
			<-done
		}
		m.Etcd.Close()
	})
}

// Discard stops a member that was never promoted to voter and removes its
// store dir, so that a restart of the node does not start it again.
func (m *Member) Discard() error {
	dir := m.Etcd.Config().Dir
	m.Close()
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the store dir: %w", err)
	}
	return nil
}
