package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	c.Name = "n1"
	if err := c.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func TestValidateNamesEachProblem(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad name", func(c *Config) { c.Name = "Node_1" }, "name \"Node_1\""},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "data-dir is empty"},
		{"bad advertise", func(c *Config) { c.Advertise = "example" }, "advertise \"example\""},
		{"unspecified advertise", func(c *Config) { c.Advertise = "0.0.0.0" }, "not the unspecified"},
		{"port out of range", func(c *Config) { c.APIPort = 70000 }, "api-port 70000"},
		{"duplicate ports", func(c *Config) { c.DNSPort = c.APIPort }, "both 7400"},
		{"even voters", func(c *Config) { c.Voters = 4 }, "voters 4"},
		{"bad join", func(c *Config) { c.Join = []string{"nohost"} }, "join address \"nohost\""},
		{"short lease", func(c *Config) { c.LeaseTTL = Duration(100 * time.Millisecond) }, "lease-ttl"},
		{"election too short", func(c *Config) { c.ElectionTimeout = Duration(100 * time.Millisecond) }, "election-timeout"},
		{"bad log level", func(c *Config) { c.LogLevel = "loud" }, "log-level"},
		{"insecure off loopback", func(c *Config) { c.Insecure, c.Bind = true, "0.0.0.0" }, "only for a throwaway cluster on loopback"},
		{"insecure on a LAN address", func(c *Config) { c.Insecure, c.Bind, c.Advertise = true, "10.1.2.3", "10.1.2.3" }, "bind 10.1.2.3"},
		{"insecure with a join token", func(c *Config) { c.Insecure, c.TokenFile = true, "join.token" }, "no join tokens"},
		{"store cert without key", func(c *Config) { c.StoreEndpoints, c.StoreCert = []string{"https://e:2379"}, "c.pem" }, "store-cert and store-key go together"},
		{"store ca without endpoints", func(c *Config) { c.StoreCA = "ca.pem" }, "give --store-endpoints too"},
		{"store ca with a plain endpoint", func(c *Config) { c.StoreEndpoints, c.StoreCA = []string{"http://e:2379"}, "ca.pem" }, "give https:// endpoints"},
		{"short cert ttl", func(c *Config) { c.CertTTL = Duration(time.Second) }, "cert-ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Name = "n1"
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error saying %q, got %v", tt.want, err)
			}
		})
	}
}

func TestLoadYAML(t *testing.T) {
	c := Default()
	err := c.Load(strings.NewReader("name: n7\nvoters: 5\njoin: [10.0.0.1:7400]\ndead-voter-timeout: 45s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "n7" || c.Voters != 5 || len(c.Join) != 1 || c.DeadVoterTimeout.D() != 45*time.Second || c.APIPort != 7400 {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Load(strings.NewReader("nmae: typo\n")); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("unknown key: want an error naming it, got %v", err)
	}
	if err := c.Load(strings.NewReader("lease-ttl: soon\n")); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("bad duration: want an error naming it, got %v", err)
	}
}
