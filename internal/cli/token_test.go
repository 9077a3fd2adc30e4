package cli

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/wire"
)

// clearEnv unsets the variables the CLI reads, for the test's duration.
func clearEnv(t *testing.T) {
	for _, k := range []string{"TANDEM_ADDR", "TANDEM_CA", "TANDEM_TOKEN", "TANDEM_TOKEN_FILE", "TANDEM_INSECURE"} {
		t.Setenv(k, "")
	}
}

// writeFile writes content to a new file in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeAPI serves the token endpoints over TLS, like a secure node; it
// returns its address and a file holding its CA.
func fakeAPI(t *testing.T, h http.HandlerFunc) (addr, caFile string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv.Listener.Addr().String(), writeFile(t, "ca.crt", string(ca))
}

// run runs the CLI with args and returns its exit code, standard output
// and standard error.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root, _ := newRoot(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	code := ExitOK
	if err := root.Execute(); err != nil {
		code = exitCode(err)
		stderr.WriteString("error: " + err.Error() + "\n")
	}
	return code, stdout.String(), stderr.String()
}

// TestCredentialResolution: flags win over the environment, --insecure
// needs nothing, a missing CA or token and conflicting flags are usage
// errors that say what to give.
func TestCredentialResolution(t *testing.T) {
	_, ca := fakeAPI(t, nil)
	tokFile := writeFile(t, "admin.token", "tdm1.0123456789abcdef.fromfile\n")
	for _, tt := range []struct {
		name      string
		env       map[string]string
		args      []string
		insecure  bool   // want plain HTTP
		wantToken string // want TLS with this token
		wantErr   string
	}{
		{name: "nothing", wantErr: "give --ca FILE (the cluster CA, <data-dir>/tls/ca.crt on any node) or set TANDEM_CA"},
		{name: "insecure flag", args: []string{"--insecure"}, env: map[string]string{"TANDEM_CA": ca}, insecure: true},
		{name: "insecure env", env: map[string]string{"TANDEM_INSECURE": "1"}, insecure: true},
		{name: "insecure env true", env: map[string]string{"TANDEM_INSECURE": "True"}, insecure: true},
		{name: "insecure flag false beats env", args: []string{"--insecure=false"}, env: map[string]string{"TANDEM_INSECURE": "1"}, wantErr: "give --ca FILE"},
		{name: "insecure env garbage", env: map[string]string{"TANDEM_INSECURE": "yes"}, wantErr: `TANDEM_INSECURE="yes"`},
		{name: "insecure with ca", args: []string{"--insecure", "--ca", ca}, wantErr: "--ca does not go with it"},
		{name: "no token", args: []string{"--ca", ca}, wantErr: "<data-dir>/admin.token"},
		{name: "token flag", args: []string{"--ca", ca, "--token", "tdm1.0123456789abcdef.flag"}, wantToken: "tdm1.0123456789abcdef.flag"},
		{name: "token file trimmed", args: []string{"--ca", ca, "--token-file", tokFile}, wantToken: "tdm1.0123456789abcdef.fromfile"},
		{name: "both token flags", args: []string{"--ca", ca, "--token", "x", "--token-file", tokFile}, wantErr: "--token and --token-file both give the token"},
		{name: "env", env: map[string]string{"TANDEM_CA": ca, "TANDEM_TOKEN_FILE": tokFile}, wantToken: "tdm1.0123456789abcdef.fromfile"},
		{name: "both token env", env: map[string]string{"TANDEM_CA": ca, "TANDEM_TOKEN_FILE": tokFile, "TANDEM_TOKEN": "t"}, wantErr: "both set"},
		{name: "flag beats env", args: []string{"--token", "tdm1.0123456789abcdef.flag"}, env: map[string]string{"TANDEM_CA": ca, "TANDEM_TOKEN_FILE": tokFile, "TANDEM_TOKEN": "t"}, wantToken: "tdm1.0123456789abcdef.flag"},
		{name: "ca flag beats env", args: []string{"--ca", ca, "--token", "t"}, env: map[string]string{"TANDEM_CA": "/nonexistent"}, wantToken: "t"},
		{name: "missing ca file", env: map[string]string{"TANDEM_CA": "/nonexistent/ca.crt"}, wantErr: "TANDEM_CA=/nonexistent/ca.crt: open"},
		{name: "ca not PEM", args: []string{"--ca", tokFile}, wantErr: "no PEM certificate"},
		{name: "PEM as token", args: []string{"--ca", ca, "--token-file", ca}, wantErr: "this is a PEM file, not a token"},
		{name: "empty token file", args: []string{"--ca", ca, "--token-file", writeFile(t, "empty", "\n")}, wantErr: "the token is empty"},
		{name: "token with a space", args: []string{"--ca", ca, "--token", "tdm1.a b"}, wantErr: "space or control character at byte 6"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cr credentials
			cmd := &cobra.Command{Use: "x"}
			cr.addFlags(cmd)
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			o, err := cr.options(cmd.Flags().Changed, func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error saying %q, got %v", tt.wantErr, err)
				}
				if exitCode(err) != ExitUsage {
					t.Fatalf("exit code %d, want %d (usage)", exitCode(err), ExitUsage)
				}
			case err != nil:
				t.Fatal(err)
			case tt.insecure:
				if o != nil {
					t.Fatalf("want plain HTTP, got %+v", o)
				}
			case o == nil || o.TLS == nil || o.Token != tt.wantToken:
				t.Fatalf("want TLS with token %q, got %+v", tt.wantToken, o)
			}
		})
	}
}

// TestTokenCommands: create prints the token alone on standard output (so
// it can be redirected to a file) and the details on standard error; ls
// prints a table; revoke takes an id or a whole token; a 403 prints the
// node's message and exits 1.
func TestTokenCommands(t *testing.T) {
	clearEnv(t)
	const secret = "tdm1.00112233aabbccdd.c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj.pin"
	var revoked []string
	addr, ca := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch auth := r.Header.Get("Authorization"); {
		case auth == "Bearer tdm1.00000000000000aa.reader":
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(wire.Error{Error: "token 00000000000000aa has role read: creating tokens needs admin"})
			return
		case auth != "Bearer tdm1.00000000000000ff.admin":
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(wire.Error{Error: "no valid token"})
			return
		}
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/tokens":
			var req wire.TokenRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			if req.Role != "join" || req.TTL != "1h0m0s" || req.Name != "n4" {
				t.Errorf("request %+v", req)
			}
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(wire.TokenCreated{Token: secret, Info: wire.TokenInfo{ID: "00112233aabbccdd", Role: "join", Name: "n4", Expires: time.Now().Add(time.Hour)}})
		case r.Method == http.MethodGet && r.URL.Path == "/v1/tokens":
			_ = json.NewEncoder(w).Encode(wire.Tokens{Tokens: []wire.TokenInfo{
				{ID: "00000000000000ff", Role: "admin", Name: "bootstrap", Created: time.Now().Add(-time.Hour)},
				{ID: "00112233aabbccdd", Role: "operator", Prefix: "app/", Created: time.Now(), Expires: time.Now().Add(-time.Minute), CreatedBy: "00000000000000ff"},
			}})
		case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/tokens/"):
			id := strings.TrimPrefix(r.URL.Path, "/v1/tokens/")
			if id != "00112233aabbccdd" {
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(wire.Error{Error: "no token " + id})
				return
			}
			revoked = append(revoked, id)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	})
	t.Setenv("TANDEM_ADDR", addr)
	t.Setenv("TANDEM_CA", ca)
	t.Setenv("TANDEM_TOKEN_FILE", writeFile(t, "admin.token", "tdm1.00000000000000ff.admin\n"))

	code, out, errOut := run(t, "token", "create", "--role", "join", "--ttl", "1h", "--name", "n4")
	if code != ExitOK || out != secret+"\n" {
		t.Fatalf("create: exit %d, stdout %q (want the token alone), stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "created join token 00112233aabbccdd (n4), expires in") || !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("create: details on stderr: %q", errOut)
	}
	code, out, _ = run(t, "token", "create", "--role", "join", "--ttl", "1h", "--name", "n4", "--json")
	var created wire.TokenCreated
	if code != ExitOK || json.Unmarshal([]byte(out), &created) != nil || created.Token != secret {
		t.Fatalf("create --json: exit %d, %q", code, out)
	}
	if code, _, errOut = run(t, "token", "create", "--role", "root"); code != ExitUsage || !strings.Contains(errOut, "want one of admin, operator, read, join") {
		t.Fatalf("bad role: exit %d, %q", code, errOut)
	}
	if code, _, errOut = run(t, "token", "create"); code != ExitUsage || !strings.Contains(errOut, "give --role") {
		t.Fatalf("no role: exit %d, %q", code, errOut)
	}

	code, out, _ = run(t, "token", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID NAME ROLE PREFIX CREATED EXPIRES CREATED-BY" {
		t.Fatalf("ls: exit %d\n%s", code, out)
	}
	if f := strings.Fields(lines[1]); f[0] != "00000000000000ff" || f[1] != "bootstrap" || f[2] != "admin" || f[3] != "-" || !strings.Contains(lines[1], "never") {
		t.Fatalf("ls row: %q", lines[1])
	}
	if !strings.Contains(lines[2], "app/") || !strings.Contains(lines[2], "expired") {
		t.Fatalf("ls row: %q", lines[2])
	}

	if code, out, _ = run(t, "token", "revoke", secret); code != ExitOK || out != "revoked 00112233aabbccdd\n" {
		t.Fatalf("revoke by token: exit %d, %q", code, out)
	}
	if code, _, errOut = run(t, "token", "revoke", "0000000000000001"); code != ExitNotFound || !strings.Contains(errOut, "no token 0000000000000001") {
		t.Fatalf("revoke unknown: exit %d, %q", code, errOut)
	}
	if len(revoked) != 1 {
		t.Fatalf("revoked %v", revoked)
	}

	code, out, errOut = run(t, "token", "create", "--role", "read", "--token", "tdm1.00000000000000aa.reader")
	if code != ExitError || out != "" || !strings.Contains(errOut, "creating tokens needs admin") {
		t.Fatalf("403: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut = run(t, "token", "ls", "--token", "wrong"); code != ExitError || !strings.Contains(errOut, "no valid token") {
		t.Fatalf("401: exit %d, %q", code, errOut)
	}
	t.Setenv("TANDEM_CA", "")
	if code, _, errOut = run(t, "kv", "get", "k"); code != ExitUsage || !strings.Contains(errOut, "give --ca FILE") {
		t.Fatalf("no CA: exit %d, %q", code, errOut)
	}
}

// TestTokenID: revoke takes an id or a whole token.
func TestTokenID(t *testing.T) {
	for in, want := range map[string]string{
		"00112233aabbccdd":                   "00112233aabbccdd",
		"tdm1.00112233aabbccdd.secret":       "00112233aabbccdd",
		"tdm1.00112233aabbccdd.secret.pin\n": "00112233aabbccdd",
		"something.else":                     "something.else",
	} {
		if got := tokenID(in); got != want {
			t.Errorf("tokenID(%q) = %q, want %q", in, got, want)
		}
	}
}
