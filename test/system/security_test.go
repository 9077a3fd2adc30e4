package system

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// apiCall sends one request to nd's API with token (none if ""), over the
// cluster's TLS, and returns the status and body.
func apiCall(t *testing.T, c *clustertest.Cluster, nd *clustertest.Node, token, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, nd.URL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig()}, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func makeToken(t *testing.T, c *clustertest.Cluster, req wire.TokenRequest) wire.TokenCreated {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.Client().CreateToken(ctx, req)
	if err != nil {
		t.Fatalf("create token %+v: %v", req, err)
	}
	return tok
}

// TestAPIRefusesWhatTokensDoNotAllow sends each request a token must not
// allow, and checks it is refused with 401 or 403 naming the reason, and
// that nothing changed.
func TestAPIRefusesWhatTokensDoNotAllow(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	ctx := ctxT(t, 2*time.Minute)
	if _, err := c.Client().Put(ctx, "app/config", []byte("v1"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().Put(ctx, "secret/key", []byte("s1"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	read := makeToken(t, c, wire.TokenRequest{Role: "read", Name: "reader"}).Token
	operator := makeToken(t, c, wire.TokenRequest{Role: "operator"}).Token
	prefixed := makeToken(t, c, wire.TokenRequest{Role: "operator", Prefix: "app/"}).Token
	revoked := makeToken(t, c, wire.TokenRequest{Role: "admin"})
	if err := c.Client().RevokeToken(ctx, revoked.Info.ID); err != nil {
		t.Fatal(err)
	}
	join := makeToken(t, c, wire.TokenRequest{Role: "join"}).Token
	// A well-formed token the cluster never made.
	forged := "tdm1.0123456789abcdef." + strings.Repeat("A", 43)
	wrongSecret := read[:len(read)-4] + "AAAA"
	if wrongSecret == read {
		wrongSecret = read[:len(read)-4] + "BBBB"
	}

	tests := []struct {
		name, token, method, path, body string
		code                            int
		want                            string
	}{
		{"no token", "", "PUT", "/v1/kv/app/config", "x", 401, "needs a token"},
		{"no token read", "", "GET", "/v1/kv/app/config", "", 401, "needs a token"},
		{"no token metrics", "", "GET", "/metrics", "", 401, "needs a token"},
		{"no token wipe", "", "DELETE", "/v1/kv/app?prefix=true", "", 401, "needs a token"},
		{"forged token", forged, "PUT", "/v1/kv/app/config", "x", 401, "token"},
		{"wrong secret", wrongSecret, "GET", "/v1/kv/app/config", "", 401, "token"},
		{"revoked token", revoked.Token, "PUT", "/v1/kv/app/config", "x", 401, "token"},
		{"not a token", "hello", "GET", "/v1/kv/app/config", "", 401, "token"},
		{"read token writes", read, "PUT", "/v1/kv/app/config", "x", 403, "read"},
		{"read token deletes", read, "DELETE", "/v1/kv/app/config", "", 403, "read"},
		{"read token registers", read, "PUT", "/v1/services/web/instances/w1", `{"address":"127.0.0.1","port":1}`, 403, "read"},
		{"read token pprof", read, "GET", "/debug/pprof/", "", 403, "read"},
		{"read token lists tokens", read, "GET", "/v1/tokens", "", 403, "read"},
		{"operator removes a node", operator, "DELETE", "/v1/nodes/n3", "", 403, "operator"},
		{"operator makes a node leave", operator, "POST", "/v1/agent/leave", "", 403, "operator"},
		{"operator joins a member", operator, "POST", "/v1/cluster/join", `{"name":"evil","peer_url":"https://127.0.0.1:1","store_url":"https://127.0.0.1:2","api":"127.0.0.1:3"}`, 403, "operator"},
		{"operator makes a token", operator, "POST", "/v1/tokens", `{"role":"admin"}`, 403, "operator"},
		{"operator revokes a token", operator, "DELETE", "/v1/tokens/" + revoked.Info.ID, "", 403, "operator"},
		{"operator pprof", operator, "GET", "/debug/pprof/", "", 403, "operator"},
		{"join token reads", join, "GET", "/v1/kv/app/config", "", 401, "join token"},
		{"join token without its pin reads", strings.Join(strings.Split(join, ".")[:3], "."), "GET", "/v1/kv/app/config", "", 403, "join"},
		{"prefix token outside", prefixed, "PUT", "/v1/kv/secret/key", "x", 403, "app/"},
		{"prefix token reads outside", prefixed, "GET", "/v1/kv/secret/key", "", 403, "app/"},
		// Paths the router cleans are redirected (301), never written.
		{"prefix token dot-dot", prefixed, "PUT", "/v1/kv/app/%2E%2E/secret/key", "x", 0, ""},
		{"prefix token double slash", prefixed, "PUT", "/v1/kv/app//x", "x", 0, ""},
		{"prefix token lists all", prefixed, "GET", "/v1/kv/?prefix=true", "", 403, "app/"},
		{"prefix token wipes", prefixed, "DELETE", "/v1/kv/a?prefix=true", "", 403, "app/"},
		{"prefix token watches all", prefixed, "GET", "/v1/watch/?prefix=true", "", 403, "app/"},
		{"prefix token writes a service", prefixed, "PUT", "/v1/services/web", `{}`, 403, "app/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := apiCall(t, c, n2, tt.token, tt.method, tt.path, tt.body)
			if tt.code == 0 && code >= 300 {
				return // any refusal
			}
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("%s %s: got %d %s, want %d containing %q", tt.method, tt.path, code, body, tt.code, tt.want)
			}
			if tt.token != "" && strings.Contains(body, tt.token) {
				t.Fatalf("the answer echoes the token: %s", body)
			}
		})
	}

	// Plain HTTP to the API is refused.
	resp, err := http.Post("http://"+n1.API+"/v1/tokens", "application/json", strings.NewReader(`{"role":"admin"}`))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP to the API: %d %s", resp.StatusCode, b)
		}
	}
	// A TLS client that does not know the cluster CA cannot connect.
	_, err = (&http.Client{Timeout: 5 * time.Second}).Get("https://" + n1.API + "/v1/health")
	if err == nil {
		t.Fatal("a client that does not trust the cluster CA connected")
	}

	// Nothing changed: the values, the node count, the token list.
	for key, want := range map[string]string{"app/config": "v1", "secret/key": "s1"} {
		got, err := c.Client().Get(ctx, key, client.ReadOptions{})
		if err != nil || string(got.KV.Value) != want {
			t.Fatalf("%s after the refused requests: %+v, %v; want %q", key, got, err, want)
		}
	}
	all, err := c.Client().List(ctx, "", true, client.ReadOptions{})
	if err != nil || len(all.Items) != 2 {
		t.Fatalf("keys after the refused requests: %+v, %v; want app/config and secret/key only", all, err)
	}
	toks, err := c.Client().Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks.Tokens) != 6 { // bootstrap admin, the harness's join token, read, operator, prefixed, join
		t.Fatalf("tokens after the refused requests: %+v", toks.Tokens)
	}
	for _, ti := range toks.Tokens {
		if ti.ID == revoked.Info.ID {
			t.Fatal("the revoked token is still listed")
		}
	}
	ms, err := c.Client().Members(ctx)
	if err != nil || len(ms.Members) != 3 {
		t.Fatalf("members after the refused requests: %+v, %v", ms, err)
	}

	// What the tokens do allow works.
	for _, tt := range []struct {
		name, token, method, path, body string
		code                            int
	}{
		{"read token reads", read, "GET", "/v1/kv/app/config", "", 200},
		{"read token status", read, "GET", "/v1/status", "", 200},
		{"operator writes", operator, "PUT", "/v1/kv/secret/key", "s2", 200},
		{"operator registers", operator, "PUT", "/v1/services/web/instances/w1", `{"address":"127.0.0.1","port":1}`, 200},
		{"prefix token inside", prefixed, "PUT", "/v1/kv/app/config", "v2", 200},
		{"prefix token lists inside", prefixed, "GET", "/v1/kv/app/?prefix=true", "", 200},
		{"admin pprof", c.AdminToken(), "GET", "/debug/pprof/", "", 200},
	} {
		if code, body := apiCall(t, c, n2, tt.token, tt.method, tt.path, tt.body); code != tt.code {
			t.Errorf("%s: %s %s: %d %s, want %d", tt.name, tt.method, tt.path, code, body, tt.code)
		}
	}
}

// TestRevokedTokenStopsEverywhere revokes a token through one node and
// checks every node refuses it soon after (the view carries the deletion
// by watch; BenchmarkTokenRevocation measures how soon).
func TestRevokedTokenStopsEverywhere(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{})
	ctx := ctxT(t, time.Minute)
	tok := makeToken(t, c, wire.TokenRequest{Role: "read"})
	for _, nd := range c.Nodes {
		if code, body := apiCall(t, c, nd, tok.Token, "GET", "/v1/status", ""); code != 200 {
			t.Fatalf("%s before revocation: %d %s", nd.Name, code, body)
		}
	}
	if err := c.ClientFor(c.Nodes[2].API).RevokeToken(ctx, tok.Info.ID); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.Nodes {
		c.Eventually(10*time.Second, nd.Name+" refuses the revoked token", func() error {
			if code, body := apiCall(t, c, nd, tok.Token, "GET", "/v1/status", ""); code != 401 {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
	}
	if err := c.Client().RevokeToken(ctx, tok.Info.ID); !client.IsStatus(err, 404) {
		t.Fatalf("revoking it again: %v, want 404", err)
	}
}

// TestJoinNeedsAValidToken starts agents that try to join without a join
// token, with an expired one, with a revoked one, with one whose CA pin is
// not the cluster's, and with a read token: each exits with an error that
// says what to do, and the cluster's membership does not change.
func TestJoinNeedsAValidToken(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	ctx := ctxT(t, 3*time.Minute)
	dir := t.TempDir()
	tokenFile := func(name, token string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	expired := makeToken(t, c, wire.TokenRequest{Role: "join", TTL: "1ms"}).Token
	revoked := makeToken(t, c, wire.TokenRequest{Role: "join"})
	if err := c.Client().RevokeToken(ctx, revoked.Info.ID); err != nil {
		t.Fatal(err)
	}
	good := makeToken(t, c, wire.TokenRequest{Role: "join"}).Token
	parts := strings.Split(good, ".")
	otherPin := strings.Join(append(parts[:3:3], strings.Repeat("ab", 32)), ".")
	read := makeToken(t, c, wire.TokenRequest{Role: "read"}).Token

	cases := []struct {
		name  string
		flags []string
		want  string
	}{
		{"no token", nil, "needs a join token"},
		{"expired", []string{"--token-file", tokenFile("expired", expired)}, "expired"},
		{"revoked", []string{"--token-file", tokenFile("revoked", revoked.Token)}, "refused"},
		{"wrong CA pin", []string{"--token-file", tokenFile("pin", otherPin)}, "pin"},
		{"read token", []string{"--token-file", tokenFile("read", read)}, "join token"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ports := clustertest.FreePorts(t, 5)
			args := []string{"agent", "--name", "bad" + strconv.Itoa(i), "--data-dir", filepath.Join(dir, "bad"+strconv.Itoa(i)),
				"--api-port", strconv.Itoa(ports[0]), "--peer-port", strconv.Itoa(ports[1]), "--store-port", strconv.Itoa(ports[2]),
				"--dns-port", strconv.Itoa(ports[3]), "--proxy-port", strconv.Itoa(ports[4]), "--join", c.Nodes[0].API}
			cmd := exec.Command(clustertest.Binary(t), append(args, tc.flags...)...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("the agent did not fail: %v\n%s", err, out.String())
				}
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("the agent did not exit within 90s:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("the agent's error does not say %q:\n%s", tc.want, out.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "bad"+strconv.Itoa(i), "tls", pki.CertFile)); err == nil {
				t.Fatal("the refused joiner has a certificate")
			}
		})
	}
	ms, err := c.Client().Members(ctx)
	if err != nil || len(ms.Members) != 1 {
		t.Fatalf("members after the refused joins: %+v, %v", ms, err)
	}
}

// TestStorePortsNeedTheClusterCertificate reaches a voter's store client
// port and its peer port with no client certificate, with one from another
// CA, and over plain HTTP: all are refused, and a client with the node's
// own certificate works.
func TestStorePortsNeedTheClusterCertificate(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	nd := c.Nodes[0]
	ctx := ctxT(t, time.Minute)
	other, err := pki.Bootstrap("other", "intruder", nil, []string{"intruder"}, time.Now(), time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ours := nd.StoreTLS()
	roots := ours.Clone() // trusts the cluster CA, but shows the other CA's certificate
	roots.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other.Cert, nil }
	noCert := ours.Clone()
	noCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	peer := strings.Replace(nd.StoreURL(), strconv.Itoa(nd.Ports().Store), strconv.Itoa(nd.Ports().Peer), 1)

	for _, tc := range []struct {
		name     string
		endpoint string
		tls      *tls.Config
	}{
		{"store port, another CA", nd.StoreURL(), roots},
		{"store port, no certificate", nd.StoreURL(), noCert},
		{"store port, plain", strings.Replace(nd.StoreURL(), "https://", "http://", 1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := clientv3.New(clientv3.Config{Endpoints: []string{tc.endpoint}, TLS: tc.tls, DialTimeout: 2 * time.Second})
			if err != nil {
				return // refused at dial: fine
			}
			defer cl.Close()
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if _, err := cl.Put(rctx, "/intruder", "x"); err == nil {
				t.Fatal("the store took a write")
			}
		})
	}
	// The peer port, over TLS with another CA's certificate: the
	// handshake fails.
	for _, cfg := range []*tls.Config{roots, noCert} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(peer, "https://"), cfg)
		if err == nil {
			err = conn.Handshake()
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = nil
				}
			}
			conn.Close()
		}
		if err == nil {
			t.Fatal("the peer port took a connection with a foreign or no client certificate")
		}
	}
	// With the node's own certificate it works, and nothing was written.
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{nd.StoreURL()}, TLS: ours, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.Get(ctx, "/intruder")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatal("the intruder's write is in the store")
	}
}

// TestPublicMetricsFlag: with --public-metrics, /metrics and /v1/health
// answer without a token; everything else still needs one.
func TestPublicMetricsFlag(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1, Flags: []string{"--public-metrics"}})
	nd := c.Nodes[0]
	for _, path := range []string{"/metrics", "/v1/health"} {
		if code, body := apiCall(t, c, nd, "", "GET", path, ""); code != 200 {
			t.Fatalf("GET %s without a token: %d %s", path, code, body)
		}
	}
	_, metrics := apiCall(t, c, nd, "", "GET", "/metrics", "")
	for _, kind := range []string{"node", "ca"} {
		if !strings.Contains(metrics, `tandem_tls_certificate_not_after_seconds{kind="`+kind+`"}`) {
			t.Fatalf("/metrics has no expiry of the %s certificate", kind)
		}
	}
	if code, _ := apiCall(t, c, nd, "", "GET", "/v1/status", ""); code != 401 {
		t.Fatalf("GET /v1/status without a token: %d, want 401", code)
	}
	if code, _ := apiCall(t, c, nd, "bad", "GET", "/metrics", ""); code != 401 {
		t.Fatalf("GET /metrics with a bad token: %d, want 401", code)
	}
}

// TestNodeCertificatesRenewWithoutRestart runs a cluster whose node
// certificates live one minute: each node renews its own at two thirds of
// that, and once every first certificate has expired the cluster still
// serves writes through every node, the API shows the new certificate, and
// a new node joins.
func TestNodeCertificatesRenewWithoutRestart(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Flags: []string{"--cert-ttl", "1m"}})
	ctx := ctxT(t, 3*time.Minute)
	// A renewal renames each file whole (the key and certificate together,
	// in node.pem); a load is still retried, as etcd's next handshake is.
	load := func(nd *clustertest.Node) *pki.Material {
		var m *pki.Material
		if err := clustertest.Poll(5*time.Second, func() (err error) {
			m, err = pki.Dir(filepath.Join(nd.DataDir, "tls")).Load()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := map[string]*pki.Material{}
	var expires time.Time
	for _, nd := range c.Nodes {
		first[nd.Name] = load(nd)
		if na := first[nd.Name].Cert.Leaf.NotAfter; na.After(expires) {
			expires = na
		}
	}
	for _, nd := range c.Nodes {
		c.Eventually(2*time.Minute, nd.Name+" renews its certificate", func() error {
			if load(nd).Cert.Leaf.SerialNumber.Cmp(first[nd.Name].Cert.Leaf.SerialNumber) == 0 {
				return errors.New("still the first certificate")
			}
			return nil
		})
	}
	c.Eventually(2*time.Minute, "every first certificate expired", func() error {
		if time.Now().Before(expires.Add(time.Second)) {
			return fmt.Errorf("the last one expires at %s", expires)
		}
		return nil
	})
	for i, nd := range c.Nodes {
		if _, err := c.ClientFor(nd.API).Put(ctx, "renewed/"+nd.Name, []byte(strconv.Itoa(i)), client.WriteOptions{}); err != nil {
			t.Fatalf("write through %s after the first certificates expired: %v", nd.Name, err)
		}
		conn, err := tls.Dial("tcp", nd.API, c.TLSConfig())
		if err != nil {
			t.Fatalf("TLS to %s's API: %v", nd.Name, err)
		}
		served := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if served.SerialNumber.Cmp(first[nd.Name].Cert.Leaf.SerialNumber) == 0 || time.Now().After(served.NotAfter) {
			t.Fatalf("%s's API serves its first certificate (or an expired one): not after %s", nd.Name, served.NotAfter)
		}
	}
	c.AddNode()
	c.WaitHealthy()
}

// TestInsecureAndSecureDataDirsDoNotMix: a node first started with
// --insecure refuses to start without it, and one first started secure
// refuses --insecure, each with an error that says what to do; --insecure
// with a non-loopback --bind is refused before anything starts.
func TestInsecureAndSecureDataDirsDoNotMix(t *testing.T) {
	// agent runs tandem agent on dataDir with extra flags. With ready, it
	// waits for the node to be ready, stops it with SIGTERM and returns its
	// output; otherwise it expects the agent to exit with an error.
	agent := func(dataDir string, ready bool, flags ...string) string {
		t.Helper()
		ports := clustertest.FreePorts(t, 5)
		args := append([]string{"agent", "--name", "n1", "--data-dir", dataDir, "--voters", "1",
			"--api-port", strconv.Itoa(ports[0]), "--peer-port", strconv.Itoa(ports[1]), "--store-port", strconv.Itoa(ports[2]),
			"--dns-port", strconv.Itoa(ports[3]), "--proxy-port", strconv.Itoa(ports[4])}, flags...)
		cmd := exec.Command(clustertest.Binary(t), args...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if ready {
			if err := clustertest.Poll(60*time.Second, func() error {
				if !strings.Contains(out.String(), "node ready") {
					return errors.New("not ready")
				}
				return nil
			}); err != nil {
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("agent %v not ready:\n%s", flags, out)
			}
			_ = cmd.Process.Signal(os.Interrupt)
		}
		select {
		case err := <-done:
			if ready != (err == nil) {
				t.Fatalf("agent %v: exit %v, want success %v:\n%s", flags, err, ready, out)
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("agent %v did not exit within 60 s:\n%s", flags, out)
		}
		return out.String()
	}
	dir := t.TempDir()
	insecure, secure := filepath.Join(dir, "insecure"), filepath.Join(dir, "secure")
	if out := agent(insecure, true, "--insecure"); !strings.Contains(out, "INSECURE") {
		t.Fatalf("an insecure start does not warn:\n%s", out)
	}
	if out := agent(insecure, false); !strings.Contains(out, "start it with --insecure again") {
		t.Fatalf("a secure start on an insecure data dir:\n%s", out)
	}
	agent(secure, true)
	// A node that now advertises another address gets a certificate that
	// names it before it starts.
	if out := agent(secure, true, "--advertise", "127.0.0.2"); !strings.Contains(out, "re-issued the node certificate") {
		t.Fatalf("a restart with a new --advertise:\n%s", out)
	}
	m, err := pki.Dir(filepath.Join(secure, "tls")).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(m.Cert.Leaf.IPAddresses, net.ParseIP("127.0.0.2").Equal) {
		t.Fatalf("the node certificate names %v, not the new address", m.Cert.Leaf.IPAddresses)
	}
	if out := agent(secure, false, "--insecure"); !strings.Contains(out, "start it without --insecure") {
		t.Fatalf("an insecure start on a secure data dir:\n%s", out)
	}
	if out := agent(filepath.Join(dir, "lan"), false, "--insecure", "--bind", "0.0.0.0"); !strings.Contains(out, "only for a throwaway cluster on loopback") {
		t.Fatalf("--insecure with --bind 0.0.0.0:\n%s", out)
	}
}
