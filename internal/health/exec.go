package health

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

// ErrExecDisabled is returned by New for an exec check on a node not
// started with --enable-exec-checks.
var ErrExecDisabled = errors.New("exec checks are disabled")

// newExec builds an exec checker for argv, if node allows exec checks.
//
// This is the gate of --enable-exec-checks, and the only place an exec
// checker is built: every check a node runs, whether its own registration,
// inherited from the service's spec, or written straight into the store,
// reaches here on the node that would run it, with that node's own flag.
// The API's validation (registry.Rules) only refuses early what this would
// refuse anyway.
func newExec(argv []string, node Node) (Checker, error) {
	if !node.AllowExec {
		return nil, fmt.Errorf("%w on node %s: start it with --enable-exec-checks", ErrExecDisabled, node.Name)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("exec check: command is empty: give the program and its arguments")
	}
	return &execChecker{argv: append([]string(nil), argv...)}, nil
}

// execChecker runs a command: exit 0 passes, 1 warns, anything else (a
// timeout included) fails.
type execChecker struct {
	argv []string
}

func (e *execChecker) Check(ctx context.Context) Result {
	cmd := exec.CommandContext(ctx, e.argv[0], e.argv[1:]...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	killGroupOnCancel(cmd)
	// Should a descendant escape the kill and hold the output pipe, stop
	// waiting for it shortly after the deadline or the command's exit.
	cmd.WaitDelay = 100 * time.Millisecond

	err := cmd.Run()
	text := strings.TrimSpace(string(out.buf))
	ps := cmd.ProcessState
	switch {
	case ps != nil && ps.Exited():
		if text == "" && ps.ExitCode() != 0 {
			text = ps.String()
		}
		switch ps.ExitCode() {
		case 0:
			return Result{Status: registry.Passing, Output: text}
		case 1:
			return Result{Status: registry.Warning, Output: text}
		default:
			return Result{Status: registry.Critical, Output: text}
		}
	case ctx.Err() != nil:
		r := failure(ctx, ctx.Err())
		if text != "" {
			r.Output += "\n" + text
		}
		return r
	default:
		if text == "" {
			text = err.Error()
		}
		return Result{Status: registry.Critical, Output: text}
	}
}

// limitedBuffer keeps the first maxOutput bytes written to it and drops
// the rest, without failing the writer. os/exec calls Write from one
// goroutine at a time when stdout and stderr are the same writer.
type limitedBuffer struct {
	buf []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
