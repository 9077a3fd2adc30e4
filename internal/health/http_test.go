package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

// httpServer serves /ok 200, /big 1 MiB, /down 503, /busy 429 and /moved
// 302 to /target.
func httpServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv, _ := httpServerCounting(t)
	return srv
}

// httpServerCounting is httpServer, also counting requests to /target.
func httpServerCounting(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var targetHits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("fine")) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.Repeat("x", 1<<20))) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/target", http.StatusFound) })
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &targetHits
}

func TestHTTP(t *testing.T) {
	srv, targetHits := httpServerCounting(t)
	inst := instanceAt(t, srv.Listener.Addr().String())
	tests := []struct {
		path       string
		wantStatus string
		wantOutput string
	}{
		{"/ok", P, "HTTP 200 OK"},
		{"/big", P, "HTTP 200 OK"},
		{"/down", C, "HTTP 503 Service Unavailable"},
		{"/busy", W, "HTTP 429 Too Many Requests"},
		{"/moved", C, "HTTP 302 Found"},
		{"/nowhere", C, "HTTP 404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			for _, value := range []string{tt.path, srv.URL + tt.path} {
				ch := newChecker(t, registry.Check{Type: registry.CheckHTTP, HTTP: value}, inst)
				r := run(t, ch, 2*time.Second)
				if r.Status != tt.wantStatus || !strings.HasPrefix(r.Output, tt.wantOutput) {
					t.Errorf("http %q: %+v, want %s with output %q", value, r, tt.wantStatus, tt.wantOutput)
				}
			}
		})
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("redirect target requested %d times; redirects must not be followed", n)
	}
}

func TestHTTPServerGone(t *testing.T) {
	srv := httpServer(t)
	ch := newChecker(t, registry.Check{Type: registry.CheckHTTP, HTTP: srv.URL + "/ok"}, registry.Instance{})
	if r := run(t, ch, 2*time.Second); r.Status != P {
		t.Fatalf("live server: %+v, want passing", r)
	}
	srv.Close()
	r := run(t, ch, 2*time.Second)
	if r.Status != C || !strings.Contains(r.Output, "refused") {
		t.Fatalf("closed server: %+v, want critical, connection refused", r)
	}
	if strings.Contains(r.Output, "Get ") {
		t.Errorf("output %q repeats the request; want the bare error", r.Output)
	}
}
