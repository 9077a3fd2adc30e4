package auth

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestRoleTable(t *testing.T) {
	perms := []Perm{PermRead, PermWrite, PermCluster, PermTokens, PermDebug, PermJoin}
	// want[role] lists, in the order of perms, whether the role has each.
	want := map[Role][6]bool{
		Admin:    {true, true, true, true, true, false},
		Node:     {true, true, true, true, true, false},
		Operator: {true, true, false, false, false, false},
		Read:     {true, false, false, false, false, false},
		Join:     {false, false, false, false, false, true},
		"":       {},
		"root":   {},
	}
	for role, row := range want {
		for i, p := range perms {
			if got := role.Can(p); got != row[i] {
				t.Errorf("Role(%q).Can(%s) = %v, want %v", role, p, got, row[i])
			}
		}
		if role.Can(Perm(99)) || role.Can(Perm(-1)) {
			t.Errorf("Role(%q) can an unknown perm", role)
		}
	}
}

func TestPermString(t *testing.T) {
	for p, want := range map[Perm]string{PermRead: "read", PermWrite: "write", PermCluster: "cluster",
		PermTokens: "tokens", PermDebug: "debug", PermJoin: "join", 42: "perm(42)", -1: "perm(-1)"} {
		if got := p.String(); got != want {
			t.Errorf("Perm(%d).String() = %q, want %q", int(p), got, want)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, s := range []string{"admin", "operator", "read", "join"} {
		if r, err := ParseRole(s); err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	for s, msg := range map[string]string{
		"node":  "node certificates",
		"":      "unknown role",
		"Admin": "want admin, operator, read or join",
		"root":  `unknown role "root"`,
	} {
		_, err := ParseRole(s)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseRole(%q) = %v, want an error containing %q", s, err, msg)
		}
	}
}

func TestPrincipalString(t *testing.T) {
	for _, c := range []struct {
		p    Principal
		want string
	}{
		{Principal{Role: Operator, Prefix: "app/", TokenID: "1a2b3c4d5e6f7a8b"}, "token 1a2b3c4d5e6f7a8b (operator, prefix app/)"},
		{Principal{Role: Admin, TokenID: "1a2b3c4d5e6f7a8b"}, "token 1a2b3c4d5e6f7a8b (admin)"},
		{Principal{Role: Node, Node: "n2"}, "node n2"},
		{Principal{Role: Read}, "anonymous (read)"},
		{Principal{}, "anonymous"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%#v.String() = %q, want %q", c.p, got, c.want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	read := Principal{Role: Read, TokenID: "1a2b3c4d5e6f7a8b"}
	op := Principal{Role: Operator, TokenID: "00000000000000ff"}
	for _, c := range []struct {
		p    Principal
		perm Perm
		want string // "" for allowed
	}{
		{read, PermRead, ""},
		{read, PermWrite, "token 1a2b3c4d5e6f7a8b has role read; this request needs operator or admin (write)"},
		{op, PermCluster, "token 00000000000000ff has role operator; this request needs admin (cluster)"},
		{op, PermTokens, "token 00000000000000ff has role operator; this request needs admin (tokens)"},
		{op, PermDebug, "token 00000000000000ff has role operator; this request needs admin (debug)"},
		{op, PermJoin, "token 00000000000000ff has role operator; this request needs a join token (join)"},
		{Principal{Role: Join, TokenID: "00000000000000aa"}, PermRead,
			"token 00000000000000aa has role join; this request needs read, operator or admin (read)"},
		{Principal{Role: Node, Node: "n2"}, PermJoin, "node n2 has role node; this request needs a join token (join)"},
		{Principal{Role: Node, Node: "n2"}, PermCluster, ""},
		{Principal{}, PermRead, "an anonymous request has no role (no token was given); this request needs read, operator or admin (read)"},
		{Principal{Role: Admin}, Perm(9), "an anonymous request has role admin; this request needs a role no token has (perm(9))"},
	} {
		err := c.p.Authorize(c.perm)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s Authorize(%s) = %v, want nil", c.p, c.perm, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%s Authorize(%s) = %v\nwant %s", c.p, c.perm, err, c.want)
		case c.want != "" && !errors.Is(err, ErrForbidden):
			t.Errorf("%s Authorize(%s) = %v, not ErrForbidden", c.p, c.perm, err)
		}
	}
	err := read.AuthorizeRoute(PermWrite, "POST", "/v1/kv/x")
	if want := "token 1a2b3c4d5e6f7a8b has role read; POST /v1/kv/x needs operator or admin (write)"; err == nil || err.Error() != want {
		t.Errorf("AuthorizeRoute = %v, want %s", err, want)
	}
	if err := op.AuthorizeRoute(PermWrite, "PUT", "/v1/kv/x"); err != nil {
		t.Errorf("operator AuthorizeRoute(write) = %v", err)
	}
}

func TestAllowKey(t *testing.T) {
	app := Principal{Role: Operator, Prefix: "app/", TokenID: "1a2b3c4d5e6f7a8b"}
	all := Principal{Role: Operator, TokenID: "1a2b3c4d5e6f7a8b"}
	for _, c := range []struct {
		p        Principal
		key      string
		isPrefix bool
		want     string // "" for allowed, else part of the error
	}{
		{app, "app/x", false, ""},
		{app, "app/x/y.json", false, ""},
		{app, "app/x/", false, ""},
		{app, "app/.hidden", false, ""},
		{app, "app/", false, ""},
		{app, "app", false, `may use only keys under "app/"; key "app" is outside it`},
		{app, "apx", false, `key "apx" is outside it`},
		{app, "", false, `key "" is outside it`},
		{app, "app/../secret", false, `it has a ".." segment`},
		{app, "app/..", false, `".." segment`},
		{app, "app/./x", false, `"." segment`},
		{app, "app//x", false, `contains "//"`},
		{app, "/app/x", false, `starts with "/"`},
		{app, "app/x\x00", false, "NUL"},
		{app, "app/", true, ""},
		{app, "app/sub", true, ""},
		{app, "", true, `may list, watch or delete only prefixes under "app/"; prefix "" reaches outside it`},
		{app, "ap", true, `prefix "ap" reaches outside it`},
		{app, "app", true, `prefix "app" reaches outside it`},
		{app, "app/../", true, `".." segment`},
		{all, "app/x", false, ""},
		{all, "", true, ""},
		{all, "anything/../at all", false, ""},
		{all, "/x", true, ""},
	} {
		err := c.p.AllowKey(c.key, c.isPrefix)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s AllowKey(%q, %v) = %v, want nil", c.p, c.key, c.isPrefix, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s AllowKey(%q, %v) = %v, want an error containing %s", c.p, c.key, c.isPrefix, err, c.want)
		case c.want != "" && !errors.Is(err, ErrForbidden):
			t.Errorf("%s AllowKey(%q, %v) = %v, not ErrForbidden", c.p, c.key, c.isPrefix, err)
		}
	}
	long := "x/" + strings.Repeat("a", 1000)
	if err := app.AllowKey(long, false); err == nil || len(err.Error()) > 300 {
		t.Errorf("AllowKey(1 KB key) = %v: want a refusal that does not repeat the whole key", err)
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer tdm1.a.b":      "tdm1.a.b",
		"bearer tdm1.a.b":      "tdm1.a.b",
		"BEARER   tdm1.a.b  ":  "tdm1.a.b",
		" Bearer tdm1.a.b\r\n": "tdm1.a.b",
	} {
		if got, ok := BearerToken(h); !ok || got != want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "Bearer   ", "Basic dXNlcjpwYXNz", "tdm1.a.b", "Bearer a b", "Bearerx a", "Bearer\ta"} {
		if got, ok := BearerToken(h); ok {
			t.Errorf("BearerToken(%q) = %q, true; want false", h, got)
		}
	}
}

func TestContext(t *testing.T) {
	ctx := context.Background()
	if _, ok := FromContext(ctx); ok {
		t.Error("FromContext of a bare context reports a principal")
	}
	p := Principal{Role: Node, Node: "n2"}
	got, ok := FromContext(WithPrincipal(ctx, p))
	if !ok || got != p {
		t.Errorf("FromContext(WithPrincipal(p)) = %v, %v; want %v", got, ok, p)
	}
}

// TestStandardLibraryOnly keeps the package a leaf: it may import only the
// standard library.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		if d != "github.com/tandemhq/tandem/internal/auth" {
			t.Errorf("internal/auth depends on %s: it may import only the standard library", d)
		}
	}
}
