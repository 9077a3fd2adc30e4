package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/catalog"
	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/view"
	"github.com/tandemhq/tandem/internal/wire"
)

// Limits on user input.
const (
	MaxKeyBytes   = 1024
	MaxValueBytes = 1 << 20
	MaxTimeout    = 60 * time.Second
)

// Server is the HTTP API of one node.
type Server struct {
	st             *store.Store
	cm             *cluster.Manager
	log            *slog.Logger
	defaultTimeout time.Duration
	attemptTimeout time.Duration
	quorumWait     time.Duration
	view           *view.View
	catalog        *catalog.Catalog
	sec            *Security
	// OnLeave is called after this node has left the cluster through the API;
	// the agent stops itself.
	OnLeave func()
	mux     *http.ServeMux
	// idemLease is the lease idempotency records are written on.
	idemLease idemLease
}

// Options tune the API.
type Options struct {
	// RequestTimeout bounds a request that gives no timeout= of its own.
	RequestTimeout time.Duration
	// AttemptTimeout bounds one attempt of a request that is safe to retry
	// (about two election timeouts: long enough for a healthy store, short
	// enough to move on from a leader that died).
	AttemptTimeout time.Duration
	// QuorumWait bounds each store read of GET /v1/status and /v1/members
	// (default 500 ms, about an election timeout): a quorum read that
	// takes longer is answered from the node's own copy instead, marked
	// stale, rather than waiting out the request timeout.
	QuorumWait time.Duration
	// Metrics is gathered for GET /metrics (Prometheus).
	Metrics prometheus.Gatherer
	// View and Catalog serve the service catalog.
	View    *view.View
	Catalog *catalog.Catalog
	// Security, if set, makes every request prove who sent it (a token or
	// a node certificate) and checks its role; nil serves an open API
	// (--insecure).
	Security *Security
}

// New returns the API server for a node.
func New(st *store.Store, cm *cluster.Manager, opts Options, log *slog.Logger) *Server {
	if opts.QuorumWait <= 0 {
		opts.QuorumWait = 500 * time.Millisecond
	}
	s := &Server{st: st, cm: cm, log: log, defaultTimeout: opts.RequestTimeout, attemptTimeout: opts.AttemptTimeout,
		quorumWait: opts.QuorumWait, view: opts.View, catalog: opts.Catalog, sec: opts.Security, mux: http.NewServeMux()}
	s.handle("GET /v1/health", auth.PermRead, s.health)
	s.handle("GET /v1/kv/{key...}", auth.PermRead, s.kvGet)
	s.handle("PUT /v1/kv/{key...}", auth.PermWrite, s.kvPut)
	s.handle("DELETE /v1/kv/{key...}", auth.PermWrite, s.kvDelete)
	s.handle("GET /v1/watch/{key...}", auth.PermRead, s.kvWatch)
	s.handle("GET /v1/members", auth.PermRead, s.members)
	s.handle("GET /v1/status", auth.PermRead, s.status)
	s.handle("GET /v1/events", auth.PermRead, s.events)
	s.handle("POST /v1/cluster/join", auth.PermCluster, s.join)
	s.handle("POST /v1/agent/leave", auth.PermCluster, s.leave)
	s.handle("DELETE /v1/nodes/{name}", auth.PermCluster, s.removeNode)
	s.routeServices()
	s.routeSecurity()
	// Profiles for operators and benchmarks (pprof's own handlers).
	s.handle("GET /debug/pprof/", auth.PermDebug, pprof.Index)
	s.handle("GET /debug/pprof/profile", auth.PermDebug, pprof.Profile)
	s.handle("GET /debug/pprof/trace", auth.PermDebug, pprof.Trace)
	if opts.Metrics != nil {
		s.handle("GET /metrics", auth.PermRead, promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{}).ServeHTTP)
	}
	s.handle("/", auth.PermRead, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s; see docs/API.md", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Run serves on ln until ctx ends.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	// Connection-level errors (a TLS handshake cut short by another node's
	// liveness probe, which only connects) are for debugging only.
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return fmt.Errorf("api server: %w", err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // compact: the CLI and jq pretty-print
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, wire.Error{Error: msg})
}

// storeError maps a store failure to a response. For want of a quorum it
// probes the voters, within the time requestContext kept back, to name the
// cause.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case cluster.IsConflict(err):
		writeError(w, http.StatusConflict, err.Error())
	case store.IsUnavailable(err) && errors.Is(err, store.ErrLeaderChanged):
		// The cause is known: answer at once, without probing the voters
		// (one of them is likely the leader that just died).
		msg := s.st.Unavailable(err).Error()
		if r.Method != http.MethodGet {
			msg += unknownOutcome
		}
		writeError(w, http.StatusServiceUnavailable, msg)
	case store.IsUnavailable(err):
		budget := time.Duration(0)
		if d, ok := r.Context().Value(budgetKey{}).(time.Duration); ok {
			budget = d
		}
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		msg := s.st.Diagnose(ctx, err, budget).Error()
		if r.Method != http.MethodGet {
			msg += unknownOutcome
		}
		writeError(w, http.StatusServiceUnavailable, msg)
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "request cancelled by the client")
	default:
		s.log.Warn("store request failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// unknownOutcome ends the 503 of a write.
const unknownOutcome = "; the write was not confirmed: it may still be applied if it reached the leader before the failure, so read before retrying a compare-and-set"

type budgetKey struct{}

// requestContext applies timeout= (default: the agent's request timeout),
// keeping back store.ProbeBudget of it to diagnose a failure; the request's
// context carries that budget for storeError. A bad timeout is answered 400
// and ok is false.
func (s *Server) requestContext(w http.ResponseWriter, r *http.Request) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	p := params{r: r}
	d := p.timeout(s.defaultTimeout)
	if !p.check(w) {
		return nil, nil, false
	}
	budget := store.ProbeBudget(d)
	*r = *r.WithContext(context.WithValue(r.Context(), budgetKey{}, budget))
	ctx, cancel = context.WithTimeout(r.Context(), d-budget)
	return ctx, cancel, true
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	self := s.cm.Self()
	writeJSON(w, http.StatusOK, map[string]any{"node": self.Name, "role": self.Role, "ok": true})
}
