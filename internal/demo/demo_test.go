package demo

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testLogger sends a test's logs to t.Log, shown only on failure.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestValidate(t *testing.T) {
	for _, mod := range []func(*Config){
		func(c *Config) { c.Addr = "" },
		func(c *Config) { c.ID = "" },
		func(c *Config) { c.Node = "" },
		func(c *Config) { c.MaxSlow = 0 },
		func(c *Config) { c.ShutdownTimeout = -time.Second },
	} {
		c := testConfig()
		mod(&c)
		if _, err := New(c, testLogger(t)); err == nil {
			t.Errorf("New(%+v) accepted it", c)
		}
	}
}

// TestShutdownCutsOff checks that a request still running after the
// shutdown timeout is cut off, that Run says so, and that nothing is left
// running.
func TestShutdownCutsOff(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig()
	cfg.ShutdownTimeout = 50 * time.Millisecond
	s, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	base := "http://" + s.Addr().String()
	slowErr := make(chan error, 1)
	go func() {
		resp, err := cl.Get(base + "/slow?ms=10000")
		if err == nil {
			resp.Body.Close()
		}
		slowErr <- err
	}()
	// Wait until the slow request is in flight: / then counts two.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cl.Get(base + "/?format=json")
		if err != nil {
			t.Fatal(err)
		}
		var a Answer
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if a.InFlight >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow request never got in flight")
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "1 requests still in flight") {
			t.Fatalf("Run: %v, want an error counting the request cut off", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the shutdown timeout")
	}
	if err := <-slowErr; err == nil {
		t.Fatal("the slow request was answered, want it cut off")
	}
	t.Logf("Run returned %s after its context ended (timeout 50ms)", time.Since(start).Round(time.Millisecond))
}
