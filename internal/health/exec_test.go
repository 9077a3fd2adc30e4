package health

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

func TestExec(t *testing.T) {
	tests := []struct {
		name    string
		argv    []string
		timeout time.Duration
		want    string
		output  string // exact, or prefix when it ends in "…"
	}{
		{"exit 0", []string{"/bin/sh", "-c", "exit 0"}, 2 * time.Second, P, ""},
		{"exit 0 with output", []string{"/bin/sh", "-c", "echo '  all good  '"}, 2 * time.Second, P, "all good"},
		{"exit 1 warns", []string{"/bin/sh", "-c", "echo degraded; exit 1"}, 2 * time.Second, W, "degraded"},
		{"exit 1 no output", []string{"/bin/sh", "-c", "exit 1"}, 2 * time.Second, W, "exit status 1"},
		{"exit 3 fails", []string{"/bin/sh", "-c", "exit 3"}, 2 * time.Second, C, "exit status 3"},
		{"stderr is kept", []string{"/bin/sh", "-c", "echo oops >&2; exit 2"}, 2 * time.Second, C, "oops"},
		{"missing program", []string{"/nonexistent/check"}, 2 * time.Second, C, "fork/exec /nonexistent/check…"},
		{"sleep times out", []string{"/bin/sh", "-c", "sleep 5"}, 200 * time.Millisecond, C, "timed out…"},
		{"child of shell killed", []string{"/bin/sh", "-c", "echo started; sleep 5; echo late"}, 200 * time.Millisecond, C, "timed out…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := newChecker(t, registry.Check{Type: registry.CheckExec, Command: tt.argv}, registry.Instance{})
			start := time.Now()
			r := run(t, ch, tt.timeout)
			if elapsed := time.Since(start); elapsed > tt.timeout+time.Second {
				t.Errorf("took %s with a %s deadline", elapsed, tt.timeout)
			}
			ok := r.Output == tt.output
			if prefix, cut := strings.CutSuffix(tt.output, "…"); cut {
				ok = strings.HasPrefix(r.Output, prefix)
			}
			if r.Status != tt.want || !ok {
				t.Errorf("%+v, want %s with output %q", r, tt.want, tt.output)
			}
		})
	}
}

func TestExecOutputLimit(t *testing.T) {
	ch := newChecker(t, registry.Check{Type: registry.CheckExec, Command: []string{"/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"}}, registry.Instance{})
	r := run(t, ch, 5*time.Second)
	if r.Status != P || len(r.Output) != maxOutput {
		t.Errorf("status %s, output %d bytes; want passing with %d", r.Status, len(r.Output), maxOutput)
	}
}

// TestExecGate: a node without --enable-exec-checks gets no exec checker,
// only an error naming the node and the fix, whatever the check says; the
// same check on a node that allows exec runs.
func TestExecGate(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	check := registry.Check{Type: registry.CheckExec, Command: []string{"/bin/sh", "-c", "touch " + marker}}

	for _, c := range []registry.Check{check, {Type: registry.CheckExec}} {
		ch, err := New(c, registry.Instance{}, Node{Name: "n2"})
		if ch != nil || !errors.Is(err, ErrExecDisabled) {
			t.Fatalf("%v on a node without exec: got checker %v, err %v; want none and ErrExecDisabled", c.Command, ch, err)
		}
		if want := "exec checks are disabled on node n2: start it with --enable-exec-checks"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after a refused exec check: %v, want it absent", err)
	}

	ch, err := New(check, registry.Instance{}, Node{Name: "n1", AllowExec: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, ch, 5*time.Second); r.Status != P {
		t.Fatalf("exec check on a node that allows it: %+v, want passing", r)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("marker after an allowed exec check: %v", err)
	}
}
