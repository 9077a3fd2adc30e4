package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The cluster CA: show it, print its bundle, rotate it",
		Long: `The cluster CA signs every node's certificate. 'tandem ca rotate' replaces it
with a new one, adding before removing: every node (and store member) first
trusts the new CA, then every node takes a certificate from it, then every node
stops trusting the old one. See docs/SECURITY.md, "Rotating the CA".`,
	}

	// show runs a command that prints the CA status with print.
	show := func(use, short string, print func(wire.CAStatus) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := g.ctx(cmd.Context())
				defer cancel()
				st, err := g.client().CA(ctx)
				if err != nil {
					return err
				}
				return print(st)
			},
		}
	}
	status := show("status", "Show the CAs a node trusts and the last rotation's progress", func(st wire.CAStatus) error {
		if g.json {
			return g.printJSON(st)
		}
		printCAStatus(g, st)
		return nil
	})
	bundle := show("bundle", "Print the trust bundle (PEM), for a client's --ca file", func(st wire.CAStatus) error {
		_, err := fmt.Fprint(g.out, st.Bundle)
		return err
	})

	var wait time.Duration
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the cluster CA (admin), and follow the rotation until it is done",
		Long: `Start a CA rotation and follow it until every node has done each phase:
trust (every node trusts the new CA; store members restart one at a time),
issue (every node takes a certificate from the new CA) and retire (every node
stops trusting the old CA; store members restart again). The cluster keeps
serving throughout. A node that is down holds the rotation at its phase until
it comes back or is removed ('tandem node remove'); the rotation goes on by
itself, with or without this command: --wait 0 returns at once.

Clients' --ca files must hold the new CA before the issue phase ends: print it
with 'tandem ca bundle'. Join tokens made before the rotation stop working.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			st, err := g.client().RotateCA(ctx)
			cancel()
			var ce *client.Error
			switch {
			case errors.As(err, &ce) && ce.Status == http.StatusConflict && strings.Contains(ce.Error(), "in progress"):
				fmt.Fprintln(g.out, "a rotation is in progress already; following it")
				ctx, cancel := g.ctx(cmd.Context())
				st, err = g.client().CA(ctx)
				cancel()
				if err != nil {
					return err
				}
			case err != nil:
				return err
			default:
				fmt.Fprintf(g.out, "rotation %s started: new CA %s\n", st.Rotation.ID, pinOf(st.Rotation.NewCA))
			}
			if st.Rotation == nil {
				return errors.New("the node answered without a rotation; run 'tandem ca status'")
			}
			if wait <= 0 {
				return nil
			}
			return followRotation(cmd.Context(), g, st.Rotation, wait)
		},
	}
	rotate.Flags().DurationVar(&wait, "wait", 10*time.Minute, "follow the rotation this long (0: start it and return)")

	cmd.AddCommand(status, bundle, rotate)
	return cmd
}

// followRotation polls the rotation until it is done or wait passes,
// printing each phase change. The client trusts the new CA from the start,
// since the nodes present certificates from it after the issue phase (the
// new CA came over a connection verified with the old one).
func followRotation(ctx context.Context, g *globals, rot *wire.CARotation, wait time.Duration) error {
	cl := g.client()
	if g.opts != nil && g.opts.TLS != nil {
		o := *g.opts
		o.TLS = o.TLS.Clone()
		o.TLS.RootCAs = o.TLS.RootCAs.Clone()
		if !o.TLS.RootCAs.AppendCertsFromPEM([]byte(rot.NewCA)) {
			return errors.New("the rotation's new CA certificate is not PEM")
		}
		cl = client.NewWithOptions(g.addrs, o)
	}
	deadline := time.Now().Add(wait)
	phase, pending := "", ""
	start := time.Now()
	for {
		rctx, cancel := g.ctx(ctx)
		st, err := cl.CA(rctx)
		cancel()
		switch {
		case err != nil:
			fmt.Fprintf(g.out, "  (asking for progress: %v)\n", err)
		case st.Rotation == nil || st.Rotation.ID != rot.ID:
			return errors.New("another rotation replaced this one; run 'tandem ca status'")
		default:
			r := st.Rotation
			if r.Phase != phase {
				phase = r.Phase
				fmt.Fprintf(g.out, "%6.1fs  phase %s\n", time.Since(start).Seconds(), phase)
			}
			if r.Phase == wire.CAPhaseDone {
				fmt.Fprintf(g.out, "done: the cluster trusts only the new CA %s\n", pinOf(r.NewCA))
				updateCAFile(g, st.Bundle)
				return nil
			}
			if p := strings.Join(st.Pending, ", "); p != pending && p != "" {
				pending = p
				fmt.Fprintf(g.out, "          waiting for: %s\n", p)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the rotation is not done after %s (phase %s, waiting for %s); it goes on by itself: follow it with 'tandem ca status'", wait, phase, pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// updateCAFile writes the cluster's new trust bundle over the CA file
// this command was given (--ca or TANDEM_CA), which trusts only the old CA,
// so that the next command works; it says what it did.
func updateCAFile(g *globals, bundle string) {
	path := g.creds.caPath()
	if path == "" || bundle == "" {
		return
	}
	if err := pki.WriteFileAtomic(path, []byte(bundle), 0o644); err != nil {
		fmt.Fprintf(g.out, "could not update %s with the new CA (%v): other clients and this one need it; write it with 'tandem ca bundle > FILE' using a CA file that holds the new CA, or copy <data-dir>/tls/ca.crt from any node\n", path, err)
		return
	}
	fmt.Fprintf(g.out, "updated %s with the new CA; copy it to the cluster's other clients\n", path)
}

// pinOf is the pin of a PEM CA certificate, or "?".
func pinOf(certPEM string) string {
	certs, err := pki.ParseCerts([]byte(certPEM))
	if err != nil || len(certs) == 0 {
		return "?"
	}
	return pki.Pin(certs[0])
}

func printCAStatus(g *globals, st wire.CAStatus) {
	var rows [][]string
	for _, c := range st.CAs {
		signing := ""
		if c.Signing {
			signing = "yes"
		}
		rows = append(rows, []string{c.Subject, c.Pin, c.NotAfter.Format("2006-01-02"), signing})
	}
	g.table([]string{"CA", "PIN", "EXPIRES", "SIGNS"}, rows)
	r := st.Rotation
	if r == nil {
		fmt.Fprintln(g.out, "\nno CA rotation yet")
		return
	}
	fmt.Fprintf(g.out, "\nrotation %s: phase %s (since %s), started %s by %s\n", r.ID, r.Phase,
		r.Changed.Format(time.RFC3339), r.Started.Format(time.RFC3339), r.StartedBy)
	if r.Phase != wire.CAPhaseDone {
		fmt.Fprintf(g.out, "  done:    %s\n  pending: %s\n", strings.Join(st.Done, ", "), strings.Join(st.Pending, ", "))
	}
}
