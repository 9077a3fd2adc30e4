// Package registry is the service catalog's model: services, their
// instances and health checks, and the rules a registration must follow.
// It does no I/O; where each lives in the store is in package keys.
package registry

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/scheduler"
)

// Health states, from best to worst.
const (
	Passing  = "passing"
	Warning  = "warning"
	Critical = "critical"
)

// Check kinds.
const (
	CheckHTTP = "http"
	CheckTCP  = "tcp"
	CheckGRPC = "grpc"
	CheckTTL  = "ttl"
	CheckExec = "exec"
)

// Check describes one health check of an instance. The owning node runs it.
type Check struct {
	// Type is http, tcp, grpc, ttl or exec.
	Type string `json:"type"`
	// HTTP: a URL, or a path on the instance's address (2xx passes, 429
	// warns, anything else fails; redirects are not followed).
	HTTP string `json:"http,omitempty"`
	// TCP: host:port to connect to (default: the instance's address).
	TCP string `json:"tcp,omitempty"`
	// GRPC: host:port (default: the instance's address) and, after a slash,
	// the service name to ask grpc.health.v1 about ("" = the whole server).
	GRPC string `json:"grpc,omitempty"`
	// Command is argv of an exec check: exit 0 passes, 1 warns, other fails.
	Command []string `json:"command,omitempty"`
	// TTL: the instance must be renewed through the API within this time.
	TTL config.Duration `json:"ttl,omitempty"`
	// Interval between runs (default 1s, at least 100ms).
	Interval config.Duration `json:"interval,omitempty"`
	// Timeout of one run (default: the interval, at most 10s).
	Timeout config.Duration `json:"timeout,omitempty"`
	// FailuresBeforeCritical consecutive failures turn it critical (default 2).
	FailuresBeforeCritical int `json:"failures_before_critical,omitempty"`
	// SuccessesBeforePassing consecutive passes turn it passing (default 1).
	SuccessesBeforePassing int `json:"successes_before_passing,omitempty"`
}

// Service is a service's spec. It may be stored before any instance exists.
type Service struct {
	Name string `json:"name"`
	// Checks apply to every instance that declares none of its own.
	Checks []Check `json:"checks,omitempty"`
	// Balance is the proxy's balancing policy (proxy issue).
	Balance string `json:"balance,omitempty"`
	// LBPort, when set, makes every node proxy TCP on this port (proxy issue).
	LBPort int `json:"lb_port,omitempty"`
	// Hosts and PathPrefixes route HTTP to this service, besides its names
	// <svc> and <svc>.service.<domain>. A path prefix applies to those hosts
	// (or to any host when Hosts is empty).
	Hosts        []string `json:"hosts,omitempty"`
	PathPrefixes []string `json:"path_prefixes,omitempty"`
	// HashOn picks the key for balance "hash": "header:NAME",
	// "cookie:NAME" or "client-ip" (the default).
	HashOn string `json:"hash_on,omitempty"`
	// Timeouts of the proxy's requests to this service's instances.
	Timeouts ProxyTimeouts `json:"timeouts,omitzero"`
	// Outlier tunes passive outlier detection.
	Outlier OutlierPolicy `json:"outlier,omitzero"`
	// Workload, when it has a run command, makes tandem run the service's
	// instances itself (see docs/WORKLOADS.md); its fields sit at the top
	// level of the spec (run, count, ports, resources, ...).
	scheduler.Workload
}

// ProxyTimeouts bound the proxy's requests to a service's instances.
type ProxyTimeouts struct {
	// Connect bounds opening a connection (default 1s).
	Connect config.Duration `json:"connect,omitempty"`
	// ResponseHeader bounds the wait for the response headers once the
	// request is sent (default 30s). It also bounds draining: requests
	// in flight to an instance that left the view are cut after it.
	ResponseHeader config.Duration `json:"response_header,omitempty"`
	// Idle closes pooled connections unused this long (default 90s).
	Idle config.Duration `json:"idle,omitempty"`
}

// OutlierPolicy tunes passive outlier detection: an instance that fails to
// connect, or answers ConsecutiveErrors 5xx in a row, is ejected for
// BaseEjection × the number of times it has been ejected.
type OutlierPolicy struct {
	ConsecutiveErrors  int             `json:"consecutive_errors,omitempty"`   // default 5
	BaseEjection       config.Duration `json:"base_ejection,omitempty"`        // default 5s
	MaxEjectionPercent int             `json:"max_ejection_percent,omitempty"` // default 50
}

// Instance is one running copy of a service.
type Instance struct {
	ID      string            `json:"id"`
	Service string            `json:"service"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Weight  int               `json:"weight,omitempty"` // default 1
	// Node owns the instance: it runs the checks, and the instance's health
	// is bound to its lease. Set by the node that registers it.
	Node string `json:"node"`
	// Checks of this instance; when empty, the service's checks apply.
	Checks []Check `json:"checks,omitempty"`
	// InitialState is the state before the first check result (default
	// critical: a new instance gets no traffic until it passes once).
	InitialState string `json:"initial_state,omitempty"`
}

// Health is an instance's health as its owner last wrote it.
type Health struct {
	Status string        `json:"status"`
	Output string        `json:"output,omitempty"`
	Since  time.Time     `json:"since"`
	Node   string        `json:"node"`
	Checks []CheckHealth `json:"checks,omitempty"`
}

// InstanceHealth is an instance as the view serves it: its registration and its
// effective health. Status is critical when the owner node is dead or has
// written no health yet (unless the instance was registered with an
// initial state).
type InstanceHealth struct {
	Instance
	Status string        `json:"status"`
	Output string        `json:"output,omitempty"`
	Since  time.Time     `json:"since,omitzero"`
	Checks []CheckHealth `json:"checks,omitempty"`
}

// CheckHealth is one check's part in an instance's health.
type CheckHealth struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Output string `json:"output,omitempty"`
}

// Worst returns the worse of two states.
func Worst(a, b string) string {
	rank := map[string]int{Passing: 0, Warning: 1, Critical: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
var idRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$`)
var tagRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks a service name: it becomes a DNS label.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("service name is empty")
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("service name %q: use 1-63 lowercase letters, digits or dashes, starting and ending with a letter or digit (it is a DNS label)", name)
	}
	return nil
}

// ValidateID checks an instance id.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("instance id is empty")
	}
	if !idRE.MatchString(id) {
		return fmt.Errorf("instance id %q: use 1-128 letters, digits, dots, dashes or underscores, starting and ending with a letter or digit", id)
	}
	return nil
}

// Rules are what a node allows in a registration.
type Rules struct {
	// AllowExec is true only on an agent started with --enable-exec-checks.
	AllowExec bool
}

// Normalize fills defaults into a check.
func (c *Check) Normalize() {
	if c.Interval == 0 {
		c.Interval = config.Duration(time.Second)
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(min(c.Interval.D(), 10*time.Second))
	}
	if c.FailuresBeforeCritical == 0 {
		c.FailuresBeforeCritical = 2
	}
	if c.SuccessesBeforePassing == 0 {
		c.SuccessesBeforePassing = 1
	}
}

// Validate checks a check; where names the check in messages.
func (c *Check) Validate(where string, rules Rules) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	switch c.Type {
	case CheckHTTP:
		if c.HTTP == "" {
			bad("an http check needs http: a URL or a path like /healthz")
		} else if !strings.HasPrefix(c.HTTP, "/") {
			u, err := url.Parse(c.HTTP)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("http %q: want an http(s) URL or a path starting with /", c.HTTP)
			}
		}
	case CheckTCP:
		if c.TCP != "" {
			if _, _, err := net.SplitHostPort(c.TCP); err != nil {
				bad("tcp %q: want host:port", c.TCP)
			}
		}
	case CheckGRPC:
		if c.GRPC != "" {
			hp, _, _ := strings.Cut(c.GRPC, "/")
			if _, _, err := net.SplitHostPort(hp); err != nil {
				bad("grpc %q: want host:port[/service]", c.GRPC)
			}
		}
	case CheckTTL:
		if c.TTL.D() < 100*time.Millisecond {
			bad("a ttl check needs ttl of at least 100ms (got %s)", c.TTL)
		}
	case CheckExec:
		if !rules.AllowExec {
			bad("exec checks run commands on the node and are refused unless the owning agent was started with --enable-exec-checks")
		}
		if len(c.Command) == 0 {
			bad("an exec check needs command: the program and its arguments")
		}
	case "":
		bad("check type is missing: use http, tcp, grpc, ttl or exec")
	default:
		bad("unknown check type %q: use http, tcp, grpc, ttl or exec", c.Type)
	}
	if c.Interval != 0 && c.Interval.D() < 100*time.Millisecond {
		bad("interval %s is below the minimum of 100ms", c.Interval)
	}
	if c.Timeout < 0 || c.Timeout.D() > time.Minute {
		bad("timeout %s: want up to 1m", c.Timeout)
	}
	if c.FailuresBeforeCritical < 0 || c.FailuresBeforeCritical > 100 || c.SuccessesBeforePassing < 0 || c.SuccessesBeforePassing > 100 {
		bad("failures_before_critical and successes_before_passing must be between 1 and 100")
	}
	return errors.Join(errs...)
}

// Validate checks a service spec.
func (s *Service) Validate(rules Rules) error {
	errs := []error{ValidateName(s.Name)}
	for i := range s.Checks {
		errs = append(errs, s.Checks[i].Validate(fmt.Sprintf("check %d", i+1), rules))
	}
	switch s.Balance {
	case "", "least-request", "round-robin", "weighted", "hash", "local":
	default:
		errs = append(errs, fmt.Errorf("balance %q: use least-request, round-robin, weighted, hash or local", s.Balance))
	}
	switch {
	case s.HashOn == "" || s.HashOn == "client-ip":
	case strings.HasPrefix(s.HashOn, "header:") && len(s.HashOn) > len("header:"):
	case strings.HasPrefix(s.HashOn, "cookie:") && len(s.HashOn) > len("cookie:"):
	default:
		errs = append(errs, fmt.Errorf("hash_on %q: use header:NAME, cookie:NAME or client-ip", s.HashOn))
	}
	for _, h := range s.Hosts {
		if h == "" || strings.ContainsAny(h, " /:") {
			errs = append(errs, fmt.Errorf("host %q: give a host name without port or path", h))
		}
	}
	for _, p := range s.PathPrefixes {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("path prefix %q: must start with /", p))
		}
	}
	if s.Outlier.ConsecutiveErrors < 0 || s.Outlier.MaxEjectionPercent < 0 || s.Outlier.MaxEjectionPercent > 100 {
		errs = append(errs, errors.New("outlier: consecutive_errors must be 0 or more and max_ejection_percent 0-100"))
	}
	if s.LBPort < 0 || s.LBPort > 65535 {
		errs = append(errs, fmt.Errorf("lb_port %d: want 1-65535, or 0 for none", s.LBPort))
	}
	if !s.Workload.IsZero() {
		w := s.Workload
		w.Normalize()
		errs = append(errs, w.Validate())
	}
	return errors.Join(errs...)
}

// Runs reports whether tandem runs the service's instances (its spec has
// a run command).
func (s *Service) Runs() bool { return len(s.Run.Command) > 0 }

// Validate checks an instance.
func (in *Instance) Validate(rules Rules) error {
	errs := []error{ValidateName(in.Service), ValidateID(in.ID)}
	if in.Address == "" {
		errs = append(errs, errors.New("address is empty: give the IP or host name the instance listens on"))
	} else if strings.ContainsAny(in.Address, " /:") && net.ParseIP(in.Address) == nil {
		errs = append(errs, fmt.Errorf("address %q: give an IP or a host name, without a port", in.Address))
	} else if a := strings.TrimSuffix(strings.ToLower(in.Address), "."); a == "localhost" || strings.HasSuffix(a, ".localhost") {
		errs = append(errs, fmt.Errorf("address %q: localhost names each client's own machine, so DNS cannot answer it and other nodes cannot reach it; give an IP such as 127.0.0.1", in.Address))
	}
	if in.Port < 1 || in.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: want 1-65535", in.Port))
	}
	for _, t := range in.Tags {
		if !tagRE.MatchString(t) {
			errs = append(errs, fmt.Errorf("tag %q: use lowercase letters, digits and dashes (tags are DNS labels)", t))
		}
	}
	if in.Weight < 0 || in.Weight > 10000 {
		errs = append(errs, fmt.Errorf("weight %d: want 1-10000 (0 means 1)", in.Weight))
	}
	switch in.InitialState {
	case "", Passing, Warning, Critical:
	default:
		errs = append(errs, fmt.Errorf("initial_state %q: use passing, warning or critical", in.InitialState))
	}
	for i := range in.Checks {
		errs = append(errs, in.Checks[i].Validate(fmt.Sprintf("check %d", i+1), rules))
	}
	return errors.Join(errs...)
}

// Normalize fills an instance's defaults.
func (in *Instance) Normalize() {
	if in.Weight == 0 {
		in.Weight = 1
	}
	for i := range in.Checks {
		in.Checks[i].Normalize()
	}
	slices.Sort(in.Tags)
	in.Tags = slices.Compact(in.Tags)
}

// EffectiveChecks are the checks the owner runs: the instance's own, or
// else the service's.
func EffectiveChecks(in Instance, spec *Service) []Check {
	checks := in.Checks
	if len(checks) == 0 && spec != nil {
		checks = append([]Check(nil), spec.Checks...)
	}
	for i := range checks {
		checks[i].Normalize()
	}
	return checks
}
