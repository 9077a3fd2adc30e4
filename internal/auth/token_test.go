package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)

const pin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newToken(t *testing.T, role Role, prefix string, ttl time.Duration) (string, Record) {
	t.Helper()
	tok, rec, err := New(role, "test", prefix, ttl, t0)
	if err != nil {
		t.Fatalf("New(%s, %q, %s): %v", role, prefix, ttl, err)
	}
	return tok, rec
}

func TestNewParseRoundTrip(t *testing.T) {
	tok, rec := newToken(t, Operator, "app/", time.Hour)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != "tdm1" || len(parts[1]) != 16 || len(parts[2]) != 43 {
		t.Fatalf("token %q does not look like tdm1.<16>.<43>", tok)
	}
	if err := rec.Validate(); err != nil {
		t.Fatalf("New's record does not validate: %v", err)
	}
	if rec.ID != parts[1] || rec.Role != Operator || rec.Prefix != "app/" || rec.Name != "test" ||
		!rec.Created.Equal(t0) || !rec.Expires.Equal(t0.Add(time.Hour)) {
		t.Errorf("record %+v does not match what was asked", rec)
	}
	if strings.Contains(rec.Hash, parts[2]) || len(rec.Hash) != 64 {
		t.Errorf("record hash %q: want the 64-hex SHA-256, not the secret", rec.Hash)
	}
	for _, in := range []string{tok, tok + "\n", "  " + tok + "\r\n"} {
		id, secret, err := Parse(in)
		if err != nil || id != rec.ID || len(secret) != 32 || !rec.Matches(secret) {
			t.Errorf("Parse(%q) = %s, %x, %v; want the record's id and a matching secret", in, id, secret, err)
		}
	}
	// Two tokens never share an id or a secret.
	tok2, rec2 := newToken(t, Operator, "app/", time.Hour)
	if tok2 == tok || rec2.ID == rec.ID || rec2.Hash == rec.Hash {
		t.Errorf("two New calls gave overlapping tokens %q and %q", tok, tok2)
	}
	// The stored JSON never holds the secret and round-trips.
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(parts[2])) {
		t.Errorf("stored JSON %s contains the secret", b)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil || back != rec {
		t.Errorf("JSON round trip: %+v, %v; want %+v", back, err, rec)
	}
	_, never := newToken(t, Read, "", 0)
	b, _ = json.Marshal(never)
	if !never.Expires.IsZero() || bytes.Contains(b, []byte("expires")) || never.Expired(t0.Add(100*365*24*time.Hour)) {
		t.Errorf("a token with ttl 0 expires: %s", b)
	}
	for _, want := range []string{`"id":`, `"role":"read"`, `"hash":`, `"created":`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("stored JSON %s lacks %s", b, want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []struct {
		role   Role
		name   string
		prefix string
		ttl    time.Duration
		want   string
	}{
		{Node, "", "", 0, "node certificates"},
		{"root", "", "", 0, "unknown role"},
		{Read, "", "", -time.Second, "negative"},
		{Admin, "", "app/", 0, "admin token cannot have a KV prefix"},
		{Join, "", "app/", time.Hour, "join token cannot have a KV prefix"},
		{Read, "", "app/../x", 0, `".." segment`},
		{Read, "", "/app", 0, `starts with "/"`},
		{Read, "bad\nname", "", 0, "unprintable"},
		{Read, strings.Repeat("n", 65), "", 0, "65 characters; the limit is 64"},
	} {
		tok, _, err := New(c.role, c.name, c.prefix, c.ttl, t0)
		if err == nil || !strings.Contains(err.Error(), c.want) || tok != "" {
			t.Errorf("New(%s, %q, %q, %s) = %q, %v; want an error containing %q", c.role, c.name, c.prefix, c.ttl, tok, err, c.want)
		}
	}
	if _, _, err := New(Read, strings.Repeat("ü", 64), "", 0, t0); err != nil {
		t.Errorf("New with a 64-character name: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	tok, _ := newToken(t, Read, "", 0)
	parts := strings.Split(tok, ".")
	id, sec := parts[1], parts[2]
	for _, c := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty token"},
		{"spaces", "  \n", "empty token"},
		{"wrong version", "tdm2." + id + "." + sec, "unknown version"},
		{"no version", id + "." + sec, "not a tandem token"},
		{"other scheme", "Bearer " + tok, "not a tandem token"},
		{"bad hex id", "tdm1." + strings.ToUpper(id) + "." + sec, "not 16 lowercase hex digits"},
		{"non-hex id", "tdm1.zzzzzzzzzzzzzzzz." + sec, "not 16 lowercase hex digits"},
		{"short id", "tdm1." + id[:15] + "." + sec, "not 16 lowercase hex digits"},
		{"short secret", "tdm1." + id + "." + sec[:42], "is 42 characters, want 43"},
		{"long secret", "tdm1." + id + "." + sec + "A", "is 44 characters, want 43"},
		{"no secret", "tdm1." + id, "has 2 dot-separated parts, want 3"},
		{"extra part", tok + ".x", "has 4 dot-separated parts, want 3"},
		{"join token", tok + "." + pin, "this is a join token"},
		{"non-base64url", "tdm1." + id + "." + "+" + sec[1:], "not base64url"},
		{"padding", "tdm1." + id + "." + sec[:42] + "=", "not base64url"},
		{"inner space", "tdm1." + id + "." + sec[:20] + " " + sec[21:], "not base64url"},
		// The last character's two unused bits must be zero: one spelling per secret.
		{"non-canonical", "tdm1." + id + "." + sec[:42] + "B", "not base64url"},
	} {
		_, secret, err := Parse(c.in)
		if err == nil {
			t.Errorf("%s: Parse(%q) accepted it", c.name, c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || secret != nil {
			t.Errorf("%s: Parse(%q) = %v; want an error containing %q", c.name, c.in, err, c.want)
		}
		if strings.Contains(err.Error(), sec[:20]) {
			t.Errorf("%s: Parse's error %q repeats the secret", c.name, err)
		}
	}
}

func TestVerify(t *testing.T) {
	tok, rec := newToken(t, Operator, "app/", time.Hour)
	store := map[string]Record{rec.ID: rec}
	lookup := func(id string) (Record, bool) { r, ok := store[id]; return r, ok }

	p, err := Verify(tok+"\n", lookup, t0.Add(time.Minute))
	if err != nil || p != (Principal{Role: Operator, Prefix: "app/", TokenID: rec.ID}) {
		t.Fatalf("Verify(good token) = %v, %v", p, err)
	}

	other, otherRec := newToken(t, Admin, "", 0)
	wrongSecret := "tdm1." + rec.ID + "." + strings.Split(other, ".")[2]
	_, errWrong := Verify(wrongSecret, lookup, t0)
	_, errUnknown := Verify(other, lookup, t0)
	for name, err := range map[string]error{"wrong secret": errWrong, "unknown id": errUnknown} {
		if !errors.Is(err, ErrUnknown) || errors.Is(err, ErrExpired) {
			t.Errorf("%s: Verify = %v, want ErrUnknown", name, err)
		}
	}
	// The two refusals say the same thing but for the id the caller gave.
	if a, b := strings.ReplaceAll(errWrong.Error(), rec.ID, "ID"), strings.ReplaceAll(errUnknown.Error(), otherRec.ID, "ID"); a != b {
		t.Errorf("wrong secret and unknown id are told apart:\n%s\n%s", a, b)
	}

	_, err = Verify(tok, lookup, t0.Add(time.Hour))
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), rec.ID) {
		t.Errorf("Verify(expired) = %v, want ErrExpired naming the token", err)
	}
	// Expiry is told only to the holder of the secret.
	if _, err := Verify(wrongSecret, lookup, t0.Add(2*time.Hour)); !errors.Is(err, ErrUnknown) {
		t.Errorf("Verify(wrong secret of an expired token) = %v, want ErrUnknown", err)
	}

	if _, err := Verify("tdm1.nothex", lookup, t0); err == nil || errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "tdm1.") {
		t.Errorf("Verify(malformed) = %v, want Parse's error", err)
	}

	// A record stored under another id, or edited into a node token, does
	// not let its secret in.
	moved := rec
	moved.ID = "00000000000000aa"
	store[rec.ID] = moved
	if _, err := Verify(tok, lookup, t0); !errors.Is(err, ErrUnknown) {
		t.Errorf("Verify(record with another id) = %v, want ErrUnknown", err)
	}
	edited := rec
	edited.Role = Node
	store[rec.ID] = edited
	if p, err := Verify(tok, lookup, t0); err == nil || !strings.Contains(err.Error(), "revoke") {
		t.Errorf("Verify(record with role node) = %v, %v; want a refusal", p, err)
	}
}

func TestValidID(t *testing.T) {
	_, rec := newToken(t, Read, "", 0)
	if !ValidID(rec.ID) {
		t.Errorf("ValidID(%q) = false", rec.ID)
	}
	for _, id := range []string{"", "1a2b3c4d5e6f7a8", "1a2b3c4d5e6f7a8b0", "1A2B3C4D5E6F7A8B", "../../../cluster", "1a2b3c4d5e6f7a8/"} {
		if ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
	}
}

func TestRecordMatchesAndExpired(t *testing.T) {
	_, rec := newToken(t, Read, "", time.Minute)
	if rec.Matches(nil) || rec.Matches(make([]byte, 32)) {
		t.Error("Matches accepts a wrong secret")
	}
	bad := rec
	bad.Hash = "zz"
	if bad.Matches(nil) {
		t.Error("Matches accepts with a malformed hash")
	}
	if rec.Expired(t0.Add(time.Minute - 1)) {
		t.Error("expired before its time")
	}
	if !rec.Expired(t0.Add(time.Minute)) {
		t.Error("not expired at its expiry")
	}
}

func TestRecordValidate(t *testing.T) {
	_, good := newToken(t, Read, "app/", time.Hour)
	for _, c := range []struct {
		name string
		edit func(*Record)
		want string // "" for valid
	}{
		{"good", func(*Record) {}, ""},
		{"no expiry", func(r *Record) { r.Expires = time.Time{} }, ""},
		{"empty name", func(r *Record) { r.Name = "" }, ""},
		{"name with spaces", func(r *Record) { r.Name = "ci deploy – prod" }, ""},
		{"short id", func(r *Record) { r.ID = "abc" }, "want 16 lowercase hex digits"},
		{"upper id", func(r *Record) { r.ID = "ABCDEF0123456789" }, "want 16 lowercase hex digits"},
		{"node role", func(r *Record) { r.Role = Node }, `role "node"`},
		{"no role", func(r *Record) { r.Role = "" }, `role ""`},
		{"short hash", func(r *Record) { r.Hash = r.Hash[:63] }, "hash: want 64"},
		{"non-hex hash", func(r *Record) { r.Hash = strings.Repeat("g", 64) }, "hash: want 64"},
		{"dotdot prefix", func(r *Record) { r.Prefix = "app/../" }, `".." segment`},
		{"double slash prefix", func(r *Record) { r.Prefix = "app//" }, `"//"`},
		{"NUL prefix", func(r *Record) { r.Prefix = "a\x00" }, "NUL"},
		{"long prefix", func(r *Record) { r.Prefix = strings.Repeat("a", 1025) }, "limit is 1024"},
		{"admin prefix", func(r *Record) { r.Role = Admin }, "admin token cannot have a KV prefix"},
		{"long name", func(r *Record) { r.Name = strings.Repeat("n", 65) }, "limit is 64"},
		{"control in name", func(r *Record) { r.Name = "a\x1b[31m" }, "unprintable"},
		{"invalid UTF-8 name", func(r *Record) { r.Name = "\xff" }, "not valid UTF-8"},
		{"expires before created", func(r *Record) { r.Expires = r.Created }, "not after its creation"},
	} {
		r := good
		c.edit(&r)
		err := r.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: Validate = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

func TestJoinToken(t *testing.T) {
	tok, rec := newToken(t, Join, "", time.Hour)
	jt := JoinToken(tok+"\n", strings.ToUpper(pin))
	if jt != tok+"."+pin {
		t.Fatalf("JoinToken = %q, want %q", jt, tok+"."+pin)
	}
	for _, in := range []string{jt, jt + "\n", " " + tok + "." + strings.ToUpper(pin) + " "} {
		gotTok, gotPin, err := ParseJoin(in)
		if err != nil || gotTok != tok || gotPin != pin {
			t.Errorf("ParseJoin(%q) = %q, %q, %v", in, gotTok, gotPin, err)
		}
	}
	lookup := func(id string) (Record, bool) { return rec, id == rec.ID }
	if p, err := Verify(tok, lookup, t0); err != nil || p.Authorize(PermJoin) != nil {
		t.Errorf("the join token's token part does not verify as a join: %v, %v", p, err)
	}

	for _, c := range []struct {
		name, in, want string
	}{
		{"empty", "", "tandem token create --role join"},
		{"api token", tok, "has no CA pin: a join token has 4 dot-separated parts"},
		{"two parts", "tdm1.abc", "has 2 dot-separated parts: a join token has 4 dot-separated parts"},
		{"five parts", jt + ".x", "has 5 dot-separated parts: a join token has 4 dot-separated parts"},
		{"short pin", tok + "." + pin[:63], "CA pin (the last part) is not 64 hex digits"},
		{"non-hex pin", tok + "." + strings.Repeat("x", 64), "CA pin (the last part) is not 64 hex digits"},
		{"bad token part", "tdm1.zz." + strings.Split(tok, ".")[2] + "." + pin, "join token: token id"},
		{"wrong version", "tdm9." + strings.Join(strings.Split(jt, ".")[1:], "."), "unknown version"},
	} {
		gotTok, gotPin, err := ParseJoin(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || gotTok != "" || gotPin != "" {
			t.Errorf("%s: ParseJoin(%q) = %q, %q, %v; want an error containing %q", c.name, c.in, gotTok, gotPin, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "tandem token create") {
			t.Errorf("%s: ParseJoin's error %q does not say how to create a join token", c.name, err)
		}
	}
}

// BenchmarkVerify is the cost a token adds to each API request (the lookup
// here is a map; in tandem it is the node's in-memory view).
func BenchmarkVerify(b *testing.B) {
	tok, rec, err := New(Operator, "", "app/", 0, t0)
	if err != nil {
		b.Fatal(err)
	}
	store := map[string]Record{rec.ID: rec}
	lookup := func(id string) (Record, bool) { r, ok := store[id]; return r, ok }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(tok, lookup, t0); err != nil {
			b.Fatal(err)
		}
	}
}
