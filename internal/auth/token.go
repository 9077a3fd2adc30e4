package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Token format. An API token is
//
//	tdm1.<id>.<secret>
//
// where id is 16 lowercase hex digits (8 random bytes; not secret: it names
// the token in logs, in `tandem token ls` and in the store) and secret is 43
// characters of unpadded base64url (32 random bytes). A join token handed to
// a new node also carries the pin of the cluster CA, so the node can check it
// talks to the right cluster before it sends anything:
//
//	tdm1.<id>.<secret>.<pin>
//
// with pin the 64 hex digits of the SHA-256 of the CA's public key.
const (
	version   = "tdm1"
	idBytes   = 8
	idLen     = 2 * idBytes
	secBytes  = 32
	secLen    = 43 // base64.RawURLEncoding.EncodedLen(secBytes)
	hashLen   = 2 * sha256.Size
	pinLen    = 2 * sha256.Size
	maxName   = 64
	maxPrefix = 1024 // the API's key limit
)

// b64 decodes secrets strictly: the unused low bits of the last character
// must be zero, so each secret has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()

// The hints that end Parse's and ParseJoin's errors.
const (
	formatHint = "a tandem token looks like tdm1.<16 hex digits>.<43 base64url characters>; create one with `tandem token create`"
	joinHint   = "a join token has 4 dot-separated parts, tdm1.<16 hex digits>.<43 base64url characters>.<64 hex digits of the CA pin>; create one with `tandem token create --role join`"
)

// Record is a token as stored (JSON at /tandem/tokens/<id>). It holds the
// hash of the secret, never the secret.
type Record struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Role      Role      `json:"role"`
	Prefix    string    `json:"prefix,omitempty"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret's 32 bytes
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"` // zero: never
	CreatedBy string    `json:"created_by,omitempty"`
}

// hashSecret is the stored form of a secret. A single fast SHA-256 is right
// here, unlike for passwords: secrets are 256 random bits, so there is
// nothing to guess and no use in slowing a guesser down, and every API
// request verifies one.
func hashSecret(secret []byte) string {
	h := sha256.Sum256(secret)
	return hex.EncodeToString(h[:])
}

// Expired reports whether the token has expired at now.
func (r Record) Expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// Matches reports whether secret hashes to the record's hash, comparing in
// constant time.
func (r Record) Matches(secret []byte) bool {
	want, err := hex.DecodeString(r.Hash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// Principal is who a request made with this token is.
func (r Record) Principal() Principal {
	return Principal{Role: r.Role, Prefix: r.Prefix, TokenID: r.ID}
}

// Validate checks a record read from the store or about to be written: the
// id and hash are well-formed, the role is one a token can have, the prefix
// (only operator and read tokens may have one) has no path tricks, the name
// is at most 64 printable characters, and an expiry comes after creation.
func (r Record) Validate() error {
	if !ValidID(r.ID) {
		return fmt.Errorf("token id %q: want %d lowercase hex digits", r.ID, idLen)
	}
	if !r.Role.Creatable() {
		return fmt.Errorf("token %s: role %q: want admin, operator, read or join", r.ID, r.Role)
	}
	if !isHex(r.Hash, hashLen) {
		return fmt.Errorf("token %s: hash: want %d lowercase hex digits (the SHA-256 of the secret)", r.ID, hashLen)
	}
	if err := checkPrefix(r.Role, r.Prefix); err != nil {
		return fmt.Errorf("token %s: %w", r.ID, err)
	}
	if err := checkName(r.Name); err != nil {
		return fmt.Errorf("token %s: %w", r.ID, err)
	}
	if !r.Expires.IsZero() && !r.Expires.After(r.Created) {
		return fmt.Errorf("token %s: expires %s, not after its creation %s", r.ID,
			r.Expires.Format(time.RFC3339), r.Created.Format(time.RFC3339))
	}
	return nil
}

// checkPrefix checks a token's KV prefix restriction.
func checkPrefix(role Role, prefix string) error {
	if prefix == "" {
		return nil
	}
	if role != Operator && role != Read {
		return fmt.Errorf("a %s token cannot have a KV prefix: only operator and read tokens can be restricted to one (an admin could create itself an unrestricted token)", role)
	}
	if len(prefix) > maxPrefix {
		return fmt.Errorf("prefix is %d bytes; the limit is %d", len(prefix), maxPrefix)
	}
	if !utf8.ValidString(prefix) {
		return errors.New("prefix is not valid UTF-8")
	}
	if problem := pathTrick(prefix); problem != "" {
		return fmt.Errorf("prefix %s %s: give a plain key prefix like app/", quoteKey(prefix), problem)
	}
	return nil
}

// checkName checks a token's display name.
func checkName(name string) error {
	if !utf8.ValidString(name) {
		return errors.New("name is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n > maxName {
		return fmt.Errorf("name is %d characters; the limit is %d", n, maxName)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return fmt.Errorf("name %q has an unprintable character %U", name, c)
		}
	}
	return nil
}

// New creates a token: it returns the token to hand to its holder (shown
// once, never stored) and the record to store. ttl 0 means it never expires.
// The id and secret come from crypto/rand.
func New(role Role, name, prefix string, ttl time.Duration, now time.Time) (token string, rec Record, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", Record{}, err
	}
	if ttl < 0 {
		return "", Record{}, fmt.Errorf("token lifetime %s is negative: give a positive duration, or 0 for a token that never expires", ttl)
	}
	buf := make([]byte, idBytes+secBytes)
	if _, err := rand.Read(buf); err != nil {
		return "", Record{}, fmt.Errorf("reading random bytes for a token: %w", err)
	}
	id, secret := hex.EncodeToString(buf[:idBytes]), buf[idBytes:]
	now = now.UTC().Round(0)
	rec = Record{ID: id, Name: name, Role: role, Prefix: prefix, Hash: hashSecret(secret), Created: now}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}
	if err := rec.Validate(); err != nil {
		return "", Record{}, err
	}
	return version + "." + id + "." + b64.EncodeToString(secret), rec, nil
}

// Parse splits a token into its id and its secret's 32 bytes. It is strict
// about the format but accepts surrounding whitespace (token files end in a
// newline). Its errors say what is wrong without repeating the token.
func Parse(token string) (id string, secret []byte, err error) {
	return parse(token, formatHint)
}

// parse is Parse with the hint its errors end with.
func parse(token, hint string) (id string, secret []byte, err error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return "", nil, errors.New("empty token: " + hint)
	}
	parts := strings.Split(token, ".")
	if parts[0] != version {
		if len(parts) > 1 && strings.HasPrefix(parts[0], "tdm") {
			return "", nil, errors.New("token is of an unknown version (this tandem understands tdm1 tokens): " + hint)
		}
		return "", nil, errors.New("not a tandem token (it does not start with tdm1.): " + hint)
	}
	switch {
	case len(parts) == 4 && isHex(strings.ToLower(parts[3]), pinLen):
		return "", nil, errors.New("this is a join token (it ends with the CA pin): give it to `tandem agent --join ADDR --token-file FILE`, or drop its last part to use it as a token")
	case len(parts) != 3:
		return "", nil, fmt.Errorf("token has %d dot-separated parts, want 3: %s", len(parts), hint)
	}
	id, sec := parts[1], parts[2]
	if !isHex(id, idLen) {
		return "", nil, fmt.Errorf("token id (the part after tdm1.) is not %d lowercase hex digits: %s", idLen, hint)
	}
	if len(sec) != secLen {
		return "", nil, fmt.Errorf("token %s: the secret (the last part) is %d characters, want %d (was the token cut short?): %s", id, len(sec), secLen, hint)
	}
	secret, err = b64.DecodeString(sec)
	if err != nil || len(secret) != secBytes {
		return "", nil, fmt.Errorf("token %s: the secret (the last part) is not base64url (letters, digits, - and _): %s", id, hint)
	}
	return id, secret, nil
}

// JoinToken appends the cluster CA's pin (64 hex digits) to a token,
// making the join token a new node is given.
func JoinToken(token, pinHex string) string {
	return strings.TrimSpace(token) + "." + strings.ToLower(strings.TrimSpace(pinHex))
}

// ParseJoin splits a join token into the token (for Verify) and the CA pin
// (64 lowercase hex digits). It accepts surrounding whitespace.
func ParseJoin(s string) (token, pinHex string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", errors.New("empty join token: " + joinHint)
	}
	switch n := strings.Count(s, ".") + 1; {
	case n == 3:
		return "", "", errors.New("this token has no CA pin: " + joinHint + ", which prints it with the pin")
	case n != 4:
		return "", "", fmt.Errorf("join token has %d dot-separated parts: %s", n, joinHint)
	}
	i := strings.LastIndexByte(s, '.')
	token, pinHex = s[:i], strings.ToLower(s[i+1:])
	if _, _, err := parse(token, joinHint); err != nil {
		return "", "", fmt.Errorf("join token: %w", err)
	}
	if !isHex(pinHex, pinLen) {
		return "", "", fmt.Errorf("join token: the CA pin (the last part) is not %d hex digits (was the token cut short?): %s", pinLen, joinHint)
	}
	return token, pinHex, nil
}

// ErrUnknown and ErrExpired are the refusals of Verify (errors.Is). An
// unknown id and a wrong secret are both ErrUnknown, so a caller cannot
// tell which it was.
var (
	ErrUnknown = errors.New("unknown or revoked token: check the token you gave, or create a new one with `tandem token create`")
	ErrExpired = errors.New("token has expired: create a new one with `tandem token create`")
)

// tokenError names the token (by id, which is not secret) in a Verify
// refusal.
type tokenError struct {
	id  string
	err error
}

func (e *tokenError) Error() string { return "token " + e.id + ": " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// dummy is compared against when the id is unknown, so that an unknown id
// and a wrong secret cost the same.
var dummy = Record{Hash: strings.Repeat("0", hashLen)}

// Verify checks a presented token: it parses it, looks its record up by id
// and checks the secret, then the expiry. A malformed token gets Parse's
// error; an unknown id or a wrong secret ErrUnknown; an expired token
// ErrExpired; a stored record that is not valid (say a hand-edited role) an
// error of its own. lookup returns the stored record of an id.
func Verify(token string, lookup func(id string) (Record, bool), now time.Time) (Principal, error) {
	id, secret, err := Parse(token)
	if err != nil {
		return Principal{}, err
	}
	rec, ok := lookup(id)
	if !ok {
		dummy.Matches(secret)
		return Principal{}, &tokenError{id, ErrUnknown}
	}
	if rec.ID != id || !rec.Matches(secret) {
		return Principal{}, &tokenError{id, ErrUnknown}
	}
	if rec.Expired(now) {
		return Principal{}, &tokenError{id, ErrExpired}
	}
	if err := rec.Validate(); err != nil {
		return Principal{}, fmt.Errorf("stored record is not valid (%w): revoke this token and create another", err)
	}
	return rec.Principal(), nil
}

// ValidID reports whether id is a well-formed token id (16 lowercase hex
// digits), as `tandem token revoke ID` must be before it names a store key.
func ValidID(id string) bool { return isHex(id, idLen) }

// isHex reports whether s is n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
