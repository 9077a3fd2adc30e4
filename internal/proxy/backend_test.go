package proxy

import (
	"hash/fnv"
	"sync"
	"testing"
)

func TestNewBackend(t *testing.T) {
	tests := []struct {
		weight, want int
	}{
		{0, 1},
		{-3, 1},
		{1, 1},
		{7, 7},
	}
	for _, tt := range tests {
		b := NewBackend("web-1", "web", "127.0.0.1:8080", "n1", tt.weight)
		if b.Weight != tt.want {
			t.Errorf("NewBackend(weight %d).Weight = %d, want %d", tt.weight, b.Weight, tt.want)
		}
		if b.ID != "web-1" || b.Service != "web" || b.Addr != "127.0.0.1:8080" || b.Node != "n1" {
			t.Errorf("NewBackend fields = %+v", b)
		}
		if b.Inflight() != 0 || b.Ejected(t0) {
			t.Errorf("new backend: inflight %d, ejected %v", b.Inflight(), b.Ejected(t0))
		}
	}
}

func TestBackendInflight(t *testing.T) {
	b := NewBackend("a", "svc", "127.0.0.1:1", "n1", 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Begin()
			}
			for range 990 {
				b.End()
			}
		})
	}
	wg.Wait()
	if got := b.Inflight(); got != 80 {
		t.Errorf("Inflight() = %d, want 80", got)
	}
}

func TestFNV1aMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "a", "web-1", "10.0.0.7", "a much longer key with spaces and ünïcode"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := fnv1a(s), h.Sum64(); got != want {
			t.Errorf("fnv1a(%q) = %x, want %x", s, got, want)
		}
	}
}
