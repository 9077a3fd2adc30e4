// Package dns is tandem's DNS server. Every node runs one; it answers from
// the node's local view (a Catalog), so it costs no store round trip and
// keeps answering in a minority partition.
//
// Names under the domain (default "tandem."), matched case-insensitively:
//
//	<svc>.service.<domain>          A/AAAA of the instances that get traffic, shuffled
//	<tag>.<svc>.service.<domain>    the same, only instances with the tag
//	<svc>.service.<domain> SRV      one record per instance (also _<svc>._tcp.service.<domain>)
//	<node>.node.<domain>            the node's advertise address, dead or alive
//	<hex>.addr.<domain>             the address in hex: 8 digits IPv4, 32 IPv6
//	lb.<domain>                     the addresses of all live nodes, shuffled
//
// The instances that get traffic are the passing ones or, when none passes,
// the warning ones; critical instances never do. A service with none gets
// NOERROR and no records. An instance registered with a host name instead
// of an IP has no A/AAAA record here; its SRV record targets the host name.
// Unknown names in the domain get NXDOMAIN, and names outside it REFUSED;
// every negative answer carries the domain's SOA.
//
// A node's name answers whether the node is alive or not: it names the
// machine, which is useful for reaching a dead node, and liveness is what
// lb.<domain> and the service names filter on.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/view"
)

// Catalog is what the server reads; the agent's local view implements it.
// Its methods are called from many goroutines at once, once or twice per
// query, so they must be cheap; the server does not modify what they
// return.
type Catalog interface {
	// Instances returns every instance of the service with its effective
	// health, or nil when the service is unknown.
	Instances(service string) []registry.InstanceHealth
	// Nodes returns every known node, alive or not.
	Nodes() []view.Node
}

// Server answers DNS queries over UDP and TCP from a Catalog.
type Server struct {
	cfg    Config
	domain string // lowercase, fully qualified
	ttl    uint32
	cat    Catalog
	log    *slog.Logger
	now    func() time.Time // SOA serials

	running atomic.Bool
	addr    atomic.Pointer[string]
	ready   chan struct{}
}

// New returns a server for cfg that reads cat. It does not listen until Run.
func New(cfg Config, cat Catalog, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cat == nil {
		return nil, errors.New("dns: no catalog")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	return &Server{
		cfg:    cfg,
		domain: cfg.Domain,
		ttl:    cfg.TTL,
		cat:    cat,
		log:    log,
		now:    time.Now,
		ready:  make(chan struct{}),
	}, nil
}

// Addr returns the address the server listens on, UDP and TCP alike, once
// Ready is closed; "" before.
func (s *Server) Addr() string {
	if p := s.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Ready is closed once the server listens on UDP and TCP.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves UDP and TCP on the configured address until ctx ends, then
// returns nil. It returns an error at once if it cannot listen, and if
// serving fails. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("dns: Run called twice")
	}
	pc, ln, err := listen(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	h := mdns.HandlerFunc(s.serveDNS)
	udp := &mdns.Server{PacketConn: pc, Handler: h, UDPSize: advertisedUDPSize, NotifyStartedFunc: notify}
	tcp := &mdns.Server{Listener: ln, Handler: h, NotifyStartedFunc: notify}
	errc := make(chan error, 2)
	go func() { errc <- wrap("serve udp", udp.ActivateAndServe()) }()
	go func() { errc <- wrap("serve tcp", tcp.ActivateAndServe()) }()
	for n := 0; n < 2; {
		select {
		case <-started:
			n++
		case err := <-errc:
			// Closing the sockets ends the other server, started or not.
			_ = pc.Close()
			_ = ln.Close()
			<-errc
			return fmt.Errorf("dns: %w", err)
		}
	}
	addr := pc.LocalAddr().String()
	s.addr.Store(&addr)
	close(s.ready)
	s.log.Info("dns: listening", "addr", addr, "domain", s.domain)

	running := 2
	select {
	case <-ctx.Done():
	case err = <-errc:
		running--
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = udp.ShutdownContext(sctx)
	_ = tcp.ShutdownContext(sctx)
	_ = pc.Close()
	_ = ln.Close()
	for ; running > 0; running-- {
		<-errc
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

func wrap(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%s: stopped", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// listen binds UDP and TCP on the same address. With port 0 it binds UDP on
// a free port first, then TCP on that port, and tries again with another
// port when TCP's is taken.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if port != "0" {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			_ = pc.Close()
			return nil, nil, fmt.Errorf("listen tcp: %w", err)
		}
		return pc, ln, nil
	}
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listen tcp on the udp port: %w", lastErr)
}

// serveDNS is the handler of both servers.
func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	defer func() {
		// handle is fuzzed not to panic; should it still, fail this query
		// rather than the agent.
		if p := recover(); p != nil {
			s.log.Error("dns: panic answering a query", "panic", p, "query", req.String())
			resp := new(mdns.Msg)
			resp.SetRcode(req, mdns.RcodeServerFailure)
			_ = w.WriteMsg(resp)
		}
	}()
	resp := s.handle(req, tcp)
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns: write answer failed", "remote", w.RemoteAddr().String(), "err", err)
	}
}
