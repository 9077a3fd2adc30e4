package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/wire"
)

// printAllocations prints the instances tandem runs for a service.
func printAllocations(g *globals, allocs []wire.AllocationInfo) {
	var rows [][]string
	for _, a := range allocs {
		state, restarts, last, since := "pending", "0", "", ""
		if a.Status != nil {
			state, restarts, last, since = a.Status.State, strconv.Itoa(a.Status.Restarts), a.Status.LastExit, ago(a.Status.Since)
			if a.Status.Error != "" {
				last = a.Status.Error
			}
		}
		if a.Desired == wire.DesiredStop {
			state = "stopping: " + a.StopReason
		}
		rows = append(rows, []string{a.ID, a.Node, state, strconv.FormatInt(a.Generation, 10), restarts, short(last), since})
	}
	g.table([]string{"INSTANCE", "NODE", "STATE", "GEN", "RESTARTS", "LAST EXIT", "SINCE"}, rows)
}

func newDeployCmd(g *globals) *cobra.Command {
	var file string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "deploy -f FILE",
		Short: "Store the services of a YAML file and follow until tandem runs their instances",
		Long: `Store each service of FILE (the YAML of 'tandem service register', with a run
command, a count and the other workload fields of docs/WORKLOADS.md), then follow
the services tandem runs until each has count instances of the new spec running
and passing their health checks. A bad spec is refused whole, naming the field;
nothing is stored then.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageError{errors.New("give the file with -f FILE")}
			}
			f, err := readServiceFile(file)
			if err != nil {
				return fmt.Errorf("%w (nothing was stored)", err)
			}
			cl := g.client()
			var run []string
			for _, s := range f.Services {
				ctx, cancel := g.ctx(cmd.Context())
				err := cl.PutService(ctx, s.Service)
				cancel()
				if err != nil {
					return fmt.Errorf("service %s: %w", s.Name, err)
				}
				fmt.Fprintf(g.out, "stored service %s\n", s.Name)
				if s.Runs() {
					run = append(run, s.Name)
				}
			}
			if wait <= 0 {
				return nil
			}
			for _, name := range run {
				if err := followDeploy(cmd.Context(), g, name, wait); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file with a 'services:' list")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "follow the deployment this long (0: store and return)")
	return cmd
}

// followDeploy waits until service name runs its count instances of its
// current generation, all passing, printing progress when it changes.
func followDeploy(ctx context.Context, g *globals, name string, wait time.Duration) error {
	start := time.Now()
	deadline := start.Add(wait)
	last := ""
	var deployed int64 // the generation this deploy made, once read
	for {
		rctx, cancel := g.ctx(ctx)
		d, err := g.client().Service(rctx, name)
		cancel()
		var line string
		done := false
		if err != nil {
			line = "(asking for progress: " + err.Error() + ")"
		} else {
			if deployed == 0 {
				deployed = d.Spec.Generation
			}
			if rb := d.RolledBack; rb != nil && rb.From == deployed {
				return fmt.Errorf("service %s: the update to generation %d got stuck (%s), and tandem rolled it back: the spec of generation %d runs again, as generation %d", name, rb.From, rb.Reason, rb.Back, rb.To)
			}
			line, done = deployProgress(d)
			if err := stuck(d); err != nil {
				return err
			}
		}
		if line != last {
			fmt.Fprintf(g.out, "%6.1fs  %s: %s\n", time.Since(start).Seconds(), name, line)
			last = line
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s is not fully running after %s (%s); 'tandem service show %s' says why", name, wait, line, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// deployProgress summarises a service's instances of its current
// generation, and reports whether all count of them pass.
func deployProgress(d *wire.ServiceDetail) (string, bool) {
	gen := d.Spec.Generation
	health := map[string]string{}
	for _, in := range d.Instances {
		health[in.ID] = in.Status
	}
	var running, passing, old, failed int
	var why []string
	for _, a := range d.Allocations {
		if a.Desired != wire.DesiredRun {
			continue
		}
		if a.Generation != gen {
			old++
			continue
		}
		if a.Status != nil && a.Status.State == wire.AllocRunning {
			running++
		}
		if a.Status != nil && a.Status.State == wire.AllocFailed {
			failed++
			why = append(why, a.ID+": "+a.Status.Error+" "+a.Status.LastExit)
		}
		if health[a.ID] == registry.Passing {
			passing++
		}
	}
	want := d.Spec.Count
	line := fmt.Sprintf("%d/%d running, %d passing", running, want, passing)
	if old > 0 {
		line += fmt.Sprintf(", %d of an older generation", old)
	}
	if failed > 0 {
		line += fmt.Sprintf(", %d failed (%s)", failed, strings.Join(why, "; "))
	}
	return line, passing == want && old == 0
}

// stuck reports a rolling update of the service's current generation
// that cannot go on.
func stuck(d *wire.ServiceDetail) error {
	for _, st := range d.Stuck {
		if st.Generation == d.Spec.Generation {
			return fmt.Errorf("service %s: the update to generation %d is stuck: %s; the old instances keep serving; with update.auto_rollback off, deploy the previous spec again to roll back", d.Spec.Name, st.Generation, st.Reason)
		}
	}
	return nil
}

func newScaleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "scale SERVICE COUNT",
		Short: "Set how many instances of a service tandem runs",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 0 {
				return usageError{fmt.Errorf("COUNT %q: want a number, 0 or more", args[1])}
			}
			return scale(cmd.Context(), g, args[0], n)
		},
	}
}

func newStopCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stop SERVICE",
		Short: "Stop every instance of a service tandem runs (its count becomes 0; the spec stays)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return scale(cmd.Context(), g, args[0], 0)
		},
	}
}

func scale(ctx context.Context, g *globals, name string, n int) error {
	rctx, cancel := g.ctx(ctx)
	defer cancel()
	s, err := g.client().Scale(rctx, name, n)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(s)
	}
	fmt.Fprintf(g.out, "%s: count %d\n", name, s.Count)
	return nil
}
