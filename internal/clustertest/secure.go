package clustertest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/agent"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// Secure reports whether the cluster runs with security on (the default).
func (c *Cluster) Secure() bool { return !c.opts.Insecure }

// creds returns the CA bundle and the admin token of a secure cluster, read
// from the first node's data dir; empty until that node has written them.
func (c *Cluster) creds() ([]byte, string) {
	c.credMu.Lock()
	defer c.credMu.Unlock()
	if c.opts.Insecure || len(c.Nodes) == 0 {
		return nil, ""
	}
	first := c.Nodes[0]
	if c.caPEM == nil {
		if b, err := os.ReadFile(filepath.Join(first.DataDir, "tls", pki.CAFile)); err == nil {
			c.caPEM = b
		}
	}
	if c.adminToken == "" {
		if b, err := os.ReadFile(filepath.Join(first.DataDir, agent.AdminTokenFile)); err == nil {
			c.adminToken = strings.TrimSpace(string(b))
		}
	}
	return c.caPEM, c.adminToken
}

// ForgetCredentials drops the cluster CA and the join token read or made
// so far, after a CA rotation: the next client trusts the bundle the first
// node holds then, and the next join token pins the new CA.
func (c *Cluster) ForgetCredentials() {
	c.credMu.Lock()
	defer c.credMu.Unlock()
	c.caPEM, c.joinToken = nil, ""
}

// TLSConfig is what a client of the cluster's API trusts (nil when
// insecure, or before the first node has made its CA).
func (c *Cluster) TLSConfig() *tls.Config {
	ca, _ := c.creds()
	if ca == nil {
		return nil
	}
	cfg, err := pki.CertsClientConfig(ca)
	if err != nil {
		c.t.Fatalf("clustertest: the cluster CA: %v", err)
	}
	return cfg
}

// AdminToken is the cluster's first admin token ("" when insecure).
func (c *Cluster) AdminToken() string {
	_, tok := c.creds()
	return tok
}

// ClientFor returns a client of the nodes at addrs, with the admin token
// on a secure cluster.
func (c *Cluster) ClientFor(addrs ...string) *client.Client {
	return c.ClientWithToken(c.AdminToken(), addrs...)
}

// ClientWithToken returns a client of the nodes at addrs that sends token
// (on an insecure cluster, a plain client).
func (c *Cluster) ClientWithToken(token string, addrs ...string) *client.Client {
	if c.opts.Insecure {
		return client.New(addrs)
	}
	tlsCfg := c.TLSConfig()
	if tlsCfg == nil {
		// Not made yet: a client that cannot connect, so polls go on.
		tlsCfg = &tls.Config{RootCAs: nil, ServerName: "no CA yet", MinVersion: tls.VersionTLS12}
	}
	return client.NewWithOptions(addrs, client.Options{TLS: tlsCfg, Token: token})
}

// URL is the address of path on the node's API, with the scheme the
// cluster serves it with.
func (nd *Node) URL(path string) string {
	if nd.c.opts.Insecure {
		return "http://" + nd.API + path
	}
	return "https://" + nd.API + path
}

// HTTP returns an HTTP client for the cluster's APIs that sends the admin
// token (use it with Node.URL).
func (c *Cluster) HTTP() *http.Client {
	if c.opts.Insecure {
		return &http.Client{}
	}
	return &http.Client{Transport: &bearer{token: c.AdminToken(), next: &http.Transport{TLSClientConfig: c.TLSConfig()}}}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// CLIEnv is the environment that points the tandem CLI at this cluster's
// credentials (TANDEM_CA and TANDEM_TOKEN_FILE, or TANDEM_INSECURE); the
// caller adds TANDEM_ADDR or --addr.
func (c *Cluster) CLIEnv() []string {
	if c.opts.Insecure {
		return []string{"TANDEM_INSECURE=1"}
	}
	c.creds()
	first := c.Nodes[0]
	return []string{
		"TANDEM_CA=" + filepath.Join(first.DataDir, "tls", pki.CAFile),
		"TANDEM_TOKEN_FILE=" + filepath.Join(first.DataDir, agent.AdminTokenFile),
	}
}

// JoinTokenFile returns the path of a join token file, made through the
// first node's API the first time it is needed.
func (c *Cluster) JoinTokenFile() string {
	c.credMu.Lock()
	path := c.joinToken
	c.credMu.Unlock()
	if path != "" {
		return path
	}
	var created wire.TokenCreated
	err := Poll(c.opts.Timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		created, err = c.RunningClient().CreateToken(ctx, wire.TokenRequest{Role: "join", Name: "clustertest", TTL: "24h"})
		return err
	})
	if err != nil {
		c.t.Fatalf("clustertest: make a join token: %v", err)
	}
	path = filepath.Join(c.dir, "join.token")
	if err := os.WriteFile(path, []byte(created.Token+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.credMu.Lock()
	c.joinToken = path
	c.credMu.Unlock()
	return path
}

// StoreURL is the client URL of the node's store member.
func (nd *Node) StoreURL() string {
	scheme := "https://"
	if nd.c.opts.Insecure {
		scheme = "http://"
	}
	return scheme + net.JoinHostPort(nd.Advertise, strconv.Itoa(nd.ports[1]))
}

// StoreTLS is a TLS configuration to reach store ports with the node's own
// certificate (nil when insecure).
func (nd *Node) StoreTLS() *tls.Config {
	if nd.c.opts.Insecure {
		return nil
	}
	m, err := pki.Dir(filepath.Join(nd.DataDir, "tls")).Load()
	if err != nil {
		nd.c.t.Fatalf("clustertest: %s's certificate: %v", nd.Name, err)
	}
	return pki.NewKeeper(m).ClientConfig("")
}
