package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/config"
)

// On-node-loss policies: what the scheduler does with an instance whose node
// stopped renewing its lease.
const (
	// Overlap places a replacement at once. A node that is only cut off
	// may run its copy until it sees that it lost its allocation, so two
	// copies can run for a while. The default; right for stateless services.
	Overlap = "overlap"
	// AtMostOne waits until the lost node has surely stopped its copy (its
	// last lease renewal + the lease TTL + a margin) before placing a
	// replacement, so two copies never run at once.
	AtMostOne = "at_most_one"
)

// Defaults that Normalize fills in.
const (
	DefaultSpread       = "node"
	DefaultRestartDelay = 500 * time.Millisecond
	DefaultRestartMax   = 30 * time.Second
	DefaultMaxParallel  = 1
	DefaultMinHealthy   = 2 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultDrainTimeout = 30 * time.Second
)

// MaxCount is the most instances one service may run.
const MaxCount = 10000

const (
	maxPorts          = 16      // named ports of one service
	maxResource       = 1 << 30 // millicpu or MB of one instance: far past any machine
	maxConstraintLen  = 256
	reservedEnvPrefix = "TANDEM_"
	reservedEnvPort   = "PORT"
)

// Workload is the part of a service spec that tells tandem how to run the
// service's instances and where to place them. It is embedded in the
// service spec (one YAML file, one API body), so its JSON names are the
// spec's keys. A service whose Workload is zero is not run by tandem: its
// instances register themselves.
type Workload struct {
	// Run is the process each instance runs.
	Run RunSpec `json:"run,omitzero"`
	// Count is how many instances to run (0 runs none: a stopped service).
	Count int `json:"count,omitempty"`
	// Ports are named ports: each instance gets a free port per name from
	// its node's range, passed to the process as PORT (the first one) and
	// TANDEM_PORT_<NAME> (upper case, dashes as underscores).
	Ports []PortSpec `json:"ports,omitempty"`
	// Resources each instance reserves on its node; placement never puts
	// more on a node than its capacity.
	Resources Resources `json:"resources,omitzero"`
	// Constraints on node labels that a node must meet to run an instance;
	// all must hold. See Constraint for the syntax.
	Constraints []Constraint `json:"constraints,omitempty"`
	// Spread is the node label whose values instances are spread over
	// (default "node": the node's name, so one instance per node while
	// another node fits). With "zone", instances go to the zone running
	// fewest of them first.
	Spread string `json:"spread,omitempty"`
	// Restart is how a crashed instance is restarted on its node.
	Restart RestartPolicy `json:"restart,omitzero"`
	// Update is how a changed spec rolls over the instances.
	Update UpdatePolicy `json:"update,omitzero"`
	// StopTimeout is how long a stopping instance has between SIGTERM and
	// SIGKILL (default 10s).
	StopTimeout config.Duration `json:"stop_timeout,omitempty"`
	// DrainTimeout bounds how long a stopping instance waits, before its
	// SIGTERM, for every alive node's proxy to have dropped it and
	// finished the requests in flight to it (default 30s).
	DrainTimeout config.Duration `json:"drain_timeout,omitempty"`
	// OnNodeLoss is overlap (default) or at_most_one: see the constants.
	OnNodeLoss string `json:"on_node_loss,omitempty"`
	// Generation is set by tandem, not by the user: it grows each time the
	// spec changes, and every instance records the generation it runs.
	Generation int64 `json:"generation,omitempty"`
}

// RunSpec is the process an instance runs.
type RunSpec struct {
	// Command is the program and its arguments (no shell). The program is
	// looked up in PATH when it has no slash.
	Command []string `json:"command,omitempty"`
	// Env is added to the process's environment. PORT and TANDEM_* are
	// set by tandem and may not be given here.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the working directory, an absolute path (default: the
	// instance's directory in the node's data dir).
	Dir string `json:"dir,omitempty"`
	// User runs the process as this user name or numeric uid (default:
	// the agent's user).
	User string `json:"user,omitempty"`
}

// PortSpec names one port an instance listens on.
type PortSpec struct {
	// Name is 1-15 lowercase letters, digits or dashes, starting with a
	// letter (an IANA-style service name, usable in SRV records).
	Name string `json:"name"`
}

// Resources are what an instance reserves, or what a node offers.
type Resources struct {
	// CPUMillis in thousandths of a CPU (1000 = one core).
	CPUMillis int `json:"cpu_millis,omitempty"`
	// MemoryMB in mebibytes. The supervisor stops an instance that uses
	// more than it reserved.
	MemoryMB int `json:"memory_mb,omitempty"`
}

// RestartPolicy is how a crashed instance is restarted on its node: after
// Delay, doubling up to MaxDelay while it keeps crashing.
type RestartPolicy struct {
	Delay    config.Duration `json:"delay,omitempty"`     // default 500ms
	MaxDelay config.Duration `json:"max_delay,omitempty"` // default 30s (or Delay, if larger)
}

// UpdatePolicy is how a changed spec replaces running instances: add before
// remove, MaxParallel at a time.
type UpdatePolicy struct {
	// MaxParallel new instances at a time (default 1).
	MaxParallel int `json:"max_parallel,omitempty"`
	// MinHealthy is how long a new instance must pass its checks before an
	// old one is stopped (default 2s).
	MinHealthy config.Duration `json:"min_healthy,omitempty"`
	// AutoRollback returns to the previous spec when a new instance never
	// becomes healthy (default true).
	AutoRollback *bool `json:"auto_rollback,omitempty"`
}

// Rollback reports whether a failed update is rolled back (AutoRollback, or
// its default, true).
func (u UpdatePolicy) Rollback() bool { return u.AutoRollback == nil || *u.AutoRollback }

// IsZero reports whether w sets nothing at all: the service is not run by
// tandem. Normalize leaves such a workload zero, and a caller validates a
// workload only when it is not zero.
func (w *Workload) IsZero() bool { return reflect.ValueOf(w).Elem().IsZero() }

// Normalize fills defaults into a workload that is not zero. Values that are
// set, even invalid ones, are kept for Validate to report.
func (w *Workload) Normalize() {
	if w.IsZero() {
		return
	}
	if w.Spread == "" {
		w.Spread = DefaultSpread
	}
	if w.OnNodeLoss == "" {
		w.OnNodeLoss = Overlap
	}
	if w.Restart.Delay == 0 {
		w.Restart.Delay = config.Duration(DefaultRestartDelay)
	}
	if w.Restart.MaxDelay == 0 {
		w.Restart.MaxDelay = config.Duration(max(DefaultRestartMax, w.Restart.Delay.D()))
	}
	if w.Update.MaxParallel == 0 {
		w.Update.MaxParallel = DefaultMaxParallel
	}
	if w.Update.MinHealthy == 0 {
		w.Update.MinHealthy = config.Duration(DefaultMinHealthy)
	}
	if w.Update.AutoRollback == nil {
		yes := true
		w.Update.AutoRollback = &yes
	}
	if w.StopTimeout == 0 {
		w.StopTimeout = config.Duration(DefaultStopTimeout)
	}
	if w.DrainTimeout == 0 {
		w.DrainTimeout = config.Duration(DefaultDrainTimeout)
	}
}

var (
	portNameRE = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$`)
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userRE     = regexp.MustCompile(`^([a-z_][a-z0-9_.-]{0,30}\$?|[0-9]{1,10})$`)
)

// Validate checks the workload with its defaults applied and returns every
// problem, each naming its field (count: -1 is negative). A workload with
// any problem must be refused whole.
func (w *Workload) Validate() error {
	c := *w
	c.Normalize() // on a copy: defaults only fill zero scalars and a nil pointer
	return c.validate()
}

func (w *Workload) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf(field+": "+format, args...))
	}

	switch {
	case len(w.Run.Command) == 0:
		bad("run.command", `empty: give the program and its arguments, like ["/usr/local/bin/web", "--port", "8080"]`)
	case w.Run.Command[0] == "":
		bad("run.command[0]", "the program is empty")
	}
	for i, arg := range w.Run.Command {
		if strings.IndexByte(arg, 0) >= 0 {
			bad(fmt.Sprintf("run.command[%d]", i), "contains a NUL byte")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.Run.Env)) {
		field := "run.env." + k
		switch {
		case !envNameRE.MatchString(k):
			bad(field, "not a variable name: use letters, digits and underscores, not starting with a digit")
		case k == reservedEnvPort || strings.HasPrefix(k, reservedEnvPrefix):
			bad(field, "set by tandem for each instance (PORT and TANDEM_*): choose another name")
		case strings.IndexByte(w.Run.Env[k], 0) >= 0:
			bad(field, "the value contains a NUL byte")
		}
	}
	if w.Run.Dir != "" && !filepath.IsAbs(w.Run.Dir) {
		bad("run.dir", "%q is not an absolute path", w.Run.Dir)
	}
	if w.Run.User != "" && !userRE.MatchString(w.Run.User) {
		bad("run.user", "%q is neither a user name nor a numeric uid", w.Run.User)
	}

	if w.Count < 0 {
		bad("count", "%d is negative", w.Count)
	} else if w.Count > MaxCount {
		bad("count", "%d is more than %d, the most one service may run", w.Count, MaxCount)
	}

	if len(w.Ports) > maxPorts {
		bad("ports", "%d ports: at most %d", len(w.Ports), maxPorts)
	}
	seen := map[string]int{}
	for i, p := range w.Ports {
		field := fmt.Sprintf("ports[%d].name", i)
		switch first, dup := seen[p.Name]; {
		case p.Name == "":
			bad(field, "empty: name every port, like http")
		case !portNameRE.MatchString(p.Name):
			bad(field, "%q is not a lower-case name: use 1-15 lowercase letters, digits or dashes, starting with a letter", p.Name)
		case dup:
			bad(field, "%q is also the name of ports[%d]", p.Name, first)
		default:
			seen[p.Name] = i
		}
	}

	for field, v := range map[string]int{"resources.cpu_millis": w.Resources.CPUMillis, "resources.memory_mb": w.Resources.MemoryMB} {
		if v < 0 {
			bad(field, "%d is negative", v)
		} else if v > maxResource {
			bad(field, "%d is more than %d", v, maxResource)
		}
	}

	for i, c := range w.Constraints {
		if err := c.Validate(); err != nil {
			bad(fmt.Sprintf("constraints[%d]", i), "%v", err)
		}
	}
	if err := validateLabelKey(w.Spread); err != nil {
		bad("spread", "%v", err)
	}

	for field, d := range map[string]config.Duration{
		"restart.delay": w.Restart.Delay, "restart.max_delay": w.Restart.MaxDelay,
		"update.min_healthy": w.Update.MinHealthy, "stop_timeout": w.StopTimeout,
		"drain_timeout": w.DrainTimeout,
	} {
		if d < 0 {
			bad(field, "%s is negative", d)
		}
	}
	if w.Restart.Delay > w.Restart.MaxDelay && w.Restart.MaxDelay >= 0 {
		bad("restart.delay", "%s is more than restart.max_delay %s", w.Restart.Delay, w.Restart.MaxDelay)
	}
	if w.Update.MaxParallel < 0 {
		bad("update.max_parallel", "%d is negative", w.Update.MaxParallel)
	}

	switch w.OnNodeLoss {
	case Overlap, AtMostOne:
	default:
		bad("on_node_loss", "unknown policy %q: use overlap (the default) or at_most_one", w.OnNodeLoss)
	}

	// Map iteration made the order of some messages random: sort them so
	// the same spec always gives the same error.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}
