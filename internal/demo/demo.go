// Package demo is the small HTTP service that `tandem demo` runs: it
// answers with its instance id, its node and a request counter, so that
// curl through tandem's proxies shows which instance answered, and it can
// be told to fail, to show health checks and rolling-update rollback.
//
// [New] binds the listener (port 0 picks a free one, [Server.Addr] tells
// which); [Server.Run] serves until its context ends, then stops accepting,
// lets the requests in flight finish within [Config.ShutdownTimeout], and
// returns. The handler is safe for concurrent requests: its counters are
// atomic.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config is what one demo instance needs.
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	Addr string
	// ID names this instance in every answer.
	ID string
	// Node names the node this instance runs on, in every answer.
	Node string
	// FailAfter makes the instance fail once it has counted this many
	// requests to / and /slow (health checks are not counted): from then
	// on those answer 500 and /healthz answers 503, for good. 0 fails from
	// the start (a version that never becomes healthy); negative never
	// fails.
	FailAfter int64
	// MaxSlow bounds the sleep /slow?ms=N may ask for.
	MaxSlow time.Duration
	// ShutdownTimeout bounds how long Run waits, once its context ends,
	// for the requests in flight to finish; the ones still running then
	// are cut off.
	ShutdownTimeout time.Duration
}

// DefaultConfig is a demo on 127.0.0.1:8080 that never fails, with /slow
// bounded by 10 s and 10 s to drain on shutdown. ID and Node are left for
// the caller.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8080",
		FailAfter:       -1,
		MaxSlow:         10 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate reports the first field that cannot be used.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("demo: no address to listen on: give host:port (port 0 picks a free one)")
	case c.ID == "":
		return errors.New("demo: no instance id: give one")
	case c.Node == "":
		return errors.New("demo: no node name: give one")
	case c.MaxSlow <= 0:
		return fmt.Errorf("demo: the /slow bound is %s: give a positive duration", c.MaxSlow)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("demo: the shutdown timeout is %s: give a positive duration", c.ShutdownTimeout)
	}
	return nil
}

// Server is one demo instance with its listener bound.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener
	h   *handler
}

// New checks cfg and binds its address; Run serves on it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("demo: %w (is another process on that port? choose another address)", err)
	}
	return &Server{cfg: cfg, log: log, ln: ln, h: newHandler(cfg)}, nil
}

// Addr is the address the server listens on, with the port chosen when
// Config.Addr asked for port 0.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends, then stops accepting connections, waits up
// to Config.ShutdownTimeout for the requests in flight to finish and
// returns nil; it returns an error if it had to cut requests off, or if
// serving failed. Call it once.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo: serve on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("demo shutting down", "addr", s.Addr().String(), "in_flight", s.h.inFlight.Load(), "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		left := s.h.inFlight.Load()
		_ = srv.Close()
		err = fmt.Errorf("demo: %d requests still in flight after %s were cut off (allow more with a longer shutdown timeout)", left, s.cfg.ShutdownTimeout)
	}
	<-errc // http.ErrServerClosed
	s.log.Info("demo stopped", "addr", s.Addr().String(), "requests", s.h.requests.Load())
	return err
}
