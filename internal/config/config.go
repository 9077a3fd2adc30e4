// Package config holds the agent's configuration: defaults, validation, and
// loading from a YAML file. Field comments are the reference documentation for
// the matching flags and YAML keys.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Config is one agent's configuration. The YAML keys match the flag names.
type Config struct {
	// Name identifies the node in the cluster. It must be unique, and it is
	// fixed once the node has started on a data dir. Default: the host name.
	Name string `json:"name"`
	// DataDir holds the store's data and the node's identity (node.json).
	DataDir string `json:"data-dir"`
	// Advertise is the IP other nodes and clients use to reach this node.
	Advertise string `json:"advertise"`
	// Bind is the IP the node listens on.
	Bind string `json:"bind"`
	// APIPort serves the HTTP API (KV, membership, status).
	APIPort int `json:"api-port"`
	// PeerPort carries the store's Raft traffic between voters.
	PeerPort int `json:"peer-port"`
	// StorePort is the embedded etcd's client endpoint.
	StorePort int `json:"store-port"`
	// DNSPort serves DNS (discovery issue).
	DNSPort int `json:"dns-port"`
	// ProxyPort serves the HTTP proxy (proxy issue).
	ProxyPort int `json:"proxy-port"`
	// Join lists API addresses (host:port) of existing nodes to ask for
	// admission. Empty on the first node, which bootstraps a new cluster.
	// Ignored when the data dir already holds a node.
	Join []string `json:"join"`
	// Voters is the target number of store voters: 1, 3, 5 or 7.
	Voters int `json:"voters"`
	// StoreEndpoints points the agent at an existing external etcd cluster;
	// the agent then runs no store member.
	StoreEndpoints []string `json:"store-endpoints"`
	// StoreCA, StoreCert and StoreKey are PEM files for an external store
	// served over TLS (https:// endpoints): the CA that signed its server
	// certificates (default: the system's roots), and the client
	// certificate and key it asks for, if any. The certificate and key are
	// read again at each new connection, so they can be replaced in place.
	StoreCA   string `json:"store-ca"`
	StoreCert string `json:"store-cert"`
	StoreKey  string `json:"store-key"`
	// DeadVoterTimeout is how long a voter must be dead before autopilot
	// replaces it with a live client node.
	DeadVoterTimeout Duration `json:"dead-voter-timeout"`
	// LeaseTTL is the node liveness lease. A node is alive while its lease is.
	LeaseTTL Duration `json:"lease-ttl"`
	// NodeProbeInterval is how often a node probes the API of the next two
	// alive nodes; one whose API refuses two probes in a row has its lease
	// revoked at once instead of at its TTL. 0 turns the probes off.
	NodeProbeInterval Duration `json:"node-probe-interval"`
	// HeartbeatInterval is the Raft heartbeat (etcd --heartbeat-interval).
	HeartbeatInterval Duration `json:"heartbeat-interval"`
	// ElectionTimeout is the Raft election timeout (etcd --election-timeout).
	ElectionTimeout Duration `json:"election-timeout"`
	// RequestTimeout bounds every store request made for an API call that
	// does not give its own timeout=.
	RequestTimeout Duration `json:"request-timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log-level"`
	// EnableExecChecks lets this node run exec health checks (commands run
	// as the agent's user). Off by default. It is enforced where checks
	// run: without it, this node runs no exec check of any instance it owns,
	// whether the check is the instance's own, inherited from its service's
	// spec, or written straight into the store; such a check stays critical
	// and says why. This node's API also refuses instances with exec checks.
	EnableExecChecks bool `json:"enable-exec-checks"`
	// Labels describe the node for placement (tandem agent --label
	// zone=a): services' constraints and spread refer to them.
	Labels map[string]string `json:"labels,omitempty"`
	// Workloads lets the scheduler place instances on this node (on by
	// default); a node started with it off runs none.
	Workloads bool `json:"workloads"`
	// NoSubreaper keeps the agent from making its process the child
	// subreaper of its instances' orphans: for agents that run inside
	// another program (tests), whose orphans it must not collect. Not a
	// flag.
	NoSubreaper bool `json:"-"`
	// WorkloadUser runs the instances whose spec names no run.user; empty
	// means "nobody" when the agent runs as root, else the agent's own
	// user.
	WorkloadUser string `json:"workload-user"`
	// WorkloadAllowRoot lets instances run as root. Off, an instance that
	// would run as root (its run.user is root, or it names none and
	// WorkloadUser is root) is refused on this node and handed back.
	WorkloadAllowRoot bool `json:"workload-allow-root"`
	// WorkloadPorts is the range the node hands its instances' ports from,
	// like "20000-29999".
	WorkloadPorts string `json:"workload-ports"`
	// DNSDomain is the domain DNS answers for, like "tandem.".
	DNSDomain string `json:"dns-domain"`
	// ProxyTLSCert and ProxyTLSKey, when both set, make the HTTP proxy serve
	// TLS (HTTP/2 and HTTP/1.1 by ALPN) on the proxy port instead of
	// plain HTTP/1.1 and h2c.
	ProxyTLSCert string `json:"proxy-tls-cert"`
	ProxyTLSKey  string `json:"proxy-tls-key"`
	// ProxyTLSDir is a directory of NAME.crt + NAME.key pairs (PEM) the
	// HTTP proxy serves by SNI, reloaded within 2 s of a change; setting it
	// turns TLS on. A pair that does not load is logged and skipped.
	ProxyTLSDir string `json:"proxy-tls-dir"`
	// ProxyTLS turns TLS on for the HTTP proxy with only the certificates
	// kept in the store (tandem cert put). Whenever TLS is on, by any of
	// these settings, the store's certificates are served too.
	ProxyTLS bool `json:"proxy-tls"`
	// DNSTTL is the TTL of DNS answers in seconds. 0 (the default) makes
	// resolvers ask again each time, so failover is seen at once.
	DNSTTL int `json:"dns-ttl"`
	// ProxyFastPath lets idle plain HTTP/1.1 keep-alive connections of the
	// proxy wait for their next request in an epoll loop of its own (Linux):
	// one system call less per request, no less CPU on the machines it was
	// measured on, and more at moderate rates (docs/BENCHMARKS.md). Off by
	// default; the environment variable TANDEM_PROXY_FASTPATH=on|off
	// overrides it.
	ProxyFastPath bool `json:"proxy-fast-path"`
	// Insecure turns security off for a throwaway local cluster: the API
	// is plain HTTP with no tokens, and the store's ports are plain with no
	// client certificates. The agent warns on every start, and refuses it
	// with a bind address other than loopback. Every node of a cluster must
	// agree: a secure cluster refuses an insecure joiner.
	Insecure bool `json:"insecure"`
	// TokenFile holds the join token a new node presents with --join (make
	// one on any node with `tandem token create --role join`). Only read on
	// the first start: a node that has joined keeps its certificate.
	TokenFile string `json:"token-file"`
	// PublicMetrics lets GET /metrics and GET /v1/health be read without a
	// token (for Prometheus and load balancer checks). Off by default.
	PublicMetrics bool `json:"public-metrics"`
	// CertTTL is the lifetime of the node certificates this node signs for
	// itself and for joiners; a node renews its own at two thirds of it,
	// without a restart.
	CertTTL Duration `json:"cert-ttl"`
}

// Default returns the configuration a node gets when nothing is set.
//
// Timer defaults are chosen for a LAN (round trips well under 1 ms):
//   - heartbeat 50 ms and election timeout 500 ms let followers notice a dead
//     leader after 0.5–1 s (etcd randomises within [election, 2×election)),
//     so writes resume within about a second. etcd's defaults (100 ms/1 s) give
//     1–2 s. Raise both on slower networks or disks: the election timeout should
//     be at least 10× the round trip and well above fsync latency.
//   - lease TTL 2 s, renewed every TTL/4: a dead node is noticed within 2 s,
//     and a node survives three lost renewals.
//   - node probes every 250 ms: a node whose process died (its API refuses
//     connections) is noticed after two refused probes, well before its
//     lease expires; a host that went silent is still left to the lease.
func Default() Config {
	return Config{
		Name:              "",
		DataDir:           "tandem-data",
		Advertise:         "127.0.0.1",
		Bind:              "127.0.0.1",
		APIPort:           7400,
		PeerPort:          7401,
		StorePort:         7402,
		DNSPort:           7403,
		ProxyPort:         7404,
		Voters:            3,
		DeadVoterTimeout:  Duration(30 * time.Second),
		LeaseTTL:          Duration(2 * time.Second),
		NodeProbeInterval: Duration(250 * time.Millisecond),
		HeartbeatInterval: Duration(50 * time.Millisecond),
		ElectionTimeout:   Duration(500 * time.Millisecond),
		RequestTimeout:    Duration(3 * time.Second),
		LogLevel:          "info",
		Workloads:         true,
		WorkloadPorts:     "20000-29999",
		DNSDomain:         "tandem.",
		CertTTL:           Duration(30 * 24 * time.Hour),
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is a valid node name: a DNS label of lowercase
// letters, digits and dashes, 1 to 63 characters.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks the configuration and returns every problem found.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !ValidName(c.Name) {
		bad("name %q: use 1-63 lowercase letters, digits or dashes, starting and ending with a letter or digit", c.Name)
	}
	if c.DataDir == "" {
		bad("data-dir is empty: give a directory for the node's data")
	}
	for flag, ip := range map[string]string{"advertise": c.Advertise, "bind": c.Bind} {
		if net.ParseIP(ip) == nil {
			bad("%s %q is not an IP address", flag, ip)
		}
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) != nil && net.ParseIP(c.Advertise).IsUnspecified() {
		bad("advertise %q: give an address other nodes can reach, not the unspecified address", c.Advertise)
	}
	ports := map[string]int{"api-port": c.APIPort, "peer-port": c.PeerPort, "store-port": c.StorePort, "dns-port": c.DNSPort, "proxy-port": c.ProxyPort}
	seen := map[int]string{}
	for _, flag := range []string{"api-port", "peer-port", "store-port", "dns-port", "proxy-port"} {
		p := ports[flag]
		if p < 0 || p > 65535 {
			bad("%s %d is out of range 0-65535", flag, p)
		}
		if other, dup := seen[p]; dup && p != 0 {
			bad("%s and %s are both %d: give each its own port", other, flag, p)
		}
		seen[p] = flag
	}
	switch c.Voters {
	case 1, 3, 5, 7:
	default:
		bad("voters %d: use 1, 3, 5 or 7 (an odd number keeps a majority after a split)", c.Voters)
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad("join address %q: want host:port of an existing node's API", j)
		}
	}
	if c.LeaseTTL.D() < time.Second {
		bad("lease-ttl %s: must be at least 1s", c.LeaseTTL)
	}
	if c.NodeProbeInterval.D() < 0 || (c.NodeProbeInterval.D() > 0 && c.NodeProbeInterval.D() < 10*time.Millisecond) {
		bad("node-probe-interval %s: give 0 (off) or at least 10ms", c.NodeProbeInterval)
	}
	if c.HeartbeatInterval.D() < time.Millisecond || c.ElectionTimeout.D() < 5*c.HeartbeatInterval.D() {
		bad("election-timeout %s must be at least 5x heartbeat-interval %s (and heartbeat at least 1ms)", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.DeadVoterTimeout.D() < time.Second {
		bad("dead-voter-timeout %s: must be at least 1s", c.DeadVoterTimeout)
	}
	if c.RequestTimeout.D() <= 0 {
		bad("request-timeout %s: must be positive", c.RequestTimeout)
	}
	if !strings.HasSuffix(c.DNSDomain, ".") || len(c.DNSDomain) < 2 || strings.Contains(c.DNSDomain, "..") || strings.HasPrefix(c.DNSDomain, ".") {
		bad("dns-domain %q: give a domain ending in a dot, like tandem. or svc.example.com.", c.DNSDomain)
	}
	if (c.ProxyTLSCert == "") != (c.ProxyTLSKey == "") {
		bad("proxy-tls-cert and proxy-tls-key go together: give both, or neither for plain HTTP")
	}
	if c.DNSTTL < 0 || c.DNSTTL > 86400 {
		bad("dns-ttl %d: want 0-86400 seconds", c.DNSTTL)
	}
	if (c.StoreCert == "") != (c.StoreKey == "") {
		bad("store-cert and store-key go together: give both, or neither")
	}
	if (c.StoreCA != "" || c.StoreCert != "") && len(c.StoreEndpoints) == 0 {
		bad("store-ca, store-cert and store-key are for an external store: give --store-endpoints too")
	}
	for _, e := range c.StoreEndpoints {
		if (c.StoreCA != "" || c.StoreCert != "") && !strings.HasPrefix(e, "https://") {
			bad("store endpoint %q: with store-ca or store-cert, give https:// endpoints", e)
		}
	}
	if c.Insecure {
		if ip := net.ParseIP(c.Bind); ip != nil && !ip.IsLoopback() {
			bad("insecure with bind %s: --insecure serves the API and the store with no TLS and no tokens, so it is only for a throwaway cluster on loopback; drop --insecure, or bind 127.0.0.1", c.Bind)
		}
		if c.TokenFile != "" {
			bad("insecure with token-file: an insecure cluster has no join tokens; drop one of them")
		}
	}
	if c.CertTTL.D() < time.Minute {
		bad("cert-ttl %s: must be at least 1m", c.CertTTL)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	if _, _, err := c.WorkloadPortRange(); err != nil {
		bad("%v", err)
	}
	return errors.Join(errs...)
}

// WorkloadPortRange parses WorkloadPorts.
func (c *Config) WorkloadPortRange() (lo, hi int, err error) {
	a, b, ok := strings.Cut(c.WorkloadPorts, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("workload-ports %q: want a range of ports like 20000-29999", c.WorkloadPorts)
	}
	return lo, hi, nil
}

// Load reads YAML from r over the values already in c, so defaults stay for
// keys the file does not set. Unknown keys are an error.
func (c *Config) Load(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := UnmarshalYAML(data, c); err != nil {
		return err
	}
	return nil
}

// Duration is a time.Duration that reads and writes as a string like "2s".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads "1.5s" style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like 500ms or 2s", s)
	}
	*d = Duration(v)
	return nil
}

// Set implements pflag.Value.
func (d *Duration) Set(s string) error { return d.UnmarshalJSON([]byte(s)) }

// Type implements pflag.Value.
func (d *Duration) Type() string { return "duration" }
