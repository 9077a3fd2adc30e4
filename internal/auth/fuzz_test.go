package auth

import (
	"strings"
	"testing"
)

// The seeds of these fuzz tests run in the normal `go test`; run one for
// longer with, for example, go test ./internal/auth -run '^$' -fuzz FuzzParse -fuzztime 30s.

const seedToken = "tdm1.1a2b3c4d5e6f7a8b.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func FuzzParse(f *testing.F) {
	for _, s := range []string{seedToken, seedToken + "\n", "", "tdm1", "tdm1..", "tdm2.1a2b3c4d5e6f7a8b.x",
		seedToken + "." + pin, "tdm1.1A2B3C4D5E6F7A8B.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"tdm1.1a2b3c4d5e6f7a8b.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", "tdm1.1a2b3c4d5e6f7a8b.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, secret, err := Parse(in)
		if err != nil {
			if id != "" || secret != nil {
				t.Fatalf("Parse(%q) failed but returned %q, %x", in, id, secret)
			}
			return
		}
		if !isHex(id, idLen) || len(secret) != secBytes {
			t.Fatalf("Parse(%q) = %q, %x: malformed result", in, id, secret)
		}
		// Exactly one spelling per token: it is the input, less whitespace.
		if again := version + "." + id + "." + b64.EncodeToString(secret); again != strings.TrimSpace(in) {
			t.Fatalf("Parse(%q) accepted a spelling other than %q", in, again)
		}
	})
}

func FuzzParseJoin(f *testing.F) {
	for _, s := range []string{seedToken + "." + pin, seedToken + "." + strings.ToUpper(pin) + "\n", seedToken, "",
		"...", seedToken + "." + pin + ".", seedToken + "." + pin[:63], "tdm1.x.y." + pin} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tok, p, err := ParseJoin(in)
		if err != nil {
			if tok != "" || p != "" {
				t.Fatalf("ParseJoin(%q) failed but returned %q, %q", in, tok, p)
			}
			if !strings.Contains(err.Error(), "tandem token create") {
				t.Fatalf("ParseJoin(%q) = %v: the error does not say how to create a join token", in, err)
			}
			return
		}
		if _, _, err := Parse(tok); err != nil {
			t.Fatalf("ParseJoin(%q) returned token %q that Parse refuses: %v", in, tok, err)
		}
		if !isHex(p, pinLen) {
			t.Fatalf("ParseJoin(%q) returned pin %q", in, p)
		}
		s := strings.TrimSpace(in)
		if !strings.HasPrefix(s, tok+".") || strings.ToLower(s[len(tok)+1:]) != p || JoinToken(tok, p) != tok+"."+p {
			t.Fatalf("ParseJoin(%q) = %q, %q: does not round-trip through JoinToken", in, tok, p)
		}
	})
}

func FuzzAllowKey(f *testing.F) {
	for _, c := range []struct {
		prefix, key string
		isPrefix    bool
	}{
		{"app/", "app/x", false}, {"app/", "app", false}, {"app/", "apx", false}, {"app/", "app/../secret", false},
		{"app/", "app//x", false}, {"app/", "app/", true}, {"app/", "", true}, {"app/", "ap", true},
		{"", "anything/../x", false}, {"app/", "app/x\x00", false}, {"app/", "app/.", true}, {"a", "a/../b", false},
		{"app/", "/app/x", false}, {"app/", "app/./x", false},
	} {
		f.Add(c.prefix, c.key, c.isPrefix)
	}
	f.Fuzz(func(t *testing.T, prefix, key string, isPrefix bool) {
		p := Principal{Role: Operator, Prefix: prefix, TokenID: "1a2b3c4d5e6f7a8b"}
		err := p.AllowKey(key, isPrefix)
		if prefix == "" {
			if err != nil {
				t.Fatalf("unrestricted AllowKey(%q, %v) = %v", key, isPrefix, err)
			}
			return
		}
		if err != nil {
			return
		}
		if !strings.HasPrefix(key, prefix) {
			t.Fatalf("prefix %q allowed key %q outside it", prefix, key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("prefix %q allowed key %q with a %q segment", prefix, key, seg)
			}
		}
		if strings.Contains(key, "//") || strings.HasPrefix(key, "/") || strings.IndexByte(key, 0) >= 0 {
			t.Fatalf("prefix %q allowed key %q with a path trick", prefix, key)
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer " + seedToken, "bearer x", "Bearer", "", "Basic x", "Bearer  a b ", "BEARER\tx", " Bearer x\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := BearerToken(h)
		if !ok {
			if tok != "" {
				t.Fatalf("BearerToken(%q) = %q, false", h, tok)
			}
			return
		}
		if tok == "" || strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 || !strings.Contains(h, tok) {
			t.Fatalf("BearerToken(%q) = %q", h, tok)
		}
		if !strings.EqualFold(strings.Fields(h)[0], "bearer") {
			t.Fatalf("BearerToken(%q) accepted another scheme", h)
		}
	})
}
