package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap/zapcore"
)

// Store is a node's handle on the replicated store. On a voter it talks to
// the embedded member in-process; on a client node it talks to the voters'
// client endpoints over gRPC and follows membership changes.
//
// Client may be called from any goroutine; the client it returns can change
// when a client node is promoted to voter, so callers fetch it per operation.
type Store struct {
	log    *slog.Logger
	client atomic.Pointer[clientv3.Client]
	member atomic.Pointer[Member]

	// probe is a gRPC client used only to ask members for their status.
	probe *clientv3.Client
	// tls is what clients of other members dial with.
	tls *tls.Config

	closeOnce sync.Once

	// statusMu keeps the member from stopping while an in-process Status
	// request runs on it: a Status that races the member's shutdown can
	// crash the process (etcd-io/etcd#22189); memberDown is set, under
	// the write lock, once the member is stopping.
	statusMu   sync.RWMutex
	memberDown bool

	mu       sync.Mutex
	health   Health
	lastURLs []string
}

// Health is the last measured reachability of the voters from this node.
type Health struct {
	Voters    int       // voting members in the last known membership
	Reachable int       // of those, how many answered a status probe
	LeaderID  uint64    // leader reported by a reachable member, 0 if none
	Measured  time.Time // when the probe ran; zero if never
	// Answered holds the client URLs of the voters that answered, sorted.
	Answered []string
}

// Quorum is the number of voters needed for a majority.
func (h Health) Quorum() int { return h.Voters/2 + 1 }

// NewRemote returns a Store that reaches the store through endpoints (client
// URLs of voters or of an external etcd cluster) and keeps the list current
// as membership changes.
//
// tlsCfg, when not nil, is used for every connection (https:// endpoints):
// it must hold this node's client certificate (for a store that requires
// one) and the CA to verify the members with. Leave its ServerName empty:
// each member's certificate is then checked against its endpoint's host.
// Nil dials plain http:// endpoints.
func NewRemote(endpoints []string, tlsCfg *tls.Config, log *slog.Logger) (*Store, error) {
	c, err := newGRPCClient(endpoints, tlsCfg, log, 5*time.Second)
	if err != nil {
		return nil, err
	}
	s, err := newStore(endpoints, tlsCfg, log)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.client.Store(c)
	return s, nil
}

// NewLocal returns a Store backed by the embedded member m. Its own
// requests go to m in-process; the status probes of the other voters, and
// its requests while m restarts, dial with tlsCfg (nil without TLS; see
// NewRemote), which should follow the node's certificate renewals and CA
// rotations.
func NewLocal(m *Member, tlsCfg *tls.Config, log *slog.Logger) (*Store, error) {
	var eps []string
	for _, u := range m.Etcd.Config().AdvertiseClientUrls {
		eps = append(eps, u.String())
	}
	s, err := newStore(eps, tlsCfg, log)
	if err != nil {
		return nil, err
	}
	s.UseMember(m)
	return s, nil
}

// newStore makes the Store with its probe client; endpoints are only the
// probe's initial connection, each probe dials the member it asks.
func newStore(endpoints []string, tlsCfg *tls.Config, log *slog.Logger) (*Store, error) {
	probe, err := newGRPCClient(endpoints, tlsCfg, log, 0)
	if err != nil {
		return nil, err
	}
	return &Store{log: log, probe: probe, tls: tlsCfg}, nil
}

// TLS is the configuration this node dials store members with (nil on an
// insecure cluster or an external store).
func (s *Store) TLS() *tls.Config { return s.tls }

func newGRPCClient(endpoints []string, tlsCfg *tls.Config, log *slog.Logger, autoSync time.Duration) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tlsCfg,
		AutoSyncInterval:     autoSync,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               ZapLogger(log.With("component", "etcd-client"), zapcore.ErrorLevel),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to store %v: %w", endpoints, err)
	}
	return c, nil
}

// UseMember switches the store to the embedded member m, in-process.
// The previous client, if any, is closed.
func (s *Store) UseMember(m *Member) {
	s.statusMu.Lock()
	s.memberDown = false
	s.statusMu.Unlock()
	s.member.Store(m)
	old := s.client.Swap(v3client.New(m.Etcd.Server))
	if old != nil {
		old.Close()
	}
}

// Client returns the etcd client to use for the next operation.
func (s *Store) Client() *clientv3.Client { return s.client.Load() }

// Member returns the embedded member, or nil on a client node.
func (s *Store) Member() *Member { return s.member.Load() }

// Endpoints returns the client URLs this node currently uses to reach the
// store (its own on a voter).
func (s *Store) Endpoints() []string {
	if m := s.Member(); m != nil {
		var eps []string
		for _, u := range m.Etcd.Config().AdvertiseClientUrls {
			eps = append(eps, u.String())
		}
		return eps
	}
	return s.Client().Endpoints()
}

// Close releases the clients and stops the embedded member, if any. It may
// be called more than once.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		if c := s.client.Load(); c != nil {
			c.Close()
		}
		s.probe.Close()
		if m := s.Member(); m != nil {
			s.stopping()
			m.Close()
		}
	})
}

// stopping waits for in-process Status requests to end and keeps new ones
// off the member, which is about to stop.
func (s *Store) stopping() {
	s.statusMu.Lock()
	s.memberDown = true
	s.statusMu.Unlock()
}

// RestartMember stops the embedded member and starts it again with start
// (on the same data dir), so that it reads its CA bundle anew: etcd reads
// it only when a member starts, and a CA rotation must change it. The
// member hands over leadership first if it holds it. Meanwhile this
// node's requests go to the other voters; start is retried until it
// succeeds or ctx ends.
func (s *Store) RestartMember(ctx context.Context, start func(context.Context) (*Member, error)) error {
	old := s.Member()
	if old == nil {
		return errors.New("this node runs no store member")
	}
	own := map[string]bool{}
	for _, u := range old.Etcd.Config().AdvertiseClientUrls {
		own[u.String()] = true
	}
	var others []string
	for _, pm := range old.Etcd.Server.Cluster().Members() {
		if pm.IsLearner {
			continue
		}
		for _, u := range pm.ClientURLs {
			if !own[u] {
				others = append(others, u)
			}
		}
	}
	if len(others) > 0 {
		c, err := newGRPCClient(others, s.tls, s.log, 0)
		if err != nil {
			return fmt.Errorf("restart the store member: dial the other voters: %w", err)
		}
		if prev := s.client.Swap(c); prev != nil {
			prev.Close()
		}
	}
	s.stopping()
	old.Close()
	for {
		m, err := start(ctx)
		if err == nil {
			s.UseMember(m)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("restart the store member: %w", err)
		}
		s.log.Warn("restart the store member; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Health returns the last probe result.
func (s *Store) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// RunProbe measures voter reachability every interval until ctx ends. The
// result names the cause when a request fails for want of a quorum.
func (s *Store) RunProbe(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var voterURLs []string
	for {
		voterURLs = s.probeOnce(ctx, voterURLs, interval)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Store) probeOnce(ctx context.Context, last []string, timeout time.Duration) []string {
	urls := last
	if m := s.Member(); m != nil {
		urls = nil
		if rc, ok := m.Etcd.Server.Cluster().(*membership.RaftCluster); ok {
			for _, vm := range rc.VotingMembers() {
				if len(vm.ClientURLs) > 0 {
					urls = append(urls, vm.ClientURLs[0])
				}
			}
		}
	} else {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := s.Client().MemberList(lctx, clientv3.WithSerializable())
		cancel()
		if err == nil {
			urls = nil
			for _, vm := range resp.Members {
				if !vm.IsLearner && len(vm.ClientURLs) > 0 {
					urls = append(urls, vm.ClientURLs[0])
				}
			}
		}
	}
	sort.Strings(urls)
	h := Health{Voters: len(urls), Measured: time.Now()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := s.status(pctx, u)
			if err != nil {
				return
			}
			mu.Lock()
			h.Reachable++
			h.Answered = append(h.Answered, u)
			if st.Leader != 0 {
				h.LeaderID = st.Leader
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Strings(h.Answered)
	s.mu.Lock()
	s.health = h
	s.lastURLs = urls
	s.mu.Unlock()
	return urls
}

// status asks the member at u for its status without waiting for a
// connection (gRPC fail-fast): a voter that refuses connections counts as
// unreachable at once instead of using up the whole probe budget.
func (s *Store) status(ctx context.Context, u string) (*etcdserverpb.StatusResponse, error) {
	conn, err := s.probe.Dial(u)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return etcdserverpb.NewMaintenanceClient(conn).Status(ctx, &etcdserverpb.StatusRequest{})
}

// ProbeBudget is the part of a request's time kept back to measure, after a
// failure, how many voters this node can reach.
func ProbeBudget(timeout time.Duration) time.Duration { return min(250*time.Millisecond, timeout/5) }

// Diagnose probes the voters now, within budget, and returns the error for
// a request that failed for want of a quorum.
func (s *Store) Diagnose(ctx context.Context, cause error, budget time.Duration) error {
	s.Probe(ctx, budget)
	return s.Unavailable(cause)
}

// Probe asks the voters of the last probe for their status now, each
// within budget, and returns the result (also kept for Health). A voter
// that does not answer within budget counts as unreachable.
func (s *Store) Probe(ctx context.Context, budget time.Duration) Health {
	s.mu.Lock()
	urls := s.lastURLs
	s.mu.Unlock()
	if len(urls) > 0 && budget > 0 {
		s.probeOnce(ctx, urls, budget)
	}
	return s.Health()
}

// Unavailable builds the error for a request that failed for want of a
// quorum, naming what happened: a leader change, a timeout, or a real loss
// of quorum (fewer than a majority of voters reachable).
func (s *Store) Unavailable(cause error) error { return unavailable(s.Health(), cause) }

// unavailable is Unavailable's decision, from the last probe h.
func unavailable(h Health, cause error) error {
	switch {
	case errors.Is(cause, ErrLeaderChanged):
		return fmt.Errorf("%w: the request waited on the old leader, and a new one was just elected; retry", ErrLeaderChanged)
	case h.Measured.IsZero() || h.Voters == 0:
		return fmt.Errorf("%w: the store did not answer in time (%v); check the voters with 'tandem members'", ErrTimeout, cause)
	case h.Reachable < h.Quorum():
		return fmt.Errorf("%w: %d of %d voters reachable, %d needed; this node is cut off from the majority or voters are down", ErrNoQuorum, h.Reachable, h.Voters, h.Quorum())
	case h.LeaderID == 0:
		return fmt.Errorf("%w: %d of %d voters reachable and electing a leader (%v); retry", ErrLeaderChanged, h.Reachable, h.Voters, cause)
	default:
		return fmt.Errorf("%w: the request ran out of time (%v) although %d of %d voters are reachable and the store has a leader: it may be overloaded or the timeout too short; retry, or give a longer timeout=", ErrTimeout, cause, h.Reachable, h.Voters)
	}
}

// MemberStatus asks the member at clientURL for its status.
func (s *Store) MemberStatus(ctx context.Context, clientURL string) (*clientv3.StatusResponse, error) {
	if m := s.Member(); m != nil {
		for _, u := range m.Etcd.Config().AdvertiseClientUrls {
			if u.String() == clientURL {
				s.statusMu.RLock()
				defer s.statusMu.RUnlock()
				if s.memberDown {
					return nil, errors.New("the store member is stopping")
				}
				return s.Client().Status(ctx, clientURL)
			}
		}
	}
	return s.probe.Status(ctx, clientURL)
}
