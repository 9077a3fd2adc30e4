package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/demo"
)

func newDemoCmd() *cobra.Command { return demoCmd(os.Getenv) }

// demoCmd builds the demo command; getenv reads the environment (a map in
// tests).
func demoCmd(getenv func(string) string) *cobra.Command {
	cfg := demo.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a small HTTP service that answers with its instance id, node and a request counter",
		Long: `Run a small HTTP service, the one tandem up deploys as the service "demo":

  GET /            "demo instance ID on node NODE: request N" (N counts this
                   instance's requests); JSON with Accept: application/json
                   or ?format=json
  GET /healthz     200 "ok", or 503 once failing (see --fail-after)
  GET /slow?ms=N   sleeps N ms (default 1000, at most 10000), then answers as /

It prints "demo listening on ADDR" on stderr once it listens. On SIGTERM or
SIGINT it stops accepting connections, lets the requests in flight finish
(at most --shutdown-timeout) and exits 0; 1 if it had to cut requests off.`,
		Example: `  tandem demo --addr 127.0.0.1:0 --id a --node n1
  PORT=8081 tandem demo --fail-after 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := resolveDemoConfig(&cfg, getenv); err != nil {
				return usageError{err}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			s, err := demo.New(cfg, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "demo listening on %s\n", s.Addr())
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "", "host:port to listen on; port 0 picks a free one (default $TANDEM_ADDRESS:$PORT, else $TANDEM_ADDRESS:$TANDEM_PORT_HTTP, else 127.0.0.1:8080; $TANDEM_ADDRESS defaults to 127.0.0.1)")
	f.StringVar(&cfg.ID, "id", "", "instance id shown in answers (default $TANDEM_INSTANCE, else the host name and the pid, as host-1234)")
	f.StringVar(&cfg.Node, "node", "", "node name shown in answers (default $TANDEM_NODE, else the host name)")
	f.Int64Var(&cfg.FailAfter, "fail-after", cfg.FailAfter, "fail once N requests to / and /slow were counted (health checks are not): from then on they answer 500 and /healthz 503; 0 fails from the start, -1 never")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM, wait this long for the requests in flight before cutting them off")
	return cmd
}

// resolveDemoConfig fills what the flags left empty from the environment
// tandem's supervisor gives each instance, then from the host, and checks
// the flags.
func resolveDemoConfig(cfg *demo.Config, getenv func(string) string) error {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
		for _, env := range []string{"PORT", "TANDEM_PORT_HTTP"} {
			v := getenv(env)
			if v == "" {
				continue
			}
			if p, err := strconv.ParseUint(v, 10, 16); err != nil || p == 0 {
				return fmt.Errorf("environment variable %s=%q is not a port number: unset it or give --addr", env, v)
			}
			host := "127.0.0.1"
			if a := getenv("TANDEM_ADDRESS"); a != "" {
				host = a // the node's address: other nodes' proxies reach the instance there
			}
			cfg.Addr = net.JoinHostPort(host, v)
			break
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	if cfg.ID == "" {
		cfg.ID = getenv("TANDEM_INSTANCE")
	}
	if cfg.ID == "" {
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Node == "" {
		cfg.Node = getenv("TANDEM_NODE")
	}
	if cfg.Node == "" {
		cfg.Node = host
	}
	if cfg.FailAfter < -1 {
		return fmt.Errorf("--fail-after %d: want a count of requests, 0 to fail from the start, or -1 never to fail", cfg.FailAfter)
	}
	if cfg.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: want a positive duration, such as 10s", cfg.ShutdownTimeout)
	}
	return nil
}
