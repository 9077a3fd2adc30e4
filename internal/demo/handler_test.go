package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func testConfig() Config {
	c := DefaultConfig()
	c.Addr, c.ID, c.Node = "127.0.0.1:0", "a", "n1"
	return c
}

// get serves one request on h and returns the status, content type and body.
func get(t *testing.T, h http.Handler, target string, header ...string) (int, string, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Header().Get("Content-Type"), w.Body.String()
}

func TestRootText(t *testing.T) {
	h := newHandler(testConfig())
	for n, want := range []string{"request 1", "request 2", "request 3"} {
		code, ct, body := get(t, h, "/")
		if code != 200 || !strings.HasPrefix(ct, "text/plain") || body != "demo instance a on node n1: "+want+"\n" {
			t.Fatalf("GET / #%d: %d %q %q", n+1, code, ct, body)
		}
	}
}

func TestRootJSON(t *testing.T) {
	tests := []struct {
		name, target string
		header       []string
		json         bool
	}{
		{"query", "/?format=json", nil, true},
		{"accept", "/", []string{"Accept", "application/json"}, true},
		{"accept among others", "/", []string{"Accept", "text/html, application/json;q=0.9"}, true},
		{"wildcard is text", "/", []string{"Accept", "*/*"}, false},
		{"query wins", "/?format=text", []string{"Accept", "application/json"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler(testConfig())
			code, ct, body := get(t, h, tt.target, tt.header...)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			if !tt.json {
				if !strings.HasPrefix(ct, "text/plain") {
					t.Fatalf("content type %q, want text", ct)
				}
				return
			}
			var a Answer
			if ct != "application/json" || json.Unmarshal([]byte(body), &a) != nil {
				t.Fatalf("not JSON: %q %q", ct, body)
			}
			if want := (Answer{Instance: "a", Node: "n1", Request: 1, InFlight: 1}); a != want {
				t.Fatalf("got %+v, want %+v", a, want)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	h := newHandler(testConfig())
	for _, target := range []string{"/?format=xml", "/slow?ms=-1", "/slow?ms=abc", "/slow?ms=10001"} {
		if code, _, body := get(t, h, target); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %q, want 400", target, code, body)
		}
	}
	if code, _, _ := get(t, h, "/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", code)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", w.Code)
	}
	// None of them counted as a request.
	if _, _, body := get(t, h, "/"); !strings.Contains(body, "request 1\n") {
		t.Errorf("after bad requests: %q, want request 1", body)
	}
}

func TestFailAfter(t *testing.T) {
	tests := []struct {
		failAfter int64
		// codes of GET / then GET /healthz, by turn
		root, health []int
	}{
		{-1, []int{200, 200, 200}, []int{200, 200, 200}},
		{0, []int{500, 500, 500}, []int{503, 503, 503}},
		{2, []int{200, 200, 500}, []int{200, 503, 503}},
	}
	for _, tt := range tests {
		cfg := testConfig()
		cfg.FailAfter = tt.failAfter
		h := newHandler(cfg)
		before := http.StatusOK
		if tt.failAfter == 0 {
			before = http.StatusServiceUnavailable
		}
		if code, _, _ := get(t, h, "/healthz"); code != before {
			t.Errorf("fail-after %d: /healthz before any request: %d, want %d", tt.failAfter, code, before)
		}
		for i := range tt.root {
			code, _, body := get(t, h, "/")
			if code != tt.root[i] {
				t.Errorf("fail-after %d: GET / #%d: %d %q, want %d", tt.failAfter, i+1, code, body, tt.root[i])
			}
			if code == 500 && !strings.Contains(body, "failing after") {
				t.Errorf("fail-after %d: GET / #%d: %q does not say why", tt.failAfter, i+1, body)
			}
			if code, _, body := get(t, h, "/healthz"); code != tt.health[i] {
				t.Errorf("fail-after %d: /healthz after %d requests: %d %q, want %d", tt.failAfter, i+1, code, body, tt.health[i])
			}
		}
	}
	// Health checks do not count: a hundred of them do not reach fail-after 2.
	cfg := testConfig()
	cfg.FailAfter = 2
	h := newHandler(cfg)
	for range 100 {
		if code, _, _ := get(t, h, "/healthz"); code != 200 {
			t.Fatalf("/healthz: %d before any request", code)
		}
	}
	var a Answer
	_, _, body := get(t, h, "/?format=json")
	if json.Unmarshal([]byte(body), &a) != nil || a.Request != 1 || a.Error != "" {
		t.Fatalf("first request after health checks: %q", body)
	}
}

func TestSlow(t *testing.T) {
	h := newHandler(testConfig())
	code, _, body := get(t, h, "/slow?ms=20")
	if code != 200 || body != "demo instance a on node n1: request 1, slept 20ms\n" {
		t.Fatalf("GET /slow: %d %q", code, body)
	}
	// A client that leaves ends the sleep.
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest(http.MethodGet, "/slow?ms=10000", nil).WithContext(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("/slow went on sleeping after its client left")
	}
}

// TestCountsConcurrent checks that concurrent requests get distinct
// numbers (run with -race).
func TestCountsConcurrent(t *testing.T) {
	srv := httptest.NewServer(newHandler(testConfig()))
	defer srv.Close()
	const n = 50
	seen := make(chan int64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/?format=json")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var a Answer
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &a); err != nil {
				t.Errorf("%q: %v", b, err)
				return
			}
			seen <- a.Request
		})
	}
	wg.Wait()
	close(seen)
	got := map[int64]bool{}
	for r := range seen {
		if got[r] || r < 1 || r > n {
			t.Fatalf("request number %d repeated or out of 1..%d", r, n)
		}
		got[r] = true
	}
	if len(got) != n {
		t.Fatalf("%d distinct numbers, want %d", len(got), n)
	}
}

// FuzzHandler sends any path, query and Accept header: the handler answers
// one of its documented statuses, and JSON it says is JSON.
func FuzzHandler(f *testing.F) {
	for _, s := range [][2]string{
		{"/", ""}, {"/?format=json", ""}, {"/", "application/json;q=0.5, text/*"},
		{"/healthz", ""}, {"/slow?ms=1", "application/json"}, {"/slow?ms=1e3", ""}, {"/?format=%zz", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, target, accept string) {
		cfg := testConfig()
		cfg.MaxSlow, cfg.FailAfter = time.Millisecond, 3
		h := newHandler(cfg)
		r, err := http.NewRequest(http.MethodGet, "http://demo"+target, nil)
		if err != nil {
			return
		}
		r.Header.Set("Accept", accept)
		for range 5 {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			switch w.Code {
			case 200, 500, 503, 400, 404, 301, 307, 308:
			default:
				t.Fatalf("GET %q: status %d", target, w.Code)
			}
			if w.Header().Get("Content-Type") == "application/json" && !json.Valid(w.Body.Bytes()) {
				t.Fatalf("GET %q: invalid JSON %q", target, w.Body)
			}
		}
	})
}

// BenchmarkRoot measures the handler alone on GET /.
func BenchmarkRoot(b *testing.B) {
	h := newHandler(testConfig())
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
}
