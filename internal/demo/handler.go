package demo

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Answer is the JSON form of what GET / and GET /slow answer (asked for
// with Accept: application/json or ?format=json).
type Answer struct {
	Instance string `json:"instance"`
	Node     string `json:"node"`
	// Request is this request's number on this instance, from 1.
	Request int64 `json:"request"`
	// InFlight counts the requests this instance is serving, this one
	// included.
	InFlight int64 `json:"in_flight"`
	// SleptMS is how long /slow slept.
	SleptMS int64 `json:"slept_ms,omitempty"`
	// Error says why the instance is failing (--fail-after).
	Error string `json:"error,omitempty"`
}

// handler serves one instance's endpoints; requests may run concurrently.
type handler struct {
	cfg      Config
	mux      *http.ServeMux
	requests atomic.Int64 // requests to / and /slow so far
	inFlight atomic.Int64 // requests being served, of every path
}

func newHandler(cfg Config) *handler {
	h := &handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.root)
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /slow", h.slow)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	h.mux.ServeHTTP(w, r)
}

// failing reports whether --fail-after has been reached after n requests.
func (h *handler) failing(n int64) bool {
	return h.cfg.FailAfter >= 0 && n >= h.cfg.FailAfter
}

func (h *handler) failure() string {
	return fmt.Sprintf("failing after %d requests (--fail-after %d)", h.cfg.FailAfter, h.cfg.FailAfter)
}

func (h *handler) root(w http.ResponseWriter, r *http.Request) {
	asJSON, err := wantJSON(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.answer(w, asJSON, h.requests.Add(1), 0)
}

// slow sleeps ?ms=N milliseconds (default 1000, or MaxSlow if less; at most
// Config.MaxSlow), then answers as / does; it gives up if the client goes
// away.
func (h *handler) slow(w http.ResponseWriter, r *http.Request) {
	asJSON, err := wantJSON(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d := min(time.Second, h.cfg.MaxSlow)
	if v := r.URL.Query().Get("ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 || ms > h.cfg.MaxSlow.Milliseconds() {
			http.Error(w, fmt.Sprintf("ms=%q: want a whole number of milliseconds from 0 to %d", v, h.cfg.MaxSlow.Milliseconds()), http.StatusBadRequest)
			return
		}
		d = time.Duration(ms) * time.Millisecond
	}
	n := h.requests.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // the client left, or the server cut the connection off
	}
	h.answer(w, asJSON, n, d)
}

// answer writes request n's answer: 200, or 500 once failing.
func (h *handler) answer(w http.ResponseWriter, asJSON bool, n int64, slept time.Duration) {
	a := Answer{Instance: h.cfg.ID, Node: h.cfg.Node, Request: n, InFlight: h.inFlight.Load(), SleptMS: slept.Milliseconds()}
	code := http.StatusOK
	if h.failing(n - 1) {
		code, a.Error = http.StatusInternalServerError, h.failure()
	}
	if asJSON {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(a)
		return
	}
	line := fmt.Sprintf("demo instance %s on node %s: request %d", a.Instance, a.Node, a.Request)
	if slept > 0 {
		line += fmt.Sprintf(", slept %s", slept)
	}
	if a.Error != "" {
		line += ": " + a.Error
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, line)
}

// healthz answers 200 "ok", or 503 once the instance is failing.
func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.failing(h.requests.Load()) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, h.failure())
		return
	}
	fmt.Fprintln(w, "ok")
}

// wantJSON reads ?format=json|text, else looks for application/json in
// the Accept header.
func wantJSON(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "json":
		return true, nil
	case "text":
		return false, nil
	case "":
	default:
		return false, fmt.Errorf("format=%q: want json or text", f)
	}
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
				return true, nil
			}
		}
	}
	return false, nil
}
