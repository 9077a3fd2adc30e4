// Package auth is tandem's authorization model: API tokens (their format,
// how they are stored hashed, how a presented token is verified), the roles a
// token or a node certificate carries, and the decision whether a principal
// may do what a route needs, including the KV prefix restriction a token may
// carry. It is a leaf package (it imports only the standard library): the
// store, the HTTP wiring and the certificates live elsewhere.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Role is what a principal may do. Tokens carry Admin, Operator, Read or
// Join; Node belongs to a node's client certificate and is never given to a
// token.
type Role string

// The roles.
const (
	Admin    Role = "admin"    // everything except asking for a node certificate
	Operator Role = "operator" // services and KV; no membership or token changes
	Read     Role = "read"     // reads only
	Join     Role = "join"     // may only ask for a node certificate
	Node     Role = "node"     // another node of the cluster, by its certificate
)

// tokenRoles are the roles a token can have, least powerful first (the
// order in which an error lists the roles that would do).
var tokenRoles = []Role{Read, Operator, Admin, Join}

// ParseRole reads a role a token can be created with: admin, operator, read
// or join.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r == Node {
		return "", errors.New(`role "node" belongs to node certificates and cannot be given to a token: want admin, operator, read or join`)
	}
	if !r.Creatable() {
		return "", fmt.Errorf("unknown role %q: want admin, operator, read or join", s)
	}
	return r, nil
}

// Creatable reports whether a token can carry the role (every role but Node).
func (r Role) Creatable() bool {
	switch r {
	case Admin, Operator, Read, Join:
		return true
	}
	return false
}

// Perm is what a route needs.
type Perm int

// The permissions routes need.
const (
	PermRead    Perm = iota // GET of data: KV, services, members, status, events, metrics, health
	PermWrite               // KV and service/instance writes
	PermCluster             // membership: join a member, leave, remove a node
	PermTokens              // create, list, revoke tokens
	PermDebug               // pprof
	PermJoin                // ask for a node certificate with a join token
)

var permNames = [...]string{
	PermRead:    "read",
	PermWrite:   "write",
	PermCluster: "cluster",
	PermTokens:  "tokens",
	PermDebug:   "debug",
	PermJoin:    "join",
}

// String names the permission: read, write, cluster, tokens, debug or join.
func (p Perm) String() string {
	if p >= 0 && int(p) < len(permNames) {
		return permNames[p]
	}
	return fmt.Sprintf("perm(%d)", int(p))
}

// Can is the role table: admin and node may do everything but PermJoin;
// operator may read and write; read may read; join may only PermJoin. An
// unknown role may do nothing.
func (r Role) Can(p Perm) bool {
	switch r {
	case Admin, Node:
		return p >= PermRead && p <= PermDebug
	case Operator:
		return p == PermRead || p == PermWrite
	case Read:
		return p == PermRead
	case Join:
		return p == PermJoin
	}
	return false
}

// Principal is who made a request: a token's holder or a node.
type Principal struct {
	Role    Role
	Prefix  string // KV prefix restriction ("" = all keys)
	TokenID string // "" for a node certificate
	Node    string // node name for a node certificate
}

// String describes the principal for logs and errors, like
// "token 1a2b3c4d5e6f7a8b (operator, prefix app/)" or "node n2". It never
// contains a secret.
func (p Principal) String() string {
	switch {
	case p.Node != "":
		return "node " + p.Node
	case p.TokenID != "":
		if p.Prefix != "" {
			return fmt.Sprintf("token %s (%s, prefix %s)", p.TokenID, p.Role, p.Prefix)
		}
		return fmt.Sprintf("token %s (%s)", p.TokenID, p.Role)
	case p.Role != "":
		return fmt.Sprintf("anonymous (%s)", p.Role)
	}
	return "anonymous"
}

// ErrForbidden is what every refusal of Authorize, AuthorizeRoute and
// AllowKey matches (errors.Is): the caller is known but may not do this,
// which HTTP answers with 403.
var ErrForbidden = errors.New("forbidden")

// forbidden is a refusal; its message says who was refused and what would
// be needed.
type forbidden struct{ msg string }

func (e *forbidden) Error() string        { return e.msg }
func (e *forbidden) Is(target error) bool { return target == ErrForbidden }

// Authorize returns nil if the principal may do what perm covers, or an
// error for a 403 naming what is missing, like
// "token 1a2b3c4d5e6f7a8b has role read; this request needs operator or admin (write)".
// AuthorizeRoute says which request instead of "this request".
func (p Principal) Authorize(perm Perm) error {
	return p.authorize(perm, "this request")
}

// AuthorizeRoute is Authorize with the request named in the error, like
// "token 1a2b3c4d5e6f7a8b has role read; POST /v1/kv/x needs operator or admin (write)".
func (p Principal) AuthorizeRoute(perm Perm, method, path string) error {
	return p.authorize(perm, method+" "+path)
}

func (p Principal) authorize(perm Perm, what string) error {
	if p.Role.Can(perm) {
		return nil
	}
	var who string
	switch {
	case p.Node != "":
		who = "node " + p.Node
	case p.TokenID != "":
		who = "token " + p.TokenID
	default:
		who = "an anonymous request"
	}
	has := fmt.Sprintf("has role %s", p.Role)
	if p.Role == "" {
		has = "has no role (no token was given)"
	}
	return &forbidden{fmt.Sprintf("%s %s; %s needs %s (%s)", who, has, what, rolesFor(perm), perm)}
}

// rolesFor lists the token roles that have perm, like "operator or admin".
func rolesFor(perm Perm) string {
	if perm == PermJoin {
		return "a join token"
	}
	var names []string
	for _, r := range tokenRoles {
		if r.Can(perm) {
			names = append(names, string(r))
		}
	}
	switch len(names) {
	case 0:
		return "a role no token has"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// AllowKey checks a KV key (the user's key, after the /v1/kv/ path prefix,
// already unescaped) or, with isPrefix, a KV prefix (list, watch or delete
// with prefix=true) against the principal's Prefix. An unrestricted
// principal may use every key. A prefix-restricted one may touch only keys
// that start with its Prefix and list, watch or delete only prefixes that
// start with it (so never the whole namespace, nor a shorter prefix that
// reaches outside it); and it is refused keys with path tricks (a leading
// "/", "//", a "." or ".." segment, NUL) whatever their prefix, so that no
// layer that cleans paths can turn an allowed key into another.
func (p Principal) AllowKey(key string, isPrefix bool) error {
	if p.Prefix == "" {
		return nil
	}
	what := "key"
	if isPrefix {
		what = "prefix"
	}
	if problem := pathTrick(key); problem != "" {
		return &forbidden{fmt.Sprintf("%s %s is refused for %s: it %s; a prefix-restricted token may use only plain keys under %q",
			what, quoteKey(key), p, problem, p.Prefix)}
	}
	if !strings.HasPrefix(key, p.Prefix) {
		if isPrefix {
			return &forbidden{fmt.Sprintf("%s may list, watch or delete only prefixes under %q; prefix %s reaches outside it",
				p, p.Prefix, quoteKey(key))}
		}
		return &forbidden{fmt.Sprintf("%s may use only keys under %q; key %s is outside it", p, p.Prefix, quoteKey(key))}
	}
	return nil
}

// pathTrick says what is wrong with a key or prefix that a path-cleaning
// layer could rewrite, or "" if nothing is.
func pathTrick(k string) string {
	if strings.IndexByte(k, 0) >= 0 {
		return "contains a NUL byte"
	}
	if strings.HasPrefix(k, "/") {
		return `starts with "/"`
	}
	if strings.Contains(k, "//") {
		return `contains "//"`
	}
	for seg := range strings.SplitSeq(k, "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("has a %q segment", seg)
		}
	}
	return ""
}

// quoteKey quotes a key for an error, shortened if it is long (keys may be
// up to 1 KiB).
func quoteKey(k string) string {
	const max = 80
	if len(k) > max {
		return fmt.Sprintf("%q…", k[:max])
	}
	return fmt.Sprintf("%q", k)
}

type principalKey struct{}

// WithPrincipal returns a context that carries the principal of a request.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal WithPrincipal stored, and whether there
// was one.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// BearerToken extracts the token from an Authorization header value
// ("Bearer <token>", the scheme in any case). It reports false if the header
// is empty, has another scheme, or the token is empty or has anything but
// visible ASCII in it.
func BearerToken(header string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok := strings.TrimSpace(rest)
	if tok == "" {
		return "", false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return "", false
		}
	}
	return tok, true
}
