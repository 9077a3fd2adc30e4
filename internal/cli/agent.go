package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tandemhq/tandem/internal/agent"
	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/config"
)

func newAgentCmd() *cobra.Command {
	return agentCmd(func(cmd *cobra.Command, cfg config.Config) error {
		log := newLogger(cfg.LogLevel)
		a, err := agent.New(cfg, log)
		if err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
		return a.Run(cmd.Context())
	})
}

// agentCmd builds the agent command; run gets the resolved configuration.
func agentCmd(run func(*cobra.Command, config.Config) error) *cobra.Command {
	fl := config.Default()
	var configFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a tandem node",
		Long: `Run a tandem node. The first node (no --join) bootstraps a new cluster; others
join through any existing node's API. A node restarted on its data dir comes
back with its identity and data: no first-start flags are needed again.

Settings come from, lowest first: defaults, the data dir's node.json, the
--config YAML file (keys are the flag names), and flags given explicitly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := resolveAgentConfig(cmd, fl, configFile)
			if err != nil {
				return err
			}
			return run(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file with agent settings (keys are the flag names)")
	f.StringVar(&fl.Name, "name", "", "node name, unique in the cluster (default: the host name)")
	f.StringVar(&fl.DataDir, "data-dir", fl.DataDir, "directory for the node's data and identity")
	f.StringVar(&fl.Advertise, "advertise", fl.Advertise, "IP other nodes use to reach this one")
	f.StringVar(&fl.Bind, "bind", fl.Bind, "IP to listen on")
	f.IntVar(&fl.APIPort, "api-port", fl.APIPort, "HTTP API port")
	f.IntVar(&fl.PeerPort, "peer-port", fl.PeerPort, "store peer (Raft) port")
	f.IntVar(&fl.StorePort, "store-port", fl.StorePort, "store client port")
	f.IntVar(&fl.DNSPort, "dns-port", fl.DNSPort, "DNS port")
	f.IntVar(&fl.ProxyPort, "proxy-port", fl.ProxyPort, "HTTP proxy port")
	f.StringSliceVar(&fl.Join, "join", nil, "API addresses (host:port) of existing nodes to join through")
	f.IntVar(&fl.Voters, "voters", fl.Voters, "target number of store voters: 1, 3, 5 or 7")
	f.StringSliceVar(&fl.StoreEndpoints, "store-endpoints", nil, "use this external etcd cluster (client URLs) instead of an embedded store")
	f.StringVar(&fl.StoreCA, "store-ca", "", "PEM CA bundle that signed the external store's server certificates (default: system roots)")
	f.StringVar(&fl.StoreCert, "store-cert", "", "PEM client certificate for the external store (with --store-key)")
	f.StringVar(&fl.StoreKey, "store-key", "", "PEM private key of --store-cert")
	f.Var(&fl.DeadVoterTimeout, "dead-voter-timeout", "replace a voter dead this long with a live client node")
	f.Var(&fl.LeaseTTL, "lease-ttl", "node liveness lease TTL")
	f.Var(&fl.NodeProbeInterval, "node-probe-interval", "probe the next two nodes' APIs this often; revoke the lease of one that refuses twice (0: off)")
	f.Var(&fl.HeartbeatInterval, "heartbeat-interval", "store Raft heartbeat interval")
	f.Var(&fl.ElectionTimeout, "election-timeout", "store Raft election timeout")
	f.Var(&fl.RequestTimeout, "request-timeout", "default bound on a request that needs a quorum")
	f.StringVar(&fl.LogLevel, "log-level", fl.LogLevel, "debug, info, warn or error")
	f.BoolVar(&fl.EnableExecChecks, "enable-exec-checks", false, "allow exec health checks (they run commands on this node)")
	f.StringToStringVar(&fl.Labels, "label", nil, "a node label for placement, like zone=a (repeat for more)")
	f.BoolVar(&fl.Workloads, "workloads", fl.Workloads, "run the service instances the scheduler places here (--workloads=false: none)")
	f.StringVar(&fl.WorkloadPorts, "workload-ports", fl.WorkloadPorts, "range of ports this node hands to its instances")
	f.StringVar(&fl.WorkloadUser, "workload-user", fl.WorkloadUser, "user that runs instances whose spec names no run.user (default: nobody when the agent runs as root, else the agent's user)")
	f.BoolVar(&fl.WorkloadAllowRoot, "workload-allow-root", fl.WorkloadAllowRoot, "let instances run as root (off: an instance that would run as root is refused on this node)")
	f.StringVar(&fl.DNSDomain, "dns-domain", fl.DNSDomain, "domain DNS answers for")
	f.IntVar(&fl.DNSTTL, "dns-ttl", fl.DNSTTL, "TTL of DNS answers, seconds")
	f.StringVar(&fl.ProxyTLSCert, "proxy-tls-cert", "", "PEM certificate: the HTTP proxy serves TLS (with --proxy-tls-key)")
	f.StringVar(&fl.ProxyTLSKey, "proxy-tls-key", "", "PEM private key of --proxy-tls-cert")
	f.StringVar(&fl.ProxyTLSDir, "proxy-tls-dir", "", "directory of NAME.crt + NAME.key pairs the HTTP proxy serves by SNI (TLS on; reloaded on change)")
	f.BoolVar(&fl.ProxyTLS, "proxy-tls", false, "HTTP proxy serves TLS with the certificates kept in the store (tandem cert put)")
	f.BoolVar(&fl.ProxyFastPath, "proxy-fast-path", false, "idle plain HTTP/1.1 proxy connections wait in an epoll loop (Linux; see docs/BENCHMARKS.md before turning it on)")
	f.BoolVar(&fl.Insecure, "insecure", false, "no TLS and no tokens: only for a throwaway cluster on loopback (warns on every start)")
	f.StringVar(&fl.TokenFile, "token-file", "", "file holding the join token to present with --join (tandem token create --role join)")
	f.BoolVar(&fl.PublicMetrics, "public-metrics", false, "serve GET /metrics and GET /v1/health without a token")
	f.Var(&fl.CertTTL, "cert-ttl", "lifetime of the node certificates this node signs (renewed at 2/3 of it)")
	return cmd
}

// AgentConfig returns the configuration `tandem agent` would run with for
// args (its flags, without "agent"), with the same layering. Test harnesses
// that run agents in-process use it so that flags mean the same there.
func AgentConfig(args []string) (config.Config, error) {
	var cfg config.Config
	cmd := agentCmd(func(_ *cobra.Command, c config.Config) error {
		cfg = c
		return nil
	})
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

// resolveAgentConfig layers defaults, the data dir's identity, the config
// file and explicitly set flags, lowest first.
func resolveAgentConfig(cmd *cobra.Command, fl config.Config, configFile string) (config.Config, error) {
	var fromFile *config.Config
	if configFile != "" {
		fh, err := os.Open(configFile)
		if err != nil {
			return config.Config{}, fmt.Errorf("open config file: %w", err)
		}
		defer fh.Close()
		c := config.Default()
		if err := c.Load(fh); err != nil {
			return config.Config{}, fmt.Errorf("%s: %w", configFile, err)
		}
		fromFile = &c
	}
	dataDir := config.Default().DataDir
	if fromFile != nil {
		dataDir = fromFile.DataDir
	}
	if cmd.Flags().Changed("data-dir") {
		dataDir = fl.DataDir
	}
	id, err := cluster.LoadIdentity(dataDir)
	if err != nil {
		return config.Config{}, err
	}

	cfg := config.Default()
	if id != nil {
		cfg.Name, cfg.Advertise, cfg.Bind = id.Name, id.Advertise, id.Bind
		cfg.APIPort, cfg.PeerPort, cfg.StorePort, cfg.DNSPort, cfg.ProxyPort = id.APIPort, id.PeerPort, id.StorePort, id.DNSPort, id.ProxyPort
	}
	if fromFile != nil {
		keep := cfg
		cfg = *fromFile
		if id != nil { // the file may not rename a node
			if cfg.Name != "" && cfg.Name != id.Name {
				return config.Config{}, fmt.Errorf("data dir %s belongs to node %q, but %s names it %q", dataDir, id.Name, configFile, cfg.Name)
			}
			cfg.Name = keep.Name
		}
	}
	cfg.DataDir = dataDir
	// Copy the flags given explicitly, through their JSON names (= flag names).
	all := map[string]json.RawMessage{}
	b, _ := json.Marshal(fl)
	_ = json.Unmarshal(b, &all)
	set := map[string]json.RawMessage{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if v, ok := all[f.Name]; ok {
			set[f.Name] = v
		}
	})
	b, _ = json.Marshal(set)
	if err := json.Unmarshal(b, &cfg); err != nil {
		return config.Config{}, err
	}
	if id != nil && cfg.Name != id.Name {
		return config.Config{}, fmt.Errorf("data dir %s belongs to node %q; it cannot be renamed to %q (use another --data-dir for a new node)", dataDir, id.Name, cfg.Name)
	}
	if cfg.Name == "" {
		cfg.Name = hostName()
	}
	return cfg, nil
}

// hostName turns the host name into a valid node name.
func hostName() string {
	h, _ := os.Hostname()
	h = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	h = regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(h, "-")
	h = strings.Trim(h, "-")
	if h == "" {
		h = "node"
	}
	return h
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
