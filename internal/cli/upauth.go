package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// How `tandem up` reaches the API of the cluster it runs: the bootstrap
// node (n1) writes the cluster CA to <data-dir>/tls/ca.crt and the first
// admin token to <data-dir>/admin.token; `up` reads them, uses them for
// its own requests and hands copies to the user through DIR/env.

// upCredentials are what loadCredentials read.
type upCredentials struct {
	opts  client.Options
	caPEM []byte
	token string
}

// loadCredentials reads the CA and admin token once they exist: from the
// bootstrap node's data dir, else from the copies in DIR. It does nothing
// for an insecure cluster or when they are loaded.
func (c *upCluster) loadCredentials() error {
	c.mu.Lock()
	done := c.lc.Insecure || c.creds != nil
	boot := c.lc.Nodes[0].DataDir
	c.mu.Unlock()
	if done {
		return nil
	}
	caPEM, caPath, err := readFirst(filepath.Join(boot, "tls", "ca.crt"), filepath.Join(c.dir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("no cluster CA yet: %w", err)
	}
	cfg, err := client.TLSConfig(caPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", caPath, err)
	}
	tok, tokPath, err := readFirst(filepath.Join(boot, "admin.token"), filepath.Join(c.dir, "admin.token"))
	if err != nil {
		return fmt.Errorf("no admin token yet: %w", err)
	}
	if !bytes.HasSuffix(tok, []byte("\n")) {
		return fmt.Errorf("%s is not complete yet (no final newline)", tokPath)
	}
	token, err := checkToken(strings.TrimSpace(string(tok)), tokPath)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.creds = &upCredentials{opts: client.Options{TLS: cfg, Token: token}, caPEM: caPEM, token: token}
	c.mu.Unlock()
	return nil
}

// forgetCredentials makes the next loadCredentials read the files again.
func (c *upCluster) forgetCredentials() {
	c.mu.Lock()
	c.creds = nil
	c.mu.Unlock()
}

// readFirst reads the first of paths that exists.
func readFirst(paths ...string) ([]byte, string, error) {
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			return b, p, nil
		}
		errs = append(errs, err)
	}
	return nil, "", errors.Join(errs...)
}

// client returns a client for addrs with the cluster's credentials (plain
// for an insecure cluster, or before loadCredentials succeeded).
func (c *upCluster) client(addrs []string) *client.Client {
	c.mu.Lock()
	cr := c.creds
	c.mu.Unlock()
	if cr == nil {
		return client.New(addrs)
	}
	return client.NewWithOptions(addrs, cr.opts)
}

// createJoinToken creates a join token, valid for an hour, through the
// nodes at addrs and writes it to DIR/join.token for the new nodes'
// --token-file. It retries while the cluster cannot write yet.
func (c *upCluster) createJoinToken(ctx context.Context, addrs []string) (string, error) {
	cl := c.client(addrs)
	deadline := time.Now().Add(60 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := cl.CreateToken(rctx, wire.TokenRequest{Role: "join", Name: "tandem up", TTL: "1h"})
		cancel()
		if err == nil {
			return res.Token, writePrivate(filepath.Join(c.dir, "join.token"), []byte(res.Token+"\n"))
		}
		var ce *client.Error
		if (errors.As(err, &ce) && ce.Status < 500) || time.Now().After(deadline) {
			return "", fmt.Errorf("create a join token for the new nodes: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeEnv writes DIR/env, which a shell sources to reach the cluster, with
// copies of the CA (DIR/ca.crt) and admin token (DIR/admin.token) it names;
// it returns the env file's path.
func (c *upCluster) writeEnv(addrs []string) (string, error) {
	c.mu.Lock()
	cr := c.creds
	insecure := c.lc.Insecure
	c.mu.Unlock()
	var env strings.Builder
	env.WriteString("# Written by 'tandem up': source this file to reach its cluster with the tandem CLI.\n")
	fmt.Fprintf(&env, "export TANDEM_ADDR=%s\n", shellQuote(strings.Join(addrs, ",")))
	switch {
	case insecure:
		env.WriteString("export TANDEM_INSECURE=1\nunset TANDEM_CA TANDEM_TOKEN TANDEM_TOKEN_FILE\n")
	case cr == nil:
		return "", errors.New("the cluster's CA and admin token were not read") // waitNode reads them first
	default:
		ca, tok := filepath.Join(c.dir, "ca.crt"), filepath.Join(c.dir, "admin.token")
		if err := os.WriteFile(ca, cr.caPEM, 0o644); err != nil {
			return "", err
		}
		if err := writePrivate(tok, []byte(cr.token+"\n")); err != nil {
			return "", err
		}
		fmt.Fprintf(&env, "export TANDEM_CA=%s\nexport TANDEM_TOKEN_FILE=%s\nunset TANDEM_TOKEN TANDEM_INSECURE\n", shellQuote(ca), shellQuote(tok))
	}
	path := filepath.Join(c.dir, "env")
	return path, writePrivate(path, []byte(env.String()))
}

// writePrivate writes a file only its owner can read, atomically.
func writePrivate(path string, data []byte) error { return pki.WriteFileAtomic(path, data, 0o600) }

// shellQuote quotes s for a POSIX shell unless it needs no quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,:/@+=%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// relToWD returns path relative to the working directory when it lies
// under it, else path.
func relToWD(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return path
	}
	return rel
}
