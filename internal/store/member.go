package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
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
	PeerURL   string // advertised, http://ip:port, or https:// with TLS
	ClientURL string // advertised, http://ip:port, or https:// with TLS
	PeerPort  int
	StorePort int
	Heartbeat time.Duration
	Election  time.Duration
	// InitialCluster is name=peerURL,... for a member joining an existing
	// cluster; empty to bootstrap a new one-member cluster (or when Dir
	// already holds data, in which case it is ignored).
	InitialCluster string
	// TLS, when set, makes both ports speak mutual TLS: PeerURL and
	// ClientURL must then be https:// URLs. Nil keeps them plain http://.
	TLS *TLSFiles
}

// TLSFiles names the PEM files of a member's mutual TLS: the node's
// certificate and key (served on both ports, and shown to the other
// members when dialing them) and the CA bundle that a peer's or client's
// certificate must chain to.
//
// etcd (v3.7, client/pkg/transport) reads CertFile and KeyFile again on
// every TLS handshake, as server and as client, so a renewed certificate
// written over them (an atomic rename) is used from the next connection on,
// without a restart. tandem names one file, holding both the key and the
// certificate, as both: one rename replaces the pair. (etcd still reads
// it twice per handshake; one that falls between the two reads and a
// rename sees a mismatched pair and fails, and the retry succeeds.)
// Connections already open keep the certificate they started with.
// CAFile, on the contrary, is read once, when the member starts (etcd
// builds the listeners' and the peer transport's CA pools then): a new CA
// bundle takes effect only when the member restarts (Store.RestartMember),
// so a CA rotation puts the new CA in the bundle and restarts each member
// before any node shows a certificate it signed.
type TLSFiles struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// setTLS configures both ports of cfg for mutual TLS: a peer or client
// must show a certificate from the CA, or it is refused.
//
// On the peer port etcd also checks the dialing member's certificate
// against the address it connects from: one of its IP SANs must be that
// address (or a DNS SAN must be a reverse-lookup name of it). tandem's
// node certificates carry the node's advertise and bind IPs, so a member
// that dials from either passes; a host whose route to its peers leaves
// from another address must advertise that address.
func (f *TLSFiles) setTLS(cfg *embed.Config) {
	p, c := &cfg.PeerTLSInfo, &cfg.ClientTLSInfo
	p.CertFile, p.KeyFile, p.TrustedCAFile, p.ClientCertAuth = f.CertFile, f.KeyFile, f.CAFile, true
	c.CertFile, c.KeyFile, c.TrustedCAFile, c.ClientCertAuth = f.CertFile, f.KeyFile, f.CAFile, true
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
	// trusted is the CA bundle file's content when the member started:
	// the CAs its ports trust until it restarts (see TLSFiles).
	trusted []byte
}

// Trusted is the content of the CA bundle file when the member started,
// which is what its ports trust (etcd reads the file only then); nil
// without TLS.
func (m *Member) Trusted() []byte { return m.trusted }

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

	peerURL, err := memberURL("peer", mc.PeerURL, mc.TLS != nil)
	if err != nil {
		return nil, err
	}
	clientURL, err := memberURL("store", mc.ClientURL, mc.TLS != nil)
	if err != nil {
		return nil, err
	}
	listen := func(scheme string, port int) url.URL {
		return url.URL{Scheme: scheme, Host: net.JoinHostPort(mc.BindIP, strconv.Itoa(port))}
	}
	cfg.ListenPeerUrls = []url.URL{listen(peerURL.Scheme, mc.PeerPort)}
	cfg.ListenClientUrls = []url.URL{listen(clientURL.Scheme, mc.StorePort)}
	// etcd's HTTP endpoints (/health, /metrics, the JSON gateway) get a
	// loopback port of their own, so the store port serves gRPC alone.
	// Two gains: requests skip cmux's matching (remote reads over TLS take
	// half the time), and on close etcd stops gRPC gracefully, waiting for
	// the requests in flight, where a port shared with HTTP over TLS is
	// stopped at once with handlers still running: a Status request among
	// them then reads the closed backend and crashes the process
	// (etcd-io/etcd#22189), which a member restart (CA rotation) invites.
	cfg.ListenClientHttpUrls = []url.URL{{Scheme: clientURL.Scheme, Host: "127.0.0.1:0"}}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	if mc.TLS != nil {
		mc.TLS.setTLS(cfg)
	}
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
	var trusted []byte
	if mc.TLS != nil {
		if trusted, err = os.ReadFile(mc.TLS.CAFile); err != nil {
			return nil, fmt.Errorf("store TLS files: %w", err)
		}
	}
	m, err := startEtcd(ctx, cfg)
	if m != nil {
		m.trusted = trusted
	}
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

// memberURL parses a member's advertised URL: https:// with TLS, http://
// without.
func memberURL(what, s string, secure bool) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%s URL %q is not a URL like http://10.0.0.1:7401", what, s)
	}
	switch {
	case secure && u.Scheme != "https":
		return nil, fmt.Errorf("%s URL %s must be https:// when the store uses TLS", what, s)
	case !secure && u.Scheme != "http":
		return nil, fmt.Errorf("%s URL %s must be http:// when the store does not use TLS (give TLS files for https://)", what, s)
	}
	return u, nil
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
			select {
			case <-done:
				// Handed over: stop as a follower does, the client
				// servers first (etcd's Close), so no request is served
				// by a server that is stopping.
			default:
				// HardStop ends a transfer still waiting (it cancels the
				// server's context), so Close's own attempt returns at
				// once.
				s.HardStop()
				<-done
			}
		}
		m.Etcd.Close()
	})
}

// ClientTLS returns a TLS configuration for dialing members' client ports
// as this member's node, built from its TLS files: the certificate and key
// are read on each handshake (renewals apply), the CA bundle once (a CA
// rotation does not). The agent dials with its pki.Keeper instead, which
// follows both; this is for tests and tools. It is nil for a member
// without TLS.
func (m *Member) ClientTLS() (*tls.Config, error) {
	info := m.Etcd.Config().ClientTLSInfo
	if info.Empty() {
		return nil, nil
	}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("store TLS files: %w", err)
	}
	return c, nil
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
