package robustness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTrafficMovesBetweenProxies checks the workload's client rules with
// fake proxies: a refused connection moves any request on, a broken one
// moves only a GET on, and an answer is final.
func TestTrafficMovesBetweenProxies(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{} // request id -> times the good proxy saw it
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get(TestIDHeader)]++
		mu.Unlock()
		io.WriteString(w, "web-1\n")
	}))
	defer good.Close()
	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	}))
	defer reset.Close()
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no passing instance", http.StatusServiceUnavailable)
	}))
	defer unavailable.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	tests := []struct {
		name    string
		proxies []string
		post    bool
		status  int
		moved   bool // the client moved on to another proxy (or tried again)
		sent    bool
		reached int // times the good proxy saw the request
	}{
		{"refused GET moves on", []string{refused, addr(good)}, false, 200, true, true, 1},
		{"refused POST moves on", []string{refused, addr(good)}, true, 200, true, true, 1},
		{"broken GET moves on", []string{addr(reset), addr(good)}, false, 200, true, true, 1},
		{"broken POST is not sent again", []string{addr(reset), addr(good)}, true, 0, false, true, 0},
		{"an answer is final", []string{addr(unavailable), addr(good)}, false, 503, false, true, 0},
		{"nothing reached", []string{refused}, true, 0, true, false, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := Traffic{Proxies: tt.proxies, Service: "web", Deadline: 300 * time.Millisecond}.withDefaults()
			hc := &http.Client{Transport: &http.Transport{}}
			defer hc.CloseIdleConnections()
			id := fmt.Sprintf("t%d", i)
			r := tr.send(hc, time.Now(), 0, tt.post, id)
			mu.Lock()
			reached := got[id]
			mu.Unlock()
			if r.Status != tt.status || (r.Failovers > 0) != tt.moved || r.Sent != tt.sent || reached != tt.reached {
				t.Errorf("got %s (sent %v), the good proxy saw it %d times; want status %d, moved on %v, sent %v, seen %d times",
					r, r.Sent, reached, tt.status, tt.moved, tt.sent, tt.reached)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := time.Second
	get := func(call, ret time.Duration, status int) Request {
		return Request{Call: call, Return: ret, Status: status}
	}
	reqs := []Request{
		get(0, s/10, 200),
		{Post: true, ID: "p1", Call: s / 2, Return: s, Status: 200},
		get(s, 2*s, 200),
		get(2*s, 2*s+s/10, 502), // in the fault's window
		get(3*s, 3*s+s/10, 200), // recovered
		get(4*s, 4*s+s/10, 0),   // after the heal: no proxy answered
		get(4*s+s/2, 5*s, 200),  // recovered
		{Post: true, ID: "p2", Call: 5 * s, Return: 5*s + s/10, Status: 504},
	}
	events := []Event{{At: 2 * s, What: "fault"}, {At: 4 * s, What: "heal"}}
	a := Summarize(reqs, events, 6*s)
	if a.Gets != 6 || a.GetsOK != 4 || a.Posts != 2 || a.PostsOK != 1 {
		t.Errorf("totals %+v", a)
	}
	want := []struct{ gets, ok int }{{2, 2}, {2, 1}, {2, 1}}
	for i, w := range want {
		if p := a.Phases[i]; p.Gets != w.gets || p.GetsOK != w.ok {
			t.Errorf("phase %d %q: %d/%d GETs, want %d/%d", i, p.Name, p.GetsOK, p.Gets, w.ok, w.gets)
		}
	}
	if len(a.Recovery) != 2 || a.Recovery[0] != s+s/10 || a.Recovery[1] != s {
		t.Errorf("recovery %v, want [1.1s 1s]", a.Recovery)
	}
	if a.Failed["GET 502"] != 1 || a.Failed["GET no answer:"] != 1 || a.Failed["POST 504"] != 1 {
		t.Errorf("causes %v", a.Failed)
	}
	posts := CheckPosts(reqs, map[string]int{"p1": 2, "p2": 1})
	if len(posts.Twice) != 1 || posts.Twice[0].ID != "p1" || len(posts.Lost) != 0 || len(posts.FailedDelivered) != 1 {
		t.Errorf("posts %+v", posts)
	}
	if posts := CheckPosts(reqs, map[string]int{}); len(posts.Lost) != 1 || posts.Lost[0].ID != "p1" {
		t.Errorf("an acknowledged POST in no log: got %+v", posts)
	}
}

// TestServeBackendRecordsPosts checks that a backend records each POST's id
// before it answers, and Deliveries counts them.
func TestServeBackendRecordsPosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "web-1.posts")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeBackend(ctx, ln, "web-1", log) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	send := func(method, id string) string {
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", strings.NewReader("x"))
		req.Header.Set(TestIDHeader, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	for _, s := range []struct{ method, id string }{{"POST", "a"}, {"GET", "b"}, {"POST", "a"}, {"POST", "c"}} {
		if got := send(s.method, s.id); got != "200 web-1" {
			t.Fatalf("%s %s: got %q, want 200 web-1", s.method, s.id, got)
		}
	}
	n, err := Deliveries([]string{log})
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 2 || n["a"] != 2 || n["c"] != 1 {
		t.Errorf("deliveries %v, want a twice and c once", n)
	}
}
