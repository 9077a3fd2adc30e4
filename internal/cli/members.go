package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tandemhq/tandem/internal/wire"
)

func newMembersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the cluster's nodes: role, store leader, liveness, addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			res, err := g.client().Members(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			if res.Stale {
				g.staleNote(res.LastContactMs, "STATE is what it reached itself just now")
			}
			var rows [][]string
			for _, m := range res.Members {
				leader, state, seen := "", "dead", ago(m.LastSeen)
				if m.Leader {
					leader = "*"
				}
				if m.Alive {
					state, seen = "alive", "now"
				}
				switch m.Reach {
				case wire.ReachSelf:
					state = "alive (answering)"
				case wire.ReachReachable, wire.ReachUnreachable, wire.ReachUnknown:
					state = m.Reach
				}
				rows = append(rows, []string{m.Name, m.Role, leader, state, seen, m.API, m.PeerURL, m.DNS, m.Proxy})
			}
			g.table([]string{"NAME", "ROLE", "LEADER", "STATE", "LAST SEEN", "API", "PEER", "DNS", "PROXY"}, rows)
			return nil
		},
	}
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The cluster at a glance: quorum, fault tolerance, leader, autopilot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			st, err := g.client().Status(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			ft := fmt.Sprintf("%d node", st.FaultTolerance)
			if st.FaultTolerance != 1 {
				ft += "s"
			}
			if st.FaultTolerance < 0 {
				ft = "none: NO QUORUM, writes and linearizable reads fail"
			}
			leader := st.Leader
			if leader == "" {
				leader = "(none)"
			}
			nodes := fmt.Sprintf("%d alive of %d", st.NodesAlive, st.Nodes)
			if st.Stale {
				g.staleNote(st.LastContactMs, "alive counts only what it reached itself just now")
				leader = "(none known to " + st.Node + ")"
				nodes = fmt.Sprintf("%d reached of %d", st.NodesAlive, st.Nodes)
			}
			autopilot := st.Autopilot
			if autopilot == "" {
				autopilot = "(none known)"
			}
			lines := [][2]string{
				{"voters", fmt.Sprintf("%d alive of %d (target %d), %d needed for quorum", st.VotersAlive, st.Voters, st.TargetVoters, st.Quorum)},
				{"fault tolerance", ft},
				{"nodes", nodes},
				{"store leader", leader},
				{"term", fmt.Sprint(st.Term)},
				{"applied index", fmt.Sprint(st.AppliedIndex)},
				{"revision", fmt.Sprint(st.Revision)},
				{"store size", sizeOf(st.StoreSizeBytes)},
				{"autopilot", autopilot},
				{"answered by", st.Node},
			}
			var rows [][]string
			for _, l := range lines {
				rows = append(rows, []string{l[0] + ":", l[1]})
			}
			g.table([]string{"CLUSTER", ""}, rows)
			return nil
		},
	}
}

// sizeOf prints a size in bytes for people: KiB under 1 MiB, else MiB.
func sizeOf(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// staleNote heads a stale answer: the answering node could not confirm it
// with a quorum, and its copy may be lastContactMs old.
func (g *globals) staleNote(lastContactMs *int64, alive string) {
	age := "never"
	if lastContactMs != nil {
		age = (time.Duration(*lastContactMs) * time.Millisecond).Round(100*time.Millisecond).String() + " ago"
	}
	fmt.Fprintf(g.out, "STALE: no quorum confirmed this answer (the answering node is cut off, or the store has no leader); it is that node's own copy, store leader last heard %s; %s\n\n", age, alive)
}

func newEventsCmd(g *globals) *cobra.Command {
	var follow bool
	var limit int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the cluster's recent events (leader changes, nodes up and down, voters replaced)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			evs, rev, err := g.client().Events(ctx, limit)
			cancel()
			if err != nil {
				return err
			}
			for _, e := range evs {
				if err := g.printEvent(e); err != nil {
					return err
				}
			}
			if !follow {
				return nil
			}
			return g.client().WatchEvents(cmd.Context(), rev+1, g.printEvent)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().IntVar(&limit, "limit", 20, "how many past events to show")
	return cmd
}

func (g *globals) printEvent(e wire.Event) error {
	if g.json {
		return g.printJSON(e)
	}
	fmt.Fprintf(g.out, "%s  %-15s %s\n", e.Time.Local().Format("15:04:05.000"), e.Type, e.Message)
	return nil
}

func newLeaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Make the node at --addr leave the cluster cleanly (hands over store leadership first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(g.addrs) != 1 {
				return fmt.Errorf("leave acts on one node: give exactly one --addr (got %s)", strings.Join(g.addrs, ","))
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().Leave(ctx); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "node at %s left the cluster\n", g.addrs[0])
			return nil
		},
	}
}

func newNodeCmd(g *globals) *cobra.Command {
	node := &cobra.Command{Use: "node", Short: "Manage nodes"}
	node.AddCommand(&cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a dead node from the cluster (store membership and record)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().RemoveNode(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "removed %s\n", args[0])
			return nil
		},
	})
	return node
}
