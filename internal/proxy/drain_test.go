package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

// TestRoutingFollowsADroppedInstance checks what the drain of an instance
// relies on: Routing reports the instance routed while the table holds it,
// and once it leaves the table, still counts the request sent before,
// until that request ends.
func TestRoutingFollowsADroppedInstance(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	defer slow.Close()
	p, cat := startProxySpec(t, registry.Service{}, backendAddr(slow))

	if routed, n := p.Routing("svc", "svc-1"); !routed || n != 0 {
		t.Fatalf("idle instance in the table: Routing = %v, %d; want true, 0", routed, n)
	}
	if routed, n := p.Routing("svc", "other"); routed || n != 0 {
		t.Fatalf("unknown instance: Routing = %v, %d; want false, 0", routed, n)
	}

	answer := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+p.Addr()+"/", nil)
		req.Host = "svc"
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != 200 || string(b) != "done") {
				err = &unexpected{resp.StatusCode, string(b)}
			}
		}
		answer <- err
	}()
	<-entered
	if routed, n := p.Routing("svc", "svc-1"); !routed || n != 1 {
		t.Fatalf("one request in flight: Routing = %v, %d; want true, 1", routed, n)
	}

	cat.set("svc", nil) // the instance leaves the view
	pollUntil(t, func() bool { routed, _ := p.Routing("svc", "svc-1"); return !routed })
	if _, n := p.Routing("svc", "svc-1"); n != 1 {
		t.Fatalf("dropped with a request in flight: inflight = %d, want 1", n)
	}
	close(release)
	if err := <-answer; err != nil {
		t.Fatalf("the request in flight when its instance left failed: %v", err)
	}
	pollUntil(t, func() bool { _, n := p.Routing("svc", "svc-1"); return n == 0 })
	if len(p.table.gone.bs) != 0 {
		t.Fatalf("a drained backend is still kept: %d", len(p.table.gone.bs))
	}
}

type unexpected struct {
	code int
	body string
}

func (u *unexpected) Error() string { return http.StatusText(u.code) + ": " + u.body }

// pollUntil polls cond for up to 5 s.
func pollUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
