package supervisor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Errors a caller can test with errors.Is.
var (
	// ErrInvalidTask wraps every complaint about a Task's fields: starting it
	// again will not help.
	ErrInvalidTask = errors.New("invalid task")
	// ErrUnknownUser means Task.User does not exist on this node. Another
	// node may have it, so the supervisor hands the task back at once.
	ErrUnknownUser = errors.New("unknown user")
	// ErrRootDenied means the task would run as root on a node whose
	// driver refuses that (ExecConfig.DenyRoot). Another node may allow
	// it.
	ErrRootDenied = errors.New("running as root is not allowed on this node")
	// ErrGone means a State no longer names a live process: it exited, its
	// pid was reused by another process, or the node rebooted.
	ErrGone = errors.New("process gone")
	// ErrUnsupported is returned by the exec driver on systems other than
	// Linux.
	ErrUnsupported = errors.New("process supervision is only supported on Linux")
)

// DefaultStopTimeout is the grace between SIGTERM and SIGKILL when
// Task.StopTimeout is zero.
const DefaultStopTimeout = 10 * time.Second

// Task is one instance to run on this node: what to execute and with which
// limits. It is plain data, serialisable to JSON, and compared field by field
// (a Task whose fields change is a different task to run).
type Task struct {
	// ID names the instance, unique on the node. It names the log files, so
	// it may hold only letters, digits, '.', '_' and '-'.
	ID string `json:"id"`
	// Service is the service the instance belongs to; it is handed to the
	// process as TANDEM_SERVICE and reported in events.
	Service string `json:"service"`
	// Command is the program and its arguments. A program without a '/' is
	// looked up in the agent's PATH.
	Command []string `json:"command"`
	// Env is added to the process's environment, which otherwise holds only
	// PATH (the agent's), HOME, USER and LOGNAME (when User is set), and the
	// TANDEM_* and PORT variables, which Env cannot override.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the working directory; empty means the agent's own.
	Dir string `json:"dir,omitempty"`
	// User runs the process as this user (name or numeric uid) with its
	// primary and supplementary groups; empty means the agent's user.
	// Another user than the agent's needs the agent to run as root.
	User string `json:"user,omitempty"`
	// Ports are the ports allocated to the instance, in the spec's order.
	// The process sees each as TANDEM_PORT_<NAME> (upper case, '-' as '_'),
	// and the first also as PORT.
	Ports []Port `json:"ports,omitempty"`
	// MemoryMB is the most resident memory the whole process group may use;
	// above it the group is killed. Zero means no limit.
	MemoryMB int `json:"memory_mb,omitempty"`
	// CPUMillis is the CPU the instance was placed for. The exec driver does
	// not enforce it.
	CPUMillis int `json:"cpu_millis,omitempty"`
	// LogDir receives <ID>.stdout.log and <ID>.stderr.log and their rotated
	// copies. It is created if missing. Required.
	LogDir string `json:"log_dir"`
	// StopTimeout is the grace between SIGTERM and SIGKILL when the task is
	// stopped; zero means DefaultStopTimeout.
	StopTimeout time.Duration `json:"stop_timeout,omitempty"`
	// RestartDelay and RestartMaxDelay, when not zero, replace the
	// supervisor's RestartPolicy.Delay and MaxDelay for this task (the
	// spec's restart: {delay, max_delay}).
	RestartDelay    time.Duration `json:"restart_delay,omitempty"`
	RestartMaxDelay time.Duration `json:"restart_max_delay,omitempty"`
}

// Port is one named port allocated to an instance.
type Port struct {
	Name   string `json:"name"`
	Number int    `json:"port"`
}

var (
	idPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	portPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
)

// Validate reports the first field of t that cannot be run, wrapping
// ErrInvalidTask.
func (t Task) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidTask, t.ID, fmt.Sprintf(format, args...))
	}
	switch {
	case !idPattern.MatchString(t.ID) || len(t.ID) > 200:
		return bad("id must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit")
	case len(t.Command) == 0 || t.Command[0] == "":
		return bad("command is empty: give the program to run")
	case t.LogDir == "" || !filepath.IsAbs(t.LogDir):
		return bad("log_dir %q must be an absolute path", t.LogDir)
	case t.Dir != "" && !filepath.IsAbs(t.Dir):
		return bad("dir %q must be an absolute path", t.Dir)
	case t.MemoryMB < 0:
		return bad("memory_mb %d is negative", t.MemoryMB)
	case t.CPUMillis < 0:
		return bad("cpu_millis %d is negative", t.CPUMillis)
	case t.StopTimeout < 0:
		return bad("stop_timeout %s is negative", t.StopTimeout)
	case t.RestartDelay < 0 || t.RestartMaxDelay < 0:
		return bad("restart delays must not be negative")
	case t.RestartDelay > 0 && t.RestartMaxDelay > 0 && t.RestartMaxDelay < t.RestartDelay:
		return bad("restart max delay %s is below the first delay %s", t.RestartMaxDelay, t.RestartDelay)
	}
	for k := range t.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("env name %q is empty or holds '=' or NUL", k)
		}
	}
	seen := map[string]bool{}
	for _, p := range t.Ports {
		if !portPattern.MatchString(p.Name) {
			return bad("port name %q must start with a letter and hold only letters, digits, '_' or '-'", p.Name)
		}
		if v := portVar(p.Name); seen[v] {
			return bad("two ports are both handed over as %s", v)
		} else {
			seen[v] = true
		}
		if p.Number < 1 || p.Number > 65535 {
			return bad("port %s = %d is outside 1-65535", p.Name, p.Number)
		}
	}
	return nil
}

// stopTimeout is the grace between SIGTERM and SIGKILL.
func (t Task) stopTimeout() time.Duration {
	if t.StopTimeout > 0 {
		return t.StopTimeout
	}
	return DefaultStopTimeout
}

// PortEnv returns the variables that hand t's ports to the process: PORT
// (the first port) and TANDEM_PORT_<NAME> for each.
func (t Task) PortEnv() map[string]string {
	env := make(map[string]string, len(t.Ports)+1)
	for i, p := range t.Ports {
		v := strconv.Itoa(p.Number)
		if i == 0 {
			env["PORT"] = v
		}
		env[portVar(p.Name)] = v
	}
	return env
}

// portVar is the variable that hands over port name.
func portVar(name string) string {
	return "TANDEM_PORT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// environ builds the process's environment from base (what the driver
// provides: PATH, HOME...), the task's Env and the variables tandem sets,
// in that order of precedence, as sorted "K=V" strings.
func (t Task) environ(base map[string]string) []string {
	env := make(map[string]string, len(base)+len(t.Env)+len(t.Ports)+3)
	for k, v := range base {
		env[k] = v
	}
	for k, v := range t.Env {
		env[k] = v
	}
	env["TANDEM_INSTANCE_ID"] = t.ID
	if t.Service != "" {
		env["TANDEM_SERVICE"] = t.Service
	}
	for k, v := range t.PortEnv() {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// StdoutPath is where the process's standard output goes.
func (t Task) StdoutPath() string { return filepath.Join(t.LogDir, t.ID+".stdout.log") }

// StderrPath is where the process's standard error goes.
func (t Task) StderrPath() string { return filepath.Join(t.LogDir, t.ID+".stderr.log") }

// Exit says how a process group ended.
type Exit struct {
	// Code is the leader's exit status, or -1 if a signal ended it or the
	// status is unknown (an adopted process: see Unknown).
	Code int `json:"code"`
	// Signal names the signal that ended the leader ("killed",
	// "terminated"), if one did.
	Signal string `json:"signal,omitempty"`
	// Unknown is set when the status could not be read: the leader was an
	// adopted process, not the agent's child.
	Unknown bool `json:"unknown,omitempty"`
	// Stopped is set when Stop ended the process, as opposed to a crash or
	// a limit.
	Stopped bool `json:"stopped,omitempty"`
	// Reason says why tandem ended it, if it did ("stopped", "memory limit
	// 256 MB exceeded (RSS 300 MB)"); empty when the process ended by itself.
	Reason string `json:"reason,omitempty"`
	// At is when the leader's end was seen.
	At time.Time `json:"at"`
}

// Success reports whether the process exited by itself with status 0.
func (e Exit) Success() bool {
	return e.Code == 0 && e.Signal == "" && !e.Unknown && e.Reason == ""
}

// String reads like "exit status 1", "killed by signal killed: memory limit…".
func (e Exit) String() string {
	var s string
	switch {
	case e.Unknown:
		s = "exited, status unknown (adopted process)"
	case e.Signal != "":
		s = "killed by signal " + e.Signal
	default:
		s = "exit status " + strconv.Itoa(e.Code)
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// State is what a driver needs to find a process it started again, after the
// agent restarts: it is serialisable to JSON and the agent keeps it on disk.
type State struct {
	// Driver names the driver that started the process ("exec").
	Driver string `json:"driver"`
	// Task is the task the process runs.
	Task Task `json:"task"`
	// Pid is the leader's process id and Pgid its process group.
	Pid  int `json:"pid"`
	Pgid int `json:"pgid"`
	// StartTime is the leader's start time in clock ticks since boot
	// (/proc/<pid>/stat field 22): a reused pid has another.
	StartTime uint64 `json:"start_time"`
	// BootID is the kernel's boot id when the process started: after a
	// reboot, every State is gone.
	BootID string `json:"boot_id"`
	// Started is when the process started, by the agent's clock.
	Started time.Time `json:"started"`
}

// Driver starts processes and finds them again. Implementations are safe for
// concurrent use.
type Driver interface {
	// Start runs t and returns once the program is executing (or failed to);
	// ctx bounds only the start itself. An invalid t yields an error
	// wrapping ErrInvalidTask, an unknown user ErrUnknownUser.
	Start(ctx context.Context, t Task) (Handle, error)
	// Adopt re-attaches to a process started by an earlier run of the agent,
	// or says, with ErrGone, that it is not there any more.
	Adopt(s State) (Handle, error)
}

// Handle is one running process group. Its methods are safe for concurrent
// use.
type Handle interface {
	// Pid is the leader's process id.
	Pid() int
	// State is what Adopt needs to find the process again.
	State() State
	// Done is closed once the group is gone: the leader has exited and no
	// process of its group remains (the driver kills what is left).
	Done() <-chan struct{}
	// Exit says how the group ended; it is valid once Done is closed.
	Exit() Exit
	// Stop sends SIGTERM to the whole group, SIGKILL after the task's
	// StopTimeout, and returns nil once no process of the group remains.
	// If ctx ends first it sends SIGKILL at once and returns ctx's error
	// (the group is still being killed). Stopping a finished group is a
	// no-op returning nil.
	Stop(ctx context.Context) error
}
