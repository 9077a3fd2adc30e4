package health

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ch := newChecker(t, registry.Check{Type: registry.CheckTCP, TCP: addr}, registry.Instance{})

	if r := run(t, ch, 2*time.Second); r.Status != P {
		t.Fatalf("open listener: %+v, want passing", r)
	}
	ln.Close()
	r := run(t, ch, 2*time.Second)
	if r.Status != C || !strings.Contains(r.Output, "refused") {
		t.Fatalf("closed listener: %+v, want critical, connection refused", r)
	}
}
