package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/tandemhq/tandem/internal/registry"
)

// maxOutput bounds what a check reads from a response or a command.
const maxOutput = 4 << 10

// Result is the outcome of one run of a check.
type Result struct {
	// Status is registry.Passing, registry.Warning or registry.Critical.
	Status string
	// Output says briefly why: a status line, an error, a command's output.
	Output string
}

// Checker runs one health check.
//
// Check returns by the deadline of ctx, which the caller sets to the
// check's Timeout; a run cut short by ctx is critical. Check is safe for
// concurrent use. Checkers that hold resources (connections) also
// implement io.Closer; the owner closes them when it stops the check.
type Checker interface {
	Check(ctx context.Context) Result
}

// ErrTTL is returned by New for ttl checks, which are driven by renewals
// rather than run.
var ErrTTL = errors.New("ttl checks are not run but kept alive by renewals: the runner handles them")

// Node is what the node that runs a check allows. It comes from that node's
// own flags, never from the store: a check spec is data anyone with write
// access to the store can supply, so it cannot widen what a node runs.
type Node struct {
	// Name is the node's name, quoted in refusals.
	Name string
	// AllowExec is true only on a node started with --enable-exec-checks.
	AllowExec bool
}

// New builds the checker of check c of instance inst, to run on node.
// Targets default to the instance's address and port; an http value
// starting with "/" is a path on that address. An exec check on a node
// that does not allow them is refused with ErrExecDisabled.
func New(c registry.Check, inst registry.Instance, node Node) (Checker, error) {
	hostPort := net.JoinHostPort(inst.Address, strconv.Itoa(inst.Port))
	switch c.Type {
	case registry.CheckHTTP:
		url := c.HTTP
		if strings.HasPrefix(url, "/") {
			url = "http://" + hostPort + url
		}
		return newHTTP(url)
	case registry.CheckTCP:
		addr := c.TCP
		if addr == "" {
			addr = hostPort
		}
		return &tcpChecker{addr: addr}, nil
	case registry.CheckGRPC:
		target, service, _ := strings.Cut(c.GRPC, "/")
		if target == "" {
			target = hostPort
		}
		return &grpcChecker{target: target, service: service}, nil
	case registry.CheckExec:
		return newExec(c.Command, node)
	case registry.CheckTTL:
		return nil, ErrTTL
	default:
		return nil, fmt.Errorf("unknown check type %q: use http, tcp, grpc or exec", c.Type)
	}
}

// failure is a critical result explaining err; a run cut short by ctx says
// so rather than repeating a wrapped low-level error.
func failure(ctx context.Context, err error) Result {
	if ctx.Err() != nil {
		return Result{Status: registry.Critical, Output: "timed out: " + context.Cause(ctx).Error()}
	}
	return Result{Status: registry.Critical, Output: err.Error()}
}

// Aggregate is the worst of an instance's check statuses; an instance with
// no checks is passing. An unrecognised status counts as critical.
func Aggregate(statuses []string) string {
	worst := registry.Passing
	for _, s := range statuses {
		switch s {
		case registry.Passing:
		case registry.Warning:
			if worst == registry.Passing {
				worst = registry.Warning
			}
		default:
			return registry.Critical
		}
	}
	return worst
}
