// Package cli builds tandem's command line: one file per subcommand.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
)

// globals are the flags every client command shares.
type globals struct {
	addrs   []string
	json    bool
	timeout time.Duration
	out     io.Writer
}

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(os.Stdout)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

func newRoot(out io.Writer) *cobra.Command {
	g := &globals{out: out}
	root := &cobra.Command{
		Use:           "tandem",
		Short:         "Run services with no single point of failure",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	def := os.Getenv("TANDEM_ADDR")
	if def == "" {
		def = "127.0.0.1:7400"
	}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&g.addrs, "addr", strings.Split(def, ","), "API addresses of nodes to talk to, tried in turn (env TANDEM_ADDR)")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of a table")
	pf.DurationVar(&g.timeout, "timeout", 0, "bound each request (default: the node's request timeout, 3s)")
	root.AddCommand(
		newAgentCmd(),
		newUpCmd(g),
		newKVCmd(g),
		newMembersCmd(g),
		newStatusCmd(g),
		newEventsCmd(g),
		newLeaveCmd(g),
		newNodeCmd(g),
		newServiceCmd(g),
	)
	return root
}

func (g *globals) client() *client.Client { return client.New(g.addrs) }

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
