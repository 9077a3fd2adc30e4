package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/wire"
)

func newKVCmd(g *globals) *cobra.Command {
	kv := &cobra.Command{Use: "kv", Short: "Read and write the cluster's key-value store"}
	var stale bool
	var cas int64 = -1
	var prefix, keysOnly bool
	var rev int64
	var requestID string

	// Every write carries a request id (a fresh random one unless
	// --request-id gives it), so the client may resend it to the next
	// --addr node when the first fails mid-request without applying it
	// twice, and a script may rerun a command whose outcome it did not see.
	casOpt := func() (client.WriteOptions, error) {
		o := client.WriteOptions{Timeout: g.timeout, Prefix: prefix, RequestID: requestID}
		if cas >= 0 {
			o.CAS = &cas
		}
		if o.RequestID == "" {
			b := make([]byte, 16)
			if _, err := rand.Read(b); err != nil {
				return o, err
			}
			o.RequestID = "cli-" + hex.EncodeToString(b)
		}
		return o, nil
	}

	put := &cobra.Command{
		Use:   "put KEY [VALUE|-]",
		Short: "Write a key (VALUE '-' or absent reads standard input)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			if len(args) == 2 && args[1] != "-" {
				value = []byte(args[1])
			} else {
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				value = b
			}
			o, err := casOpt()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Put(ctx, args[0], value, o)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			if res.Replayed {
				fmt.Fprintf(g.out, "OK revision %d (applied earlier by a request with this id; not applied again)\n", res.Revision)
				return nil
			}
			fmt.Fprintf(g.out, "OK revision %d\n", res.Revision)
			return nil
		},
	}
	put.Flags().Int64Var(&cas, "cas", -1, "write only if the key's mod revision is this (0: only if absent)")
	put.Flags().StringVar(&requestID, "request-id", "", "apply this write at most once per ID, for 10 minutes (default: a new random ID)")

	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key and print its value",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Get(ctx, args[0], client.ReadOptions{Stale: stale, Timeout: g.timeout})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			_, err = g.out.Write(res.Bytes())
			if err == nil && len(res.Bytes()) > 0 && res.Bytes()[len(res.Bytes())-1] != '\n' {
				fmt.Fprintln(g.out)
			}
			if stale && res.LastContactMs != nil {
				fmt.Fprintf(os.Stderr, "(stale read: revision %d, leader last heard %dms ago)\n", res.Revision, *res.LastContactMs)
			}
			return err
		},
	}
	get.Flags().BoolVar(&stale, "stale", false, "answer from the node's own copy, without a quorum")

	del := &cobra.Command{
		Use:   "del KEY",
		Short: "Delete a key (or every key under it with --prefix)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := casOpt()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Delete(ctx, args[0], o)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			if res.Replayed {
				fmt.Fprintf(g.out, "deleted at revision %d (applied earlier by a request with this id; not applied again)\n", res.Revision)
				return nil
			}
			fmt.Fprintf(g.out, "deleted %d at revision %d\n", res.Deleted, res.Revision)
			return nil
		},
	}
	del.Flags().BoolVar(&prefix, "prefix", false, "delete every key under KEY")
	del.Flags().Int64Var(&cas, "cas", -1, "delete only if the key's mod revision is this")
	del.Flags().StringVar(&requestID, "request-id", "", "apply this delete at most once per ID, for 10 minutes (default: a new random ID)")

	ls := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List keys under a prefix",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := ""
			if len(args) == 1 {
				p = args[0]
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().List(ctx, p, keysOnly, client.ReadOptions{Stale: stale, Timeout: g.timeout})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			rows := make([][]string, 0, len(res.Items))
			for _, kv := range res.Items {
				rows = append(rows, []string{kv.Key, strconv.FormatInt(kv.ModRevision, 10), short(string(kv.Bytes()))})
			}
			g.table([]string{"KEY", "MOD_REVISION", "VALUE"}, rows)
			return nil
		},
	}
	ls.Flags().BoolVar(&stale, "stale", false, "answer from the node's own copy, without a quorum")
	ls.Flags().BoolVar(&keysOnly, "keys", false, "list keys only")

	watch := &cobra.Command{
		Use:   "watch KEY",
		Short: "Print changes to a key (or keys under it with --prefix) as they happen",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.client().Watch(cmd.Context(), args[0], prefix, rev, func(ev wire.WatchEvent) error {
				if g.json {
					return g.printJSON(ev)
				}
				val := ""
				if ev.KV != nil && ev.Type == "put" {
					val = string(ev.KV.Bytes())
				}
				fmt.Fprintf(g.out, "%d %s %s %s\n", ev.Revision, strings.ToUpper(ev.Type), ev.KV.Key, val)
				return nil
			})
		},
	}
	watch.Flags().BoolVar(&prefix, "prefix", false, "watch every key under KEY")
	watch.Flags().Int64Var(&rev, "rev", 0, "start from this revision (replays history since)")

	kv.AddCommand(put, get, del, ls, watch)
	return kv
}

func short(s string) string {
	s = strings.ReplaceAll(s, "\n", `\n`)
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
