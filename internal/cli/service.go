package cli

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
)

// ServiceFile is the YAML read by 'tandem service register -f'.
type ServiceFile struct {
	Services []FileService `json:"services"`
}

// FileService is a service's spec with the instances to register.
type FileService struct {
	registry.Service `json:",inline"`
	Instances        []registry.Instance `json:"instances,omitempty"`
}

// LoadServiceFile parses and checks a service file. Exec checks are allowed
// here; the node that receives them decides.
func LoadServiceFile(data []byte) (*ServiceFile, error) {
	var f ServiceFile
	if err := config.UnmarshalYAML(data, &f); err != nil {
		return nil, err
	}
	if len(f.Services) == 0 {
		return nil, errors.New("no services: the file needs a 'services:' list")
	}
	rules := registry.Rules{AllowExec: true}
	var errs []error
	for i := range f.Services {
		s := &f.Services[i]
		if err := s.Service.Validate(rules); err != nil {
			errs = append(errs, fmt.Errorf("service %d (%s): %w", i+1, s.Name, err))
		}
		for j := range s.Instances {
			in := &s.Instances[j]
			if in.Service == "" {
				in.Service = s.Name
			}
			if in.Service != s.Name {
				errs = append(errs, fmt.Errorf("service %s, instance %d: it names service %q", s.Name, j+1, in.Service))
			}
			if err := in.Validate(rules); err != nil {
				errs = append(errs, fmt.Errorf("service %s, instance %d (%s): %w", s.Name, j+1, in.ID, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &f, nil
}

// readServiceFile reads and checks the service file of -f FILE.
func readServiceFile(file string) (*ServiceFile, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	f, err := LoadServiceFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return f, nil
}

func newServiceCmd(g *globals) *cobra.Command {
	svc := &cobra.Command{Use: "service", Short: "Register, inspect and watch services and their instances"}

	var file string
	register := &cobra.Command{
		Use:   "register -f FILE",
		Short: "Register the services and instances in a YAML file (owned by the node that answers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("give the file with -f FILE")
			}
			f, err := readServiceFile(file)
			if err != nil {
				return fmt.Errorf("%w (nothing was registered)", err)
			}
			cl := g.client()
			for _, s := range f.Services {
				ctx, cancel := g.ctx(cmd.Context())
				err := cl.PutService(ctx, s.Service)
				cancel()
				if err != nil {
					return fmt.Errorf("service %s: %w", s.Name, err)
				}
				for _, in := range s.Instances {
					ctx, cancel := g.ctx(cmd.Context())
					got, err := cl.Register(ctx, in)
					cancel()
					if err != nil {
						return fmt.Errorf("instance %s of %s: %w", in.ID, s.Name, err)
					}
					fmt.Fprintf(g.out, "registered %s/%s on %s\n", s.Name, got.ID, got.Node)
				}
				if len(s.Instances) == 0 {
					fmt.Fprintf(g.out, "stored service %s\n", s.Name)
				}
			}
			return nil
		},
	}
	register.Flags().StringVarP(&file, "file", "f", "", "YAML file with a 'services:' list")

	deregister := &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Remove an instance everywhere",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().Deregister(ctx, args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "deregistered %s/%s\n", args[0], args[1])
			return nil
		},
	}

	var withInstances bool
	del := &cobra.Command{
		Use:     "delete SERVICE",
		Aliases: []string{"rm"},
		Short:   "Delete a service: its spec, and with --instances its instances too",
		Long: `Delete a service's spec (checks, balancing, ports), so that 'service ls' no
longer lists it. A service that still has instances is refused, naming them,
unless --instances is given: then every instance is deregistered first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			cl := g.client()
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			d, err := cl.Service(ctx, name)
			if err != nil {
				return err
			}
			if len(d.Instances) > 0 && !withInstances {
				ids := make([]string, 0, len(d.Instances))
				for _, in := range d.Instances {
					ids = append(ids, in.ID)
				}
				return fmt.Errorf("service %s still has %d instance(s) (%s): deregister them first, or give --instances to deregister them with the service",
					name, len(ids), strings.Join(ids, ", "))
			}
			for _, in := range d.Instances {
				if err := cl.Deregister(ctx, name, in.ID); err != nil && !client.IsStatus(err, http.StatusNotFound) {
					return fmt.Errorf("deregister %s/%s: %w", name, in.ID, err)
				}
				fmt.Fprintf(g.out, "deregistered %s/%s\n", name, in.ID)
			}
			err = cl.DeleteService(ctx, name)
			if client.IsStatus(err, http.StatusNotFound) && len(d.Instances) > 0 {
				err = nil // instances without a stored spec: now gone too
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "deleted service %s\n", name)
			return nil
		},
	}
	del.Flags().BoolVar(&withInstances, "instances", false, "also deregister the service's instances")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List services with counts of passing, warning and critical instances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			cat, err := g.client().Services(ctx, 0, 0)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(cat)
			}
			var rows [][]string
			for _, s := range cat.Services {
				rows = append(rows, []string{s.Name, strconv.Itoa(s.Instances), strconv.Itoa(s.Passing), strconv.Itoa(s.Warning), strconv.Itoa(s.Critical)})
			}
			g.table([]string{"SERVICE", "INSTANCES", "PASSING", "WARNING", "CRITICAL"}, rows)
			return nil
		},
	}

	show := &cobra.Command{
		Use:   "show SERVICE",
		Short: "Show a service's instances: health, owner node, last check output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			d, err := g.client().Service(ctx, args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(d)
			}
			var rows [][]string
			for _, in := range d.Instances {
				rows = append(rows, []string{in.ID, fmt.Sprintf("%s:%d", in.Address, in.Port), in.Status, in.Node, strings.Join(in.Tags, ","), ago(in.Since), short(in.Output)})
			}
			g.table([]string{"ID", "ADDRESS", "HEALTH", "NODE", "TAGS", "SINCE", "OUTPUT"}, rows)
			if d.Spec.Runs() {
				fmt.Fprintf(g.out, "\nrun by tandem: count %d, generation %d\n", d.Spec.Count, d.Spec.Generation)
				printAllocations(g, d.Allocations)
				for _, u := range d.Unplaced {
					fmt.Fprintf(g.out, "not placed: %d: %s\n", u.Count, u.Reason)
				}
				for _, st := range d.Stuck {
					fmt.Fprintf(g.out, "update to generation %d stuck: %s\n", st.Generation, st.Reason)
				}
				if rb := d.RolledBack; rb != nil {
					fmt.Fprintf(g.out, "rolled back: the update to generation %d got stuck (%s); the spec of generation %d runs again as generation %d\n", rb.From, rb.Reason, rb.Back, rb.To)
				}
			}
			return nil
		},
	}

	watch := &cobra.Command{
		Use:   "watch",
		Short: "Print the service list each time the catalog changes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := g.client()
			index := int64(0)
			var last string
			for cmd.Context().Err() == nil {
				cat, err := cl.Services(cmd.Context(), index, 30*time.Second)
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					time.Sleep(500 * time.Millisecond)
					continue
				}
				index = cat.Index
				var b strings.Builder
				for _, s := range cat.Services {
					fmt.Fprintf(&b, "%s %d/%d passing, %d warning, %d critical; ", s.Name, s.Passing, s.Instances, s.Warning, s.Critical)
				}
				if b.String() != last {
					last = b.String()
					if g.json {
						_ = g.printJSON(cat)
					} else {
						fmt.Fprintf(g.out, "%s  index %d: %s\n", time.Now().Format("15:04:05.000"), cat.Index, strings.TrimSuffix(last, "; "))
					}
				}
			}
			return nil
		},
	}

	var status, output string
	ttl := &cobra.Command{
		Use:   "ttl SERVICE ID",
		Short: "Renew an instance's TTL check",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			return g.client().RenewTTL(ctx, args[0], args[1], status, output)
		},
	}
	ttl.Flags().StringVar(&status, "status", "passing", "passing, warning or critical")
	ttl.Flags().StringVar(&output, "output", "", "text shown as the check's output")

	svc.AddCommand(register, deregister, del, ls, show, watch, ttl)
	return svc
}
