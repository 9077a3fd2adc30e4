package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/config"
)

func resolve(t *testing.T, args ...string) (config.Config, error) {
	t.Helper()
	var got config.Config
	cmd := agentCmd(func(_ *cobra.Command, cfg config.Config) error { got = cfg; return nil })
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	return got, err
}

// TestAgentConfigLayers checks the order: defaults, the data dir's identity,
// the config file, explicit flags.
func TestAgentConfigLayers(t *testing.T) {
	dir := t.TempDir()
	id := &cluster.Identity{Name: "n3", Role: cluster.RoleVoter, Advertise: "127.0.0.1", Bind: "127.0.0.1",
		APIPort: 9400, PeerPort: 9401, StorePort: 9402, DNSPort: 9403, ProxyPort: 9404}
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	// A restart with only --data-dir takes everything from the identity.
	cfg, err := resolve(t, "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "n3" || cfg.APIPort != 9400 || cfg.StorePort != 9402 {
		t.Fatalf("identity not applied: %+v", cfg)
	}
	// The config file overrides the identity, flags override the file.
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("api-port: 9500\nvoters: 5\ndata-dir: "+dir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = resolve(t, "--config", file, "--voters", "7")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "n3" || cfg.APIPort != 9500 || cfg.Voters != 7 || cfg.DataDir != dir {
		t.Fatalf("layers: %+v", cfg)
	}
	// A data dir cannot be renamed.
	if _, err := resolve(t, "--data-dir", dir, "--name", "other"); err == nil || !strings.Contains(err.Error(), "belongs to node \"n3\"") {
		t.Fatalf("rename: want a refusal naming the owner, got %v", err)
	}
	// Without an identity, the name defaults to the host name.
	cfg, err = resolve(t, "--data-dir", t.TempDir())
	if err != nil || !config.ValidName(cfg.Name) {
		t.Fatalf("default name %q: %v", cfg.Name, err)
	}
}
