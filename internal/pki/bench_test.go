package pki

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandshake is one mutual-TLS connection between two nodes over
// loopback TCP (connect, handshake, one byte back, close): full, and resumed
// from the ClientConfig's session cache. cpu-ns/op is the CPU time of both
// ends.
func BenchmarkHandshake(b *testing.B) {
	ca := testCA(b)
	srv := NewKeeper(nodeMaterial(b, ca, "server", nil))
	cli := NewKeeper(nodeMaterial(b, ca, "client", nil))
	addr, hs := serve(b, srv.ServerConfig())
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case h := <-hs:
				if h.err != nil {
					b.Error(h.err)
				}
			case <-done:
				return
			}
		}
	}()
	run := func(b *testing.B, resume bool) {
		cfg := cli.ClientConfig("127.0.0.1")
		if !resume {
			cfg.ClientSessionCache = nil
		}
		if _, err := dial(addr, cfg); err != nil {
			b.Fatal(err)
		}
		start := cpuTime(b)
		for b.Loop() {
			cs, err := dial(addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if cs.DidResume != resume {
				b.Fatalf("resumed %v, want %v", cs.DidResume, resume)
			}
		}
		// Both ends run in this process; on a shared machine CPU time is
		// steadier than wall time.
		b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
	}
	b.Run("full", func(b *testing.B) { run(b, false) })
	b.Run("resumed", func(b *testing.B) { run(b, true) })
}
