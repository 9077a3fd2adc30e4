package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func newCertCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Service certificates the proxies serve by SNI (kept in the store)",
		Long: `Service certificates the proxies serve by SNI. Every node's proxy serves them
when it runs with TLS (--proxy-tls, --proxy-tls-dir or --proxy-tls-cert), for
the DNS names in each certificate. Their private keys are kept in the store in
clear, readable by every node: see docs/SECURITY.md, "Service certificates".
Uploading and deleting need an admin token.`,
	}

	var certFile, keyFile string
	put := &cobra.Command{
		Use:   "put NAME --cert FILE --key FILE",
		Short: "Store (or replace) a certificate and its key under NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if certFile == "" || keyFile == "" {
				return usageError{errors.New("give the PEM files with --cert FILE --key FILE")}
			}
			certPEM, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			keyPEM, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			info, err := g.client().PutCert(ctx, args[0], certPEM, keyPEM)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(info)
			}
			fmt.Fprintf(g.out, "stored certificate %s for %s, expires %s\n", info.Name, strings.Join(info.SANs, ", "), info.NotAfter.Format("2006-01-02"))
			return nil
		},
	}
	put.Flags().StringVar(&certFile, "cert", "", "PEM certificate chain, the server's certificate first")
	put.Flags().StringVar(&keyFile, "key", "", "PEM private key of the certificate")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the service certificates (never their keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Certs(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			var rows [][]string
			for _, c := range res.Certs {
				expires := c.NotAfter.Format("2006-01-02 15:04")
				if c.Error != "" {
					expires = "skipped: " + c.Error
				}
				rows = append(rows, []string{c.Name, strings.Join(c.SANs, ","), expires, c.Fingerprint})
			}
			g.table([]string{"NAME", "SANS", "EXPIRES", "FINGERPRINT"}, rows)
			return nil
		},
	}

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a service certificate: no proxy serves it any more",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().DeleteCert(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "deleted certificate %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(put, ls, rm)
	return cmd
}
