package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/wire"
)

// tokenRoles are the roles a token may have (docs/API.md, "Authentication").
var tokenRoles = []string{"admin", "operator", "read", "join"}

func newTokenCmd(g *globals) *cobra.Command {
	tok := &cobra.Command{Use: "token", Short: "Create, list and revoke API and join tokens (admin)"}
	var req wire.TokenRequest
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --role admin|operator|read|join",
		Short: "Create a token; only the token goes to standard output, the details to standard error",
		Long: `Create a token and print it, alone, on standard output, so that
'tandem token create --role join --ttl 1h > join.token' writes a file a new
node can use (tandem agent --join ADDR --token-file join.token). The cluster
keeps only the token's hash: it is shown this once. The details (id, role,
expiry) go to standard error; --json prints both as JSON on standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Role == "" {
				return usageError{fmt.Errorf("give --role: one of %s (see tandem token create --help)", strings.Join(tokenRoles, ", "))}
			}
			if !slices.Contains(tokenRoles, req.Role) {
				return usageError{fmt.Errorf("--role %q: want one of %s", req.Role, strings.Join(tokenRoles, ", "))}
			}
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl %s: want a positive duration such as 1h or 720h", ttl)}
			}
			r := req
			if ttl > 0 {
				r.TTL = ttl.String()
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().CreateToken(ctx, r)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			fmt.Fprintln(g.out, res.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s token %s%s, %s; it is shown only this once (the cluster keeps its hash); revoke it with: tandem token revoke %s\n",
				res.Info.Role, res.Info.ID, tokenScope(res.Info), expiryNote(res.Info.Expires), res.Info.ID)
			return nil
		},
	}
	create.Flags().StringVar(&req.Role, "role", "", "admin (everything), operator (services and KV), read (reads only) or join (lets a new node join)")
	create.Flags().StringVar(&req.Name, "name", "", "who or what the token is for, shown by 'token ls'")
	create.Flags().StringVar(&req.Prefix, "prefix", "", "limit the token to KV keys under this prefix")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the token is valid, like 24h (default: no expiry; join tokens 24h)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Tokens(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			var rows [][]string
			for _, t := range res.Tokens {
				rows = append(rows, []string{t.ID, dash(t.Name), t.Role, dash(t.Prefix), ago(t.Created), expiry(t.Expires), dash(t.CreatedBy)})
			}
			g.table([]string{"ID", "NAME", "ROLE", "PREFIX", "CREATED", "EXPIRES", "CREATED-BY"}, rows)
			return nil
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: it stops working on every node within a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := tokenID(args[0])
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().RevokeToken(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "revoked %s\n", id)
			return nil
		},
	}
	tok.AddCommand(create, ls, revoke)
	return tok
}

// tokenID takes an id, or a whole token (tdm1.ID.SECRET[.PIN]) and returns
// its id, so that a leaked token can be revoked as it was found.
func tokenID(s string) string {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) >= 3 && parts[0] == "tdm1" {
		return parts[1]
	}
	return strings.TrimSpace(s)
}

// tokenScope describes a token's name and prefix for people.
func tokenScope(t wire.TokenInfo) string {
	s := ""
	if t.Name != "" {
		s += fmt.Sprintf(" (%s)", t.Name)
	}
	if t.Prefix != "" {
		s += fmt.Sprintf(", KV keys under %q only", t.Prefix)
	}
	return s
}

// expiry renders when a token expires, for the EXPIRES column.
func expiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Until(t).Round(time.Second)
	if d <= 0 {
		return "expired " + (-d).String() + " ago"
	}
	return "in " + d.String()
}

// expiryNote is expiry in a sentence.
func expiryNote(t time.Time) string {
	if t.IsZero() {
		return "no expiry"
	}
	if time.Until(t) <= 0 {
		return expiry(t)
	}
	return "expires " + expiry(t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
