package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/wire"
)

// The tests of `up` run it for real, with this test binary standing in for
// the agent (TestMain runs fakeAgent when TANDEM_FAKE_AGENT=1): a fake that
// serves the few endpoints `up` uses, over TLS with a bootstrap CA and an
// admin token as the secure agent writes them, or plain with --insecure.

func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_FAKE_AGENT") == "1" {
		if err := fakeAgent(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeAgent serves /v1/health, /v1/status, /v1/events and POST /v1/tokens.
// The nodes of one cluster share state through files beside their data
// dirs: the CA's key (fake-ca.key), and a node is counted alive while its
// data dir holds "ready".
func fakeAgent(args []string) error {
	var dataDir, apiPort, tokenFile string
	var join []string
	voters := 3
	insecure := false
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "--data-dir":
			dataDir = args[i+1]
		case "--api-port":
			apiPort = args[i+1]
		case "--token-file":
			tokenFile = args[i+1]
		case "--join":
			join = append(join, args[i+1])
		case "--voters":
			fmt.Sscan(args[i+1], &voters)
		case "--insecure":
			insecure = true
		}
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "tls"), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(args)
	if err := os.WriteFile(filepath.Join(dataDir, "args.json"), b, 0o644); err != nil {
		return err
	}
	_, statErr := os.Stat(filepath.Join(dataDir, "node.json"))
	fresh := statErr != nil
	if fresh && len(join) > 0 && !insecure {
		tok, err := os.ReadFile(tokenFile)
		if err != nil || len(strings.Split(strings.TrimSpace(string(tok)), ".")) != 4 {
			return fmt.Errorf("join without a join token: %q %v", tok, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dataDir, "node.json"), []byte("{}"), 0o644); err != nil {
		return err
	}
	parent := filepath.Dir(dataDir)
	adminFile := filepath.Join(parent, "n1", "admin.token")
	ln, err := net.Listen("tcp", "127.0.0.1:"+apiPort)
	if err != nil {
		return err
	}
	if !insecure {
		cfg, err := fakeTLS(parent, dataDir, fresh && len(join) == 0)
		if err != nil {
			return err
		}
		ln = tls.NewListener(ln, cfg)
		if fresh && len(join) == 0 {
			// Like the agent: 0600, the token and a newline, after the CA.
			if err := os.WriteFile(adminFile, []byte("tdm1.00000000000000ad.YWRtaW5hZG1pbmFkbWluYWRtaW5hZG1pbmFkbWluYWQ\n"), 0o600); err != nil {
				return err
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, map[string]bool{"ok": true}) })
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		alive, _ := filepath.Glob(filepath.Join(parent, "*", "ready"))
		v := min(voters, len(alive))
		reply(w, 200, wire.Status{Nodes: len(alive), NodesAlive: len(alive), Voters: v, VotersAlive: v, Leader: "n1"})
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		reply(w, 200, map[string]any{"revision": 1, "events": []wire.Event{}})
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req wire.TokenRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		reply(w, http.StatusCreated, wire.TokenCreated{Token: "tdm1.00000000000000j0.am9pbmpvaW5qb2luam9pbmpvaW5qb2luam9pbmpvaW4.pin", Info: wire.TokenInfo{ID: "00000000000000j0", Role: req.Role, Name: req.Name}})
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !insecure {
			admin, _ := os.ReadFile(adminFile)
			if r.Header.Get("Authorization") != "Bearer "+strings.TrimSpace(string(admin)) {
				reply(w, http.StatusUnauthorized, wire.Error{Error: "no valid token"})
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	ready := filepath.Join(dataDir, "ready")
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(ready)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// fakeTLS returns the node's server TLS configuration, its certificate
// signed by the cluster's CA, which the bootstrap node creates.
func fakeTLS(parent, dataDir string, bootstrap bool) (*tls.Config, error) {
	keyFile := filepath.Join(parent, "fake-ca.key")
	caFile := filepath.Join(parent, "n1", "tls", "ca.crt")
	if bootstrap {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake CA"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return nil, err
		}
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	caBlock, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return nil, err
	}
	keyBlock, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dataDir, "tls", "ca.crt"), caPEM, 0o644); err != nil {
		return nil, err
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: filepath.Base(dataDir)}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePorts returns a base port with the 10 ports of each of n nodes free.
func freePorts(t *testing.T, n int) int {
	for range 50 {
		base := 20000 + 10*mrand.IntN(2000)
		var lns []net.Listener
		for p := base; p < base+10*n; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if len(lns) == 10*n {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// startUp runs `up` on dir until the returned stop is called; it waits for
// the cluster to be ready and returns up's output so far.
func startUp(t *testing.T, dir string, n int, base int, insecure bool) (out *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runUp(ctx, out, dir, n, base, 3, true, insecure, false, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "events (Ctrl-C stops the cluster)") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("up ended: %v\n%s", err, out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("up not ready in 30s:\n%s", out)
		}
	}
	return out, func() error { cancel(); return <-done }
}

func nodeArgs(t *testing.T, dir, node string) []string {
	t.Helper()
	var args []string
	b, err := os.ReadFile(filepath.Join(dir, node, "args.json"))
	if err == nil {
		err = json.Unmarshal(b, &args)
	}
	if err != nil {
		t.Fatal(err)
	}
	return args
}

// TestUpSecure: `up` waits for n1's CA and admin token, polls over TLS with
// it, creates a join token for n2 and n3 (passed as --token-file), writes
// DIR/env with copies of the CA and token (0600), and a restart needs no
// join token. A secure cluster does not restart with --insecure.
func TestUpSecure(t *testing.T) {
	t.Setenv("TANDEM_FAKE_AGENT", "1")
	dir := t.TempDir()
	base := freePorts(t, 3)
	out, stop := startUp(t, dir, 3, base, false)
	if err := stop(); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "source "+filepath.Join(dir, "env")) || !strings.Contains(out.String(), "cluster started: 3 nodes") {
		t.Fatalf("ready message:\n%s", out)
	}
	if a := nodeArgs(t, dir, "n1"); slices.Contains(a, "--token-file") || slices.Contains(a, "--insecure") {
		t.Fatalf("n1 args %v", a)
	}
	joinFile := filepath.Join(dir, "join.token")
	for _, nd := range []string{"n2", "n3"} {
		if a := nodeArgs(t, dir, nd); !slices.Contains(a, joinFile) || !slices.Contains(a, "--join") {
			t.Fatalf("%s args %v: want --join and --token-file %s", nd, a, joinFile)
		}
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("export TANDEM_ADDR=127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d\nexport TANDEM_CA=%s\nexport TANDEM_TOKEN_FILE=%s\n",
		base, base+10, base+20, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "admin.token"))
	if !strings.Contains(string(env), want) || !strings.Contains(string(env), "unset TANDEM_TOKEN TANDEM_INSECURE") {
		t.Fatalf("env:\n%s\nwant:\n%s", env, want)
	}
	for f, mode := range map[string]os.FileMode{"env": 0o600, "admin.token": 0o600, "join.token": 0o600, "ca.crt": 0o644} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", f, st.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "admin.token")); string(b) != "tdm1.00000000000000ad.YWRtaW5hZG1pbmFkbWluYWRtaW5hZG1pbmFkbWluYWQ\n" {
		t.Fatalf("admin.token copy %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); !strings.HasPrefix(string(b), "-----BEGIN CERTIFICATE") {
		t.Fatalf("ca.crt copy %q", b)
	}

	// The env works for the CLI: TLS with the CA, the token from the file.
	t.Setenv("TANDEM_ADDR", fmt.Sprintf("127.0.0.1:%d", base))
	t.Setenv("TANDEM_CA", filepath.Join(dir, "ca.crt"))
	t.Setenv("TANDEM_TOKEN_FILE", filepath.Join(dir, "admin.token"))
	t.Setenv("TANDEM_TOKEN", "")
	t.Setenv("TANDEM_INSECURE", "")
	out, stop = startUp(t, dir, 3, base, false)
	if code, stdout, stderr := run(t, "token", "create", "--role", "read"); code != ExitOK || !strings.HasPrefix(stdout, "tdm1.") {
		t.Fatalf("token create with up's env: exit %d %q %q", code, stdout, stderr)
	}
	if err := stop(); err != nil {
		t.Fatalf("up again: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "cluster restarted") {
		t.Fatalf("restart:\n%s", out)
	}
	for _, nd := range []string{"n1", "n2", "n3"} {
		if a := nodeArgs(t, dir, nd); slices.Contains(a, "--token-file") || slices.Contains(a, "--join") {
			t.Fatalf("%s restarted with %v: want neither --join nor --token-file", nd, a)
		}
	}

	err = runUp(ctxT(t), &syncBuffer{}, dir, 3, base, 3, false, true, false, nil)
	if err == nil || exitCode(err) != ExitUsage || !strings.Contains(err.Error(), "is secure: it cannot restart with --insecure") {
		t.Fatalf("restart with --insecure: %v", err)
	}
}

// TestUpInsecure: every agent gets --insecure, env says TANDEM_INSECURE=1,
// and the cluster does not restart without --insecure.
func TestUpInsecure(t *testing.T) {
	t.Setenv("TANDEM_FAKE_AGENT", "1")
	dir := t.TempDir()
	base := freePorts(t, 2)
	out, stop := startUp(t, dir, 2, base, true)
	if err := stop(); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	for _, nd := range []string{"n1", "n2"} {
		if a := nodeArgs(t, dir, nd); !slices.Contains(a, "--insecure") || slices.Contains(a, "--token-file") {
			t.Fatalf("%s args %v", nd, a)
		}
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil || !strings.Contains(string(env), "export TANDEM_INSECURE=1\n") || strings.Contains(string(env), "export TANDEM_CA") {
		t.Fatalf("env %q: %v", env, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "join.token")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("join.token in an insecure cluster: %v", err)
	}
	err = runUp(ctxT(t), &syncBuffer{}, dir, 2, base, 3, false, false, false, nil)
	if err == nil || !strings.Contains(err.Error(), "was started with --insecure") {
		t.Fatalf("restart without --insecure: %v", err)
	}
}

// ctxT bounds a call that should fail at once.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/tandem-local/ca.crt": "/tmp/tandem-local/ca.crt",
		"/tmp/my dir/env":          "'/tmp/my dir/env'",
		"it's":                     `'it'\''s'`,
		"":                         "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
