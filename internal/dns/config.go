package dns

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// Config of the DNS server. The zero value is usable: every empty field
// takes its default.
type Config struct {
	// Domain the server is authoritative for (default "tandem."). It is
	// matched case-insensitively; a missing final dot is added. Names
	// outside it are REFUSED: the server is not a recursive resolver.
	Domain string `json:"domain,omitempty"`
	// TTL in seconds of every record, and the SOA minimum that sets how long
	// resolvers cache a negative answer (default 0: the local view changes
	// within a second of a failure, so answers are not cached).
	TTL uint32 `json:"ttl,omitempty"`
	// Addr is the host:port to serve UDP and TCP on, both on the same port
	// (default "127.0.0.1:8600"). Port 0 picks a free port for both.
	Addr string `json:"addr,omitempty"`
}

// Defaults of Config.
const (
	DefaultDomain = "tandem."
	DefaultAddr   = "127.0.0.1:8600"
)

// withDefaults returns c with empty fields set and the domain made a
// lowercase fully qualified name.
func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	c.Domain = mdns.Fqdn(strings.ToLower(c.Domain))
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	return c
}

// Validate checks the configuration, taking empty fields as their defaults,
// and returns every problem found.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if _, ok := mdns.IsDomainName(c.Domain); !ok || c.Domain == "." || strings.HasPrefix(c.Domain, ".") {
		errs = append(errs, fmt.Errorf("dns domain %q is not a domain name: use labels separated by dots, such as %q", c.Domain, DefaultDomain))
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("dns addr %q: want host:port, such as %q", c.Addr, DefaultAddr))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("dns addr %q: port %q is not a number from 0 to 65535", c.Addr, port))
	} else if host != "" && strings.ContainsAny(host, " /") {
		errs = append(errs, fmt.Errorf("dns addr %q: host %q is not an IP address or host name", c.Addr, host))
	}
	return errors.Join(errs...)
}
