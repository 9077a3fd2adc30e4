// Package client is the Go client of tandem's HTTP API. It takes several node
// addresses and moves to the next when one does not answer, so no single
// node is a point of failure for the CLI or for programs.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/tandemhq/tandem/internal/wire"
)

// Client talks to any of a cluster's nodes.
type Client struct {
	addrs  []string
	http   *http.Client
	scheme string // http, or https with Options.TLS
	token  string // bearer token sent with every request, "" for none

	mu   sync.Mutex
	next int // index of the address that last answered
}

// Options secure a client.
type Options struct {
	// TLS, if set, makes the client speak HTTPS with this configuration
	// (RootCAs: the cluster CA). Nil: plain HTTP, for a cluster started
	// with --insecure.
	TLS *tls.Config
	// Token is sent as "Authorization: Bearer TOKEN" with every request
	// (watch streams too); "" sends none.
	Token string
}

// New returns a client for the nodes at addrs (host:port of their APIs),
// speaking plain HTTP without a token: for clusters started with
// --insecure.
func New(addrs []string) *Client {
	return NewWithOptions(addrs, Options{})
}

// NewWithOptions returns a client for the nodes at addrs that speaks HTTPS
// when o.TLS is set and sends o.Token with every request. Its connections
// are kept alive and TLS sessions resumed, so most requests cost no
// handshake.
func NewWithOptions(addrs []string, o Options) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	scheme := "http"
	if o.TLS != nil {
		cfg := o.TLS.Clone()
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(len(addrs) + 8)
		}
		tr.TLSClientConfig = cfg
		scheme = "https"
	}
	return &Client{addrs: addrs, http: &http.Client{Transport: tr}, scheme: scheme, token: o.Token}
}

// TLSConfig returns a client TLS configuration that trusts the CA
// certificates in caPEM (the cluster CA bundle, <data-dir>/tls/ca.crt).
func TLSConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM certificate in it (want the cluster CA, <data-dir>/tls/ca.crt on any node)")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Error is an error answered by a node.
type Error struct {
	Status int
	Body   wire.Error
}

func (e *Error) Error() string { return e.Body.Error }

// CompactRevision is set when a watch asked for compacted history.
func (e *Error) CompactRevision() int64 { return e.Body.CompactRevision }

// IsStatus reports whether err is an API error with HTTP status code.
func IsStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == code
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	body         []byte
	// idem is the Idempotency-Key, "" for none.
	idem string
	// token replaces the client's bearer token when set.
	token string
}

// do sends one request, moving to the next address when a node cannot be
// reached. A request that may change state moves on only when the
// connection was never made, so it is never applied twice, unless it
// carries an idempotency key (idem): the cluster applies such a request
// once however often it is sent. A node that answers, even with 401 or
// 403, ends the request: every node would answer the same.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	if len(c.addrs) == 0 {
		return nil, errors.New("no node address: give --addr host:port or set TANDEM_ADDR")
	}
	token := c.token
	if r.token != "" {
		token = r.token
	}
	c.mu.Lock()
	start := c.next
	c.mu.Unlock()
	var errs []error
	for i := range c.addrs {
		idx := (start + i) % len(c.addrs)
		addr := c.addrs[idx]
		u := url.URL{Scheme: c.scheme, Host: addr, Path: r.path, RawQuery: r.query.Encode()}
		req, err := http.NewRequestWithContext(ctx, r.method, u.String(), bytes.NewReader(r.body))
		if err != nil {
			return nil, err
		}
		if r.idem != "" {
			req.Header.Set(wire.IdempotencyHeader, r.idem)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.http.Do(req)
		if err == nil {
			c.mu.Lock()
			c.next = idx
			c.mu.Unlock()
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", r.method, r.path, ctx.Err())
		}
		if terr := tlsError(addr, err); terr != nil {
			return nil, terr // another node would present the same certificates
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		var op *net.OpError
		dialFailed := errors.As(err, &op) && op.Op == "dial"
		if r.method != http.MethodGet && r.idem == "" && !dialFailed {
			break // the request may have reached the node: do not send it twice
		}
	}
	return nil, fmt.Errorf("no node answered: %w", errors.Join(errs...))
}

// TLSError is a node whose TLS the client refused (its certificate is not
// signed by the given CA, or does not name the address), or a node that
// speaks plain HTTP to a client configured for TLS.
type TLSError struct {
	Addr string
	Err  error
	Hint string
}

func (e *TLSError) Error() string { return fmt.Sprintf("%s: %v (%s)", e.Addr, e.Err, e.Hint) }
func (e *TLSError) Unwrap() error { return e.Err }

// tlsError recognises TLS failures in err, which retrying another node
// would not fix, and says what to do about them; nil for other errors.
func tlsError(addr string, err error) error {
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	var plain tls.RecordHeaderError
	switch {
	case errors.As(err, &host):
		return &TLSError{addr, err, "the node's certificate does not name this address: use the address the node advertises"}
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		return &TLSError{addr, err, "the node's certificate is not signed by the CA given with --ca/TANDEM_CA: give the cluster's CA, <data-dir>/tls/ca.crt on any of its nodes"}
	case errors.As(err, &plain), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return &TLSError{addr, err, "the node serves plain HTTP: it was started with --insecure; give --insecure or set TANDEM_INSECURE=1"}
	}
	return nil
}

// call sends a request and decodes a JSON answer into out.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	return c.exchange(ctx, request{method: method, path: path, query: q, body: body}, out)
}

// send is call with an idempotency key ("" for none).
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body []byte, idem string, out any) error {
	return c.exchange(ctx, request{method: method, path: path, query: q, body: body, idem: idem}, out)
}

// exchange sends r and decodes a JSON answer into out (nil: ignore it).
func (c *Client) exchange(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		return answerError(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// answerError is the error of a node's answer with status >= 300.
func answerError(status int, data []byte) *Error {
	e := &Error{Status: status}
	if json.Unmarshal(data, &e.Body) != nil || e.Body.Error == "" {
		e.Body.Error = fmt.Sprintf("HTTP %d: %s", status, strings.TrimSpace(string(data)))
		if status == http.StatusBadRequest && bytes.Contains(data, []byte("HTTP request to an HTTPS server")) {
			e.Body.Error += " (the node serves its API over TLS: drop --insecure and give --ca and a token)"
		}
	}
	return e
}

// kvPath joins the API path and the key; url.URL escapes it on the wire.
func kvPath(base, key string) string {
	return base + key
}

// ReadOptions tune a read.
type ReadOptions struct {
	Stale   bool
	Timeout time.Duration
}

func (o ReadOptions) query() url.Values {
	q := url.Values{}
	if o.Stale {
		q.Set("consistency", "stale")
	}
	if o.Timeout > 0 {
		q.Set("timeout", o.Timeout.String())
	}
	return q
}

// Get reads one key.
func (c *Client) Get(ctx context.Context, key string, o ReadOptions) (*wire.GetResult, error) {
	var out wire.GetResult
	return &out, c.call(ctx, http.MethodGet, kvPath("/v1/kv/", key), o.query(), nil, &out)
}

// List reads every key under prefix.
func (c *Client) List(ctx context.Context, prefix string, keysOnly bool, o ReadOptions) (*wire.ListResult, error) {
	q := o.query()
	q.Set("prefix", "true")
	if keysOnly {
		q.Set("keys", "true")
	}
	var out wire.ListResult
	return &out, c.call(ctx, http.MethodGet, kvPath("/v1/kv/", prefix), q, nil, &out)
}

// WriteOptions tune a write. CAS, when set, makes the write conditional on
// the key's mod revision (0: the key must not exist).
type WriteOptions struct {
	CAS     *int64
	Prefix  bool // delete only
	Timeout time.Duration
	// RequestID, if set, is sent as the Idempotency-Key: the cluster
	// applies the write once however often it is sent with this id (within
	// ten minutes), so the client may send it to another node when the
	// first fails mid-request, and a program may repeat it after a crash.
	RequestID string
}

func (o WriteOptions) query() url.Values {
	q := url.Values{}
	if o.CAS != nil {
		q.Set("cas", fmt.Sprint(*o.CAS))
	}
	if o.Prefix {
		q.Set("prefix", "true")
	}
	if o.Timeout > 0 {
		q.Set("timeout", o.Timeout.String())
	}
	return q
}

// Put writes a key.
func (c *Client) Put(ctx context.Context, key string, value []byte, o WriteOptions) (*wire.WriteResult, error) {
	var out wire.WriteResult
	return &out, c.send(ctx, http.MethodPut, kvPath("/v1/kv/", key), o.query(), value, o.RequestID, &out)
}

// Delete removes a key (or every key under it with Prefix).
func (c *Client) Delete(ctx context.Context, key string, o WriteOptions) (*wire.WriteResult, error) {
	var out wire.WriteResult
	return &out, c.send(ctx, http.MethodDelete, kvPath("/v1/kv/", key), o.query(), nil, o.RequestID, &out)
}

// Watch streams changes to key (or every key under it with prefix) from rev
// (0: from now), calling f for each event until ctx ends or f returns an
// error. When a node goes away it resumes on another from the next revision.
func (c *Client) Watch(ctx context.Context, key string, prefix bool, rev int64, f func(wire.WatchEvent) error) error {
	return c.stream(ctx, kvPath("/v1/watch/", key), prefix, rev, func(line []byte) (int64, error) {
		var ev wire.WatchEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return 0, fmt.Errorf("decode watch event: %w", err)
		}
		if ev.Type == "error" {
			return 0, &Error{Status: http.StatusServiceUnavailable, Body: wire.Error{Error: ev.Error, CompactRevision: ev.CompactRevision}}
		}
		return ev.Revision, f(ev)
	})
}

// WatchEvents streams cluster events from rev (0: from now).
func (c *Client) WatchEvents(ctx context.Context, rev int64, f func(wire.Event) error) error {
	return c.stream(ctx, "/v1/events", false, rev, func(line []byte) (int64, error) {
		var ev struct {
			wire.Event
			Revision int64  `json:"revision"`
			Type     string `json:"type"`
			Error    string `json:"error"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return 0, fmt.Errorf("decode event: %w", err)
		}
		if ev.Type == "error" {
			return 0, &Error{Status: http.StatusServiceUnavailable, Body: wire.Error{Error: ev.Error}}
		}
		ev.Event.Type = ev.Type
		return ev.Revision, f(ev.Event)
	})
}

func (c *Client) stream(ctx context.Context, path string, prefix bool, rev int64, line func([]byte) (int64, error)) error {
	// Pauses between reconnects grow with jitter, so many clients cut off
	// together do not come back in step; a stream that delivered resets them.
	pauses := &backoff.ExponentialBackOff{InitialInterval: 200 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 2 * time.Second}
	pauses.Reset()
	for {
		q := url.Values{}
		if prefix {
			q.Set("prefix", "true")
		}
		if path == "/v1/events" {
			q.Set("watch", "true")
		}
		if rev > 0 {
			q.Set("rev", fmt.Sprint(rev))
		}
		resp, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q})
		if err != nil {
			var terr *TLSError
			if errors.As(err, &terr) {
				return err
			}
			if !pause(ctx, pauses.NextBackOff()) {
				return nil
			}
			continue
		}
		if resp.StatusCode >= 300 {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return answerError(resp.StatusCode, data)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var ferr error
		for sc.Scan() {
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			r, err := line(b)
			if err != nil {
				var apiErr *Error
				if errors.As(err, &apiErr) && apiErr.Body.CompactRevision == 0 {
					break // node lost the leader: resume elsewhere
				}
				ferr = err
				break
			}
			if r > 0 {
				rev = r + 1
			}
			pauses.Reset()
		}
		resp.Body.Close()
		if ferr != nil {
			return ferr
		}
		if ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		c.next = (c.next + 1) % len(c.addrs)
		c.mu.Unlock()
		if !pause(ctx, pauses.NextBackOff()) {
			return nil
		}
	}
}

// pause waits d, or less if ctx ends first; it reports whether ctx is live.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Members lists the cluster's nodes.
func (c *Client) Members(ctx context.Context) (*wire.Members, error) {
	var out wire.Members
	return &out, c.call(ctx, http.MethodGet, "/v1/members", nil, nil, &out)
}

// Status summarises the cluster.
func (c *Client) Status(ctx context.Context) (*wire.Status, error) {
	var out wire.Status
	return &out, c.call(ctx, http.MethodGet, "/v1/status", nil, nil, &out)
}

// Events lists the newest limit events, oldest first.
func (c *Client) Events(ctx context.Context, limit int) ([]wire.Event, int64, error) {
	var out struct {
		Revision int64        `json:"revision"`
		Events   []wire.Event `json:"events"`
	}
	err := c.call(ctx, http.MethodGet, "/v1/events", url.Values{"limit": {fmt.Sprint(limit)}}, nil, &out)
	return out.Events, out.Revision, err
}

// Health asks one node whether it serves.
func (c *Client) Health(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	return out, c.call(ctx, http.MethodGet, "/v1/health", nil, nil, &out)
}

// Leave asks the node at the first address to leave the cluster.
func (c *Client) Leave(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/agent/leave", nil, nil, nil)
}

// RemoveNode removes a dead node from the cluster.
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil, nil, nil)
}

// Join asks any of the client's nodes to admit a new node, retrying until
// ctx ends while no node answers (the cluster may still be starting).
func (c *Client) Join(ctx context.Context, req wire.JoinRequest) (wire.JoinResponse, error) {
	body, _ := json.Marshal(req)
	var out wire.JoinResponse
	b := &backoff.ExponentialBackOff{InitialInterval: 250 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 2 * time.Second}
	b.Reset()
	for {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := c.call(rctx, http.MethodPost, "/v1/cluster/join", nil, body, &out)
		cancel()
		if err == nil {
			return out, nil
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			return out, err // refused: retrying will not help
		}
		if !pause(ctx, b.NextBackOff()) {
			return out, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}
