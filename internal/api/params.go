package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tandemhq/tandem/internal/auth"
)

// params reads query parameters and the key of a request, keeping the first
// problem found so a handler checks once and answers 400 with it.
type params struct {
	r   *http.Request
	err error
	// denied is a key the caller's token may not touch (answered 403).
	denied error
}

func (p *params) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

// bool reads a true/false parameter (absent: false).
func (p *params) bool(name string) bool {
	v := p.r.URL.Query().Get(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail("%s %q: want true or false", name, v)
	}
	return b
}

// rev reads a revision, a whole number 0 or greater; ok is false if absent.
func (p *params) rev(name string) (rev int64, ok bool) {
	v := p.r.URL.Query().Get(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		p.fail("%s %q: want a revision, a whole number 0 or greater", name, v)
		return 0, false
	}
	return n, true
}

// count reads a non-negative count with a default.
func (p *params) count(name string, def int64) int64 {
	v := p.r.URL.Query().Get(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		p.fail("%s %q: want a whole number 0 or greater", name, v)
		return def
	}
	return n
}

// stale reads consistency= and reports whether the read may be stale.
func (p *params) stale() bool {
	switch v := p.r.URL.Query().Get("consistency"); v {
	case "", "linearizable":
		return false
	case "stale":
		return true
	default:
		p.fail("consistency %q: use linearizable (the default) or stale", v)
		return false
	}
}

// timeout reads timeout= (absent: def).
func (p *params) timeout(def time.Duration) time.Duration {
	v := p.r.URL.Query().Get("timeout")
	if v == "" {
		return def
	}
	t, err := time.ParseDuration(v)
	if err != nil || t <= 0 || t > MaxTimeout {
		p.fail("timeout %q: want a duration between 1ms and %s, like 500ms or 3s", v, MaxTimeout)
		return def
	}
	return t
}

// key reads the user's key from the path. Prefix requests may use an empty
// key (the whole namespace).
func (p *params) key(prefix bool) string {
	k := p.r.PathValue("key")
	switch {
	case k == "" && !prefix:
		p.fail("empty key: give a key after /v1/kv/, like /v1/kv/app/config")
	case len(k) > MaxKeyBytes:
		p.fail("key is %d bytes; the limit is %d (1 KiB)", len(k), MaxKeyBytes)
	case !utf8.ValidString(k):
		p.err = errors.Join(p.err, errors.New("key is not valid UTF-8"))
	}
	p.allowKey(k, prefix)
	return k
}

// allowKey checks the key (or prefix) against the caller's token's KV
// prefix, if it has one.
func (p *params) allowKey(k string, prefix bool) {
	if pr, ok := auth.FromContext(p.r.Context()); ok && p.denied == nil {
		p.denied = pr.AllowKey(k, prefix)
	}
}

// idempotency reads the Idempotency-Key header ("" if absent).
func (p *params) idempotency() string {
	k, err := idempotencyKey(p.r)
	if err != nil {
		p.err = errors.Join(p.err, err)
	}
	return k
}

// check answers 400 and reports false if any parameter was bad.
func (p *params) check(w http.ResponseWriter) bool {
	if p.denied != nil {
		writeError(w, http.StatusForbidden, p.denied.Error())
		return false
	}
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return false
	}
	return true
}
