// Package agent wires one node together: the store (embedded member or
// client), membership, and the API, run under one errgroup. It holds no
// feature logic of its own.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/tandemhq/tandem/internal/api"
	"github.com/tandemhq/tandem/internal/catalog"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/dns"
	"github.com/tandemhq/tandem/internal/health"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/proxy"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/view"
	"github.com/tandemhq/tandem/internal/wire"
	"github.com/tandemhq/tandem/internal/workload"
)

// shutdownGrace is how long parts get to stop cleanly (revoke the liveness
// lease, resign elections) before the store is closed under them.
const shutdownGrace = 3 * time.Second

// Version is the agent's version, set at build time.
var Version = "dev"

// Agent is one running node.
type Agent struct {
	cfg   config.Config
	log   *slog.Logger
	ready chan struct{}

	mu      sync.Mutex
	apiAddr string
	st      *store.Store
	view    *view.View
	dns     *dns.Server
	proxy   *proxy.Proxy
	left    bool

	// tls is the node's certificate material; nil on an insecure node.
	tls *pki.Keeper
	// tlsMu serializes the changes of tls (renewal, CA rotation): each
	// reads the material, makes the next, saves and stores it.
	tlsMu sync.Mutex
}

// New checks cfg and returns an agent ready to Run.
func New(cfg config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for k, v := range cfg.Labels {
		if err := scheduler.ValidateLabel(k, v); err != nil {
			return nil, fmt.Errorf("label %s=%s: %w", k, v, err)
		}
	}
	return &Agent{cfg: cfg, log: log.With("node", cfg.Name), ready: make(chan struct{})}, nil
}

// Ready is closed once the node has joined the cluster and serves its API.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// APIAddr is the API's host:port once Ready.
func (a *Agent) APIAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.apiAddr
}

// Store returns the node's store handle once Ready.
func (a *Agent) Store() *store.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// View returns the node's local view once Ready.
func (a *Agent) View() *view.View {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view
}

// DNSAddr is the DNS server's host:port once Ready.
func (a *Agent) DNSAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dns == nil {
		return ""
	}
	return a.dns.Addr()
}

// Proxy returns the node's proxy once Ready.
func (a *Agent) Proxy() *proxy.Proxy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proxy
}

func (a *Agent) storeDir() string { return filepath.Join(a.cfg.DataDir, "store") }

func (a *Agent) url(port int) string {
	scheme := "https://"
	if a.cfg.Insecure {
		scheme = "http://"
	}
	return scheme + net.JoinHostPort(a.cfg.Advertise, strconv.Itoa(port))
}

// TLS returns the node's certificate material, nil on an insecure node.
func (a *Agent) TLS() *pki.Keeper { return a.tls }

// storeClientTLS is the TLS a client node dials the voters' store ports
// with: its node certificate, checked by them, and theirs by it.
func (a *Agent) storeClientTLS() *tls.Config {
	if a.tls == nil {
		return nil
	}
	return a.tls.ClientConfig("")
}

// apiClient talks to other nodes' APIs as this node (its certificate).
func (a *Agent) apiClient(addrs []string) *client.Client {
	if a.tls == nil {
		return client.New(addrs)
	}
	return client.NewWithOptions(addrs, client.Options{TLS: a.tls.ClientConfig("")})
}

func (a *Agent) memberConfig(initialCluster string) store.MemberConfig {
	return store.MemberConfig{
		Name: a.cfg.Name, Dir: a.storeDir(), BindIP: a.cfg.Bind,
		PeerURL: a.url(a.cfg.PeerPort), ClientURL: a.url(a.cfg.StorePort),
		PeerPort: a.cfg.PeerPort, StorePort: a.cfg.StorePort,
		Heartbeat: a.cfg.HeartbeatInterval.D(), Election: a.cfg.ElectionTimeout.D(),
		InitialCluster: initialCluster,
		TLS:            a.storeTLS(),
	}
}

func (a *Agent) identity(role string, endpoints []string, external bool) *cluster.Identity {
	return &cluster.Identity{
		Name: a.cfg.Name, Role: role, Endpoints: endpoints, External: external,
		Advertise: a.cfg.Advertise, Bind: a.cfg.Bind,
		APIPort: a.cfg.APIPort, PeerPort: a.cfg.PeerPort, StorePort: a.cfg.StorePort,
		DNSPort: a.cfg.DNSPort, ProxyPort: a.cfg.ProxyPort,
	}
}

// Run runs the node until ctx ends or it leaves the cluster.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(a.cfg.Bind, strconv.Itoa(a.cfg.APIPort)))
	if err != nil {
		return fmt.Errorf("listen for the API: %w (is another agent running with --api-port %d?)", err, a.cfg.APIPort)
	}
	defer ln.Close()
	apiAddr := net.JoinHostPort(a.cfg.Advertise, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	id, err := cluster.LoadIdentity(a.cfg.DataDir)
	if err != nil {
		return err
	}
	if a.tls, err = a.prepareTLS(ctx, id); err != nil {
		return err
	}
	apiLn := ln
	if a.tls != nil {
		apiLn = tls.NewListener(ln, a.tls.ServerConfig())
	}

	st, role, err := a.openStore(ctx, id, apiAddr)
	if err != nil {
		return err
	}
	defer st.Close()

	self := cluster.NodeRecord{
		Name: a.cfg.Name, Role: role, API: apiAddr,
		PeerURL: a.url(a.cfg.PeerPort), StoreURL: a.url(a.cfg.StorePort),
		DNS:      net.JoinHostPort(a.cfg.Advertise, strconv.Itoa(a.cfg.DNSPort)),
		Proxy:    net.JoinHostPort(a.cfg.Advertise, strconv.Itoa(a.cfg.ProxyPort)),
		External: len(a.cfg.StoreEndpoints) > 0, Started: time.Now().UTC(), Version: Version,
		Labels: a.cfg.Labels, Workloads: a.cfg.Workloads,
	}
	if a.cfg.Workloads {
		self.CPUMillis, self.MemoryMB = workload.Capacity()
	}
	if self.External {
		self.PeerURL, self.StoreURL = "", ""
	}
	if m := st.Member(); m != nil {
		self.MemberID = m.ID()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	liveMetrics := cluster.NewMetrics()
	cm := cluster.New(st, self, cluster.Options{
		Metrics:          liveMetrics,
		Target:           a.cfg.Voters,
		DeadVoterTimeout: a.cfg.DeadVoterTimeout.D(),
		LeaseTTL:         a.cfg.LeaseTTL.D(),
		StartMember: func(ctx context.Context, initialCluster string) (*store.Member, error) {
			return store.StartMember(ctx, a.memberConfig(initialCluster), a.log)
		},
		OnRoleChange: func(role string) error {
			return a.identity(role, nil, false).Save(a.cfg.DataDir)
		},
	}, a.log)
	if role == cluster.RoleVoter && len(a.cfg.Join) == 0 {
		// First start of a bootstrap node (or a restart, where this is a no-op).
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := retry(bctx, func() error { return cm.Bootstrap(bctx) })
		cancel()
		if err != nil {
			return fmt.Errorf("record cluster settings: %w", err)
		}
	}
	if a.tls != nil && len(a.cfg.Join) == 0 && (role == cluster.RoleVoter || self.External) {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := retry(bctx, func() error { return a.ensureAdminToken(bctx, st) })
		cancel()
		if err != nil {
			return fmt.Errorf("make the first admin token: %w", err)
		}
	}
	var sec *api.Security
	if a.tls != nil {
		sec = &api.Security{TLS: a.tls, CertTTL: a.cfg.CertTTL.D(), PublicMetrics: a.cfg.PublicMetrics}
	}
	v := view.New(st.Client, a.log.With("component", "view"))
	cat := catalog.New(st, a.cfg.Name, registry.Rules{AllowExec: a.cfg.EnableExecChecks})
	runner := catalog.NewRunner(st, v, health.Node{Name: a.cfg.Name, AllowExec: a.cfg.EnableExecChecks}, cm.Lease, a.log.With("component", "health"))
	dnsSrv, err := dns.New(dns.Config{
		Domain: a.cfg.DNSDomain, TTL: uint32(a.cfg.DNSTTL),
		Addr: net.JoinHostPort(a.cfg.Bind, strconv.Itoa(a.cfg.DNSPort)),
	}, v, a.log.With("component", "dns"))
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	pxMetrics := proxy.NewMetrics()
	px := proxy.New(proxy.Config{
		Addr:     net.JoinHostPort(a.cfg.Bind, strconv.Itoa(a.cfg.ProxyPort)),
		Bind:     a.cfg.Bind,
		Domain:   a.cfg.DNSDomain,
		Node:     a.cfg.Name,
		TLSCert:  a.cfg.ProxyTLSCert,
		TLSKey:   a.cfg.ProxyTLSKey,
		TLSDir:   a.cfg.ProxyTLSDir,
		TLSStore: a.cfg.ProxyTLS,
		Store:    st.Client,
		FastPath: a.cfg.ProxyFastPath,
	}, v, pxMetrics, a.log.With("component", "proxy"))
	srv := api.New(st, cm, api.Options{
		Metrics:        prometheus.Gatherers{pxMetrics.Registry, liveMetrics.Registry, a.tlsMetrics(), prometheus.DefaultGatherer},
		RequestTimeout: a.cfg.RequestTimeout.D(),
		AttemptTimeout: max(2*a.cfg.ElectionTimeout.D(), 200*time.Millisecond),
		QuorumWait:     max(a.cfg.ElectionTimeout.D(), 200*time.Millisecond),
		View:           v,
		Catalog:        cat,
		Security:       sec,
	}, a.log)
	srv.OnLeave = func() {
		a.mu.Lock()
		a.left = true
		a.mu.Unlock()
		stop()
	}

	a.mu.Lock()
	a.apiAddr, a.st, a.view, a.dns, a.proxy = apiAddr, st, v, dnsSrv, px
	a.mu.Unlock()

	// Every node, workloads or not, acknowledges the drain of an instance
	// that stops once its proxy is done with it.
	drainAcker, err := workload.NewDrainAcker(workload.DrainAckerConfig{
		Store: st, Node: a.cfg.Name, View: v, Proxy: px, Lease: cm.Lease, Log: a.log.With("component", "workloads"),
	})
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx, apiLn) })
	if a.tls != nil {
		g.Go(func() error { return a.renewCertificate(gctx) })
		g.Go(func() error { return a.followCARotation(gctx, st) })
	}
	g.Go(func() error { return cm.RunLiveness(gctx) })
	g.Go(func() error { return cm.RunDeathWatch(gctx, a.cfg.NodeProbeInterval.D(), v.AliveNodes) })
	g.Go(func() error { return cm.RunAutopilot(gctx) })
	g.Go(func() error { return cm.RunLeaderEvents(gctx) })
	g.Go(func() error { return cm.RunPromotion(gctx) })
	g.Go(func() error { return st.RunProbe(gctx, time.Second) })
	g.Go(func() error { return st.RunPeerLinks(gctx) })
	g.Go(func() error { return v.Run(gctx) })
	g.Go(func() error { return runner.Run(gctx) })
	g.Go(func() error {
		return workload.NewScheduler(st, a.cfg.Name, a.cfg.LeaseTTL.D(), v.Changed, a.log.With("component", "scheduler")).Run(gctx)
	})
	if a.cfg.Workloads {
		lo, hi, err := a.cfg.WorkloadPortRange()
		if err != nil {
			return err
		}
		wr, err := workload.NewRunner(workload.RunnerConfig{
			Store: st, Catalog: cat, Node: a.cfg.Name, Address: a.cfg.Advertise,
			Dir: filepath.Join(a.cfg.DataDir, "workloads"), PortLo: lo, PortHi: hi, NoSubreaper: a.cfg.NoSubreaper,
			User: workloadUser(a.cfg.WorkloadUser), DenyRoot: !a.cfg.WorkloadAllowRoot,
			LeaseTTL: a.cfg.LeaseTTL.D(), LastRenewal: cm.LastContact, Lease: cm.Lease,
			Log: a.log.With("component", "workloads"),
		})
		if err != nil {
			return err
		}
		g.Go(func() error { return wr.Run(gctx) })
	}
	// DNS and the proxies answer from the view: they listen only once it
	// has loaded, so that a node just started refuses connections (clients
	// go to another node) rather than answering "no such service".
	g.Go(func() error { return portHint(whenSynced(gctx, v, dnsSrv.Run), "--dns-port") })
	g.Go(func() error { return portHint(whenSynced(gctx, v, px.Run), "--proxy-port") })
	g.Go(func() error { return drainAcker.Run(gctx) })
	g.Go(func() error {
		return pxMetrics.RunStats(gctx, 5*time.Second, func(ctx context.Context, w map[string]proxy.Window) error {
			lease := cm.LeaseID()
			if lease == 0 {
				return nil
			}
			_, err := st.Client().Put(ctx, keys.StatsKey(a.cfg.Name), string(proxy.EncodeWindows(w)), clientv3.WithLease(lease))
			return err
		})
	})
	if role == cluster.RoleClient && !self.External {
		g.Go(func() error { return a.keepEndpoints(gctx, st, cm) })
	}
	a.log.Info("node ready", "role", role, "api", apiAddr, "store", st.Endpoints())
	close(a.ready)
	// A store that cannot be reached must not hold up shutdown: some etcd
	// client calls (an election's resign) run on the client's own context,
	// so after a grace period close the store under them.
	finished := make(chan struct{})
	go func() {
		<-gctx.Done()
		select {
		case <-finished:
		case <-time.After(shutdownGrace):
			a.log.Warn("parts still stopping after the grace period; closing the store under them")
			st.Close()
		}
	}()
	err = g.Wait()
	close(finished)
	a.mu.Lock()
	left := a.left
	a.mu.Unlock()
	if left {
		a.log.Info("left the cluster; clearing the data dir's store and identity")
		st.Close()
		_ = os.RemoveAll(a.storeDir())
		_ = os.Remove(filepath.Join(a.cfg.DataDir, "node.json"))
	}
	return err
}

// openStore starts or reaches the store as this node's identity says, or
// bootstraps or joins on first start. It returns the node's role.
func (a *Agent) openStore(ctx context.Context, id *cluster.Identity, apiAddr string) (*store.Store, string, error) {
	if id == nil && len(a.cfg.Join) > 0 && store.HasData(a.storeDir()) {
		// A joiner saves its identity as soon as its member has started:
		// store data without one is what a join killed half-way left.
		a.log.Warn("the store dir holds a join that did not finish; removing it and joining again", "dir", a.storeDir())
		if err := os.RemoveAll(a.storeDir()); err != nil {
			return nil, "", fmt.Errorf("remove the unfinished join's store dir: %w", err)
		}
	}
	switch {
	case len(a.cfg.StoreEndpoints) > 0 || (id != nil && id.External):
		eps := a.cfg.StoreEndpoints
		if len(eps) == 0 {
			eps = id.Endpoints
		}
		// An external store is the operator's: tandem dials it with the
		// TLS settings given for it, not with the cluster's certificates.
		tlsCfg, err := a.externalStoreTLS(eps)
		if err != nil {
			return nil, "", err
		}
		st, err := store.NewRemote(eps, tlsCfg, a.log)
		if err != nil {
			return nil, "", err
		}
		return st, cluster.RoleClient, a.identity(cluster.RoleClient, eps, true).Save(a.cfg.DataDir)

	case (id != nil && id.Role == cluster.RoleVoter) || store.HasData(a.storeDir()):
		a.log.Info("restarting store member from its data dir")
		m, err := store.StartMember(ctx, a.memberConfig(""), a.log)
		if err != nil {
			return nil, "", err
		}
		st, err := store.NewLocal(m, a.storeClientTLS(), a.log)
		return st, cluster.RoleVoter, err

	case id != nil && id.Role == cluster.RoleClient:
		st, err := store.NewRemote(id.Endpoints, a.storeClientTLS(), a.log)
		return st, cluster.RoleClient, err

	case len(a.cfg.Join) == 0:
		a.log.Info("bootstrapping a new cluster")
		m, err := store.StartMember(ctx, a.memberConfig(""), a.log)
		if err != nil {
			return nil, "", err
		}
		if err := a.identity(cluster.RoleVoter, nil, false).Save(a.cfg.DataDir); err != nil {
			m.Close()
			return nil, "", err
		}
		st, err := store.NewLocal(m, a.storeClientTLS(), a.log)
		return st, cluster.RoleVoter, err
	}

	return a.join(ctx, apiAddr)
}

// joinTimeout bounds a first start's join: a cluster that cannot be reached
// or cannot take the node in that time is reported to the user.
const joinTimeout = 2 * time.Minute

// join joins the cluster through the --join nodes (cluster.Joiner retries
// what can pass and cleans up what it gives up).
func (a *Agent) join(ctx context.Context, apiAddr string) (*store.Store, string, error) {
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	req := wire.JoinRequest{Name: a.cfg.Name, PeerURL: a.url(a.cfg.PeerPort), StoreURL: a.url(a.cfg.StorePort), API: apiAddr}
	j := cluster.Joiner{
		Name: a.cfg.Name,
		Admit: func(ctx context.Context) (wire.JoinResponse, error) {
			resp, err := a.apiClient(a.cfg.Join).Join(ctx, req)
			if err != nil && ctx.Err() == nil {
				err = backoff.Permanent(err) // refused: client.Join retries the rest until ctx ends
			}
			return resp, err
		},
		Start: func(ctx context.Context, initialCluster string) (*store.Member, error) {
			return store.StartMember(ctx, a.memberConfig(initialCluster), a.log)
		},
		Save: func(role string, endpoints []string) error {
			return a.identity(role, endpoints, false).Save(a.cfg.DataDir)
		},
		Clear:    a.clearJoin,
		StoreTLS: a.storeClientTLS(),
		Log:      a.log,
	}
	st, role, err := j.Join(jctx)
	if err != nil {
		if ctx.Err() == nil && jctx.Err() != nil {
			return nil, "", fmt.Errorf("join the cluster through %v: not joined within %s: %w; check that those nodes run and this node can reach them (and they it), then start it again", a.cfg.Join, joinTimeout, err)
		}
		return nil, "", fmt.Errorf("join the cluster through %v: %w", a.cfg.Join, err)
	}
	return st, role, nil
}

// clearJoin removes the store dir and identity of a join that did not
// finish, so that the next start joins afresh.
func (a *Agent) clearJoin() error {
	return errors.Join(os.RemoveAll(a.storeDir()), removeIfExists(filepath.Join(a.cfg.DataDir, "node.json")))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// keepEndpoints saves a client node's voter list when membership changes, so
// a restart can reach the store even after every original voter is gone.
func (a *Agent) keepEndpoints(ctx context.Context, st *store.Store, cm *cluster.Manager) error {
	last := st.Endpoints()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if cm.Self().Role != cluster.RoleClient {
			return nil
		}
		eps := st.Endpoints()
		slices.Sort(eps)
		if len(eps) == 0 || slices.Equal(eps, last) {
			continue
		}
		if err := a.identity(cluster.RoleClient, eps, false).Save(a.cfg.DataDir); err != nil {
			a.log.Warn("save store endpoints", "err", err)
			continue
		}
		last = eps
	}
}

// retry calls f until it succeeds or ctx ends, pausing with jittered
// exponential backoff between attempts.
func retry(ctx context.Context, f func() error) error {
	pauses := &backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: time.Second}
	pauses.Reset()
	for {
		err := f()
		var p *backoff.PermanentError
		if err == nil || errors.As(err, &p) {
			return err
		}
		t := time.NewTimer(pauses.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// portHint tells the user what to do when a port is taken.
func portHint(err error, flag string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w (another process holds the port; pick another with %s)", err, flag)
	}
	return err
}

// whenSynced runs run once the view has loaded, unless ctx ends first.
func whenSynced(ctx context.Context, v *view.View, run func(context.Context) error) error {
	select {
	case <-v.Synced():
		return run(ctx)
	case <-ctx.Done():
		return nil
	}
}

// workloadUser is the user that runs instances naming none: the one
// configured, else nobody for an agent running as root (so a deployed
// command never gets root by default), else the agent's own.
func workloadUser(configured string) string {
	if configured == "" && os.Getuid() == 0 {
		return "nobody"
	}
	return configured
}
