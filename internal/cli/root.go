// Package cli builds tandem's command line: one file per subcommand.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
)

// Exit codes of every command (docs/API.md, "Exit codes").
const (
	ExitOK          = 0 // done
	ExitError       = 1 // the node answered with an error (refused, conflict, no quorum, 401/403, a TLS mismatch...)
	ExitUsage       = 2 // bad command, flag or argument: nothing was sent
	ExitNotFound    = 3 // the key, service, instance or node does not exist (HTTP 404)
	ExitUnreachable = 4 // no node answered (connection refused, timeout)
)

// globals are the flags every client command shares.
type globals struct {
	addrs   []string
	json    bool
	timeout time.Duration
	out     io.Writer
	creds   credentials
	// cl is the client built from the flags before a client command runs,
	// with opts (nil: insecure).
	cl   *client.Client
	opts *client.Options
}

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	root, g := newRoot(os.Stdout)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if g.json || (code == ExitUsage && hasJSONFlag(args)) {
		_ = g.printJSON(struct {
			Error    string `json:"error"`
			ExitCode int    `json:"exit_code"`
		}{err.Error(), code})
	} else {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	return code
}

// hasJSONFlag reports whether --json was given, for errors raised before
// the flags were parsed.
func hasJSONFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// usageError is a bad command, flag or argument.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return ExitUsage
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		if ce.Status == 404 {
			return ExitNotFound
		}
		return ExitError
	}
	var te *client.TLSError
	if errors.As(err, &te) {
		return ExitError // a node answered, with a certificate or protocol we refuse
	}
	var ne net.Error
	var ue2 *url.Error
	if errors.As(err, &ue2) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return ExitUnreachable
	}
	return ExitError
}

func newRoot(out io.Writer) (*cobra.Command, *globals) {
	g := &globals{out: out}
	root := &cobra.Command{
		Use:           "tandem",
		Short:         "Run services with no single point of failure",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetVersionTemplate("tandem {{.Version}}\n")
	root.AddCommand(
		newAgentCmd(),
		newUpCmd(g),
		newVersionCmd(g),
		clientCmd(g, newKVCmd(g)),
		clientCmd(g, newMembersCmd(g)),
		clientCmd(g, newStatusCmd(g)),
		clientCmd(g, newEventsCmd(g)),
		clientCmd(g, newLeaveCmd(g)),
		clientCmd(g, newNodeCmd(g)),
		clientCmd(g, newCertCmd(g)),
		clientCmd(g, newCACmd(g)),
		clientCmd(g, newDeployCmd(g)),
		clientCmd(g, newScaleCmd(g)),
		clientCmd(g, newStopCmd(g)),
		newDemoCmd(),
		clientCmd(g, newServiceCmd(g)),
		clientCmd(g, newTokenCmd(g)),
	)
	markUsageErrors(root)
	return root, g
}

// clientCmd gives a command that talks to a cluster (and its subcommands)
// the client flags: --addr, --json, --timeout and the credentials (--ca,
// --token, --token-file, --insecure), which are checked before the command
// runs. Agents and `up` do not take them.
func clientCmd(g *globals, cmd *cobra.Command) *cobra.Command {
	def := os.Getenv("TANDEM_ADDR")
	if def == "" {
		def = "127.0.0.1:7400"
	}
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&g.addrs, "addr", strings.Split(def, ","), "API addresses of nodes to talk to, tried in turn (env TANDEM_ADDR)")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of a table (errors too)")
	pf.DurationVar(&g.timeout, "timeout", 0, "bound each request (default: the node's request timeout, 3s)")
	g.creds.addFlags(cmd)
	cmd.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		o, err := g.creds.options(c.Flags().Changed, os.Getenv)
		if err != nil {
			return err
		}
		g.opts = o
		if o == nil {
			g.cl = client.New(g.addrs)
		} else {
			g.cl = client.NewWithOptions(g.addrs, *o)
		}
		return nil
	}
	return cmd
}

// markUsageErrors makes flag and argument errors of every command usage
// errors (exit code 2) with messages that name the flag and what it wants.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{flagError(err)}
	})
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return usageError{fmt.Errorf("%w (see tandem %s --help)", err, c.CommandPath()[len("tandem "):])}
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		markUsageErrors(c)
	}
}

// client is the client built from the flags (clientCmd); commands call it
// only after the flags were checked.
func (g *globals) client() *client.Client { return g.cl }

// ctx bounds a request by --timeout plus a margin for the node to answer.
func (g *globals) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	d := 10 * time.Second
	if g.timeout > 0 {
		d = g.timeout + 2*time.Second
	}
	return context.WithTimeout(parent, d)
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns.
func (g *globals) table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// ago renders how long ago t was, for people.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}
