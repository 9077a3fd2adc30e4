package proxy

// The HTTP/1.1 path reads a client's request head with this parser rather
// than http.ReadRequest, which costs 11 allocations and 1 KiB for a
// typical head (a header map and its strings, a URL, the Request;
// BenchmarkRequestHead): the head is copied into a buffer of the
// connection, reused for each request, and its fields stay slices of it. An origin-form target ("/path?query", all
// but a proxy's clients send) is checked and routed without allocating;
// an absolute-form one goes through net/url as net/http does.
//
// It accepts what net/http's server accepts and reads it the same way
// (FuzzRequestHead checks this on every input), but where the proxy is
// stricter, because a request the proxy reads one way and something in
// front of it another way is how requests are smuggled:
//
//   - a folded field line (obs-fold) is refused with a 400; net/http joins
//     it to the previous line;
//   - Transfer-Encoding in an HTTP/1.0 request is refused with a 400;
//     net/http ignores the field and frames the body by Content-Length;
//   - field names with a space (before the colon, or inside) are refused,
//     as net/http's server does but http.ReadRequest alone does not;
//   - a request with both Content-Length and chunked Transfer-Encoding is
//     read as chunked, as net/http does, and the connection closes after
//     its answer (RFC 9112, section 6.1); net/http's server keeps it open.
//
// What it passes on differs from what net/http's Header would give in
// ways an instance cannot tell: field names keep the client's spelling
// and order (net/http canonicalizes them and a map forgets the order),
// and a "Pragma: no-cache" gets no "Cache-Control: no-cache" added.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

var (
	// errBadRequest: the request breaks HTTP/1.1's grammar or frames its
	// body in a way the proxy refuses; its answer is a 400.
	errBadRequest = errors.New("malformed HTTP request")
	// errRequestTooLarge: the request's head is longer than
	// maxHeaderBytes; its answer is a 431.
	errRequestTooLarge = fmt.Errorf("request head larger than %d MiB", maxHeaderBytes>>20)
	// errTransferCoding: the request's body has a transfer coding other
	// than chunked; its answer is a 501, as net/http's server gives.
	errTransferCoding = errors.New("unsupported transfer coding")
)

// reqHead is the head of a client's request. A clientConn owns one and
// reuses it, with its buffers, for each request it reads; its slices are
// valid until the next read.
type reqHead struct {
	msgHead
	method []byte
	target []byte // the request-target as the client sent it
	// uri is the target to send on: an origin-form or "*" as sent, the
	// path and query of an absolute-form one.
	uri          []byte
	path         []byte // the target's path, percent-decoded: what routes match
	host         []byte // the authority of an absolute-form target, or else the Host field
	hostField    []byte // the Host field, nil if there is none
	proto        []byte // "HTTP/1.1"
	major, minor int
	framing      framing // noBody, lengthBody or chunkedBody
	length       int64   // the body's length; -1 when chunked
	close        bool    // the connection ends after this request
	upgrade      []byte  // the Upgrade field, when the request asks to switch protocols
	teTrailers   bool    // "TE: trailers", which gRPC-style clients need end to end
	// id is the request's X-Request-Id: the client's, or one the proxy
	// made (newID), which then replaces the client's empty ones.
	id    []byte
	newID bool

	// expects counts the Expect fields (check allows one, 100-continue);
	// expectValue is the first.
	expects     int
	expectValue []byte

	scratch []byte   // the decoded path, an absolute-form target's parts
	idBuf   [32]byte // a request id made by the proxy
}

// read reads and checks a request's head from br and derives its body's
// framing.
func (h *reqHead) read(br *bufio.Reader) error {
	h.msgHead.reset()
	scratch := h.scratch[:0]
	if cap(scratch) > 16<<10 {
		scratch = nil
	}
	*h = reqHead{msgHead: h.msgHead, scratch: scratch}
	var err error
	if h.buf, err = readHead(br, h.buf); err != nil {
		return err
	}
	line, rest := nextLine(h.buf)
	if err := h.parseRequestLine(line); err != nil {
		return err
	}
	if h.fields, err = parseFields(rest, h.fields); err != nil {
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return h.frame()
}

// readHead appends a request's head from br to buf: in one copy when br
// holds all of it already, as it does for nearly every request, else line
// by line.
func readHead(br *bufio.Reader, buf []byte) ([]byte, error) {
	if br.Buffered() == 0 { // one read may well bring all of it
		if _, err := br.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	b, _ := br.Peek(br.Buffered())
	if n := headLen(b); n > 0 && n <= maxHeaderBytes {
		buf = append(buf, b[:n]...)
		_, _ = br.Discard(n)
		return buf, nil
	}
	return readSection(br, buf, maxHeaderBytes, errRequestTooLarge)
}

// headLen returns the length of the head at the start of b, up to and
// including the empty line that ends it, or -1 if b does not hold all of
// it. A head ends where readSection would end it.
func headLen(b []byte) int {
	for start := 0; start < len(b); {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return -1
		}
		if i == 0 || (i == 1 && b[start] == '\r') {
			return start + i + 1
		}
		start += i + 1
	}
	return -1
}

// parseRequestLine parses method SP request-target SP HTTP/x.y, split at
// the first two spaces as net/http splits it.
func (h *reqHead) parseRequestLine(line []byte) error {
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: request line %q: want METHOD TARGET HTTP/1.1", errBadRequest, clip(line))
	}
	if len(method) == 0 {
		return fmt.Errorf("%w: no method in the request line %q", errBadRequest, clip(line))
	}
	for _, c := range method {
		if !tchar[c] {
			return fmt.Errorf("%w: invalid method %q", errBadRequest, clip(method))
		}
	}
	if len(proto) != len("HTTP/1.1") || string(proto[:5]) != "HTTP/" || !isDigit(proto[5]) || proto[6] != '.' || !isDigit(proto[7]) {
		return fmt.Errorf("%w: malformed HTTP version %q", errBadRequest, clip(proto))
	}
	h.method, h.proto = method, proto
	h.major, h.minor = int(proto[5]-'0'), int(proto[7]-'0')
	return h.parseTarget(target)
}

// parseTarget checks the request-target and derives the path to route by
// and the target to send on. The origin-form is read here; other forms
// go through url.ParseRequestURI, as in http.ReadRequest, CONNECT's
// authority-form after a "http://" put in front of it.
func (h *reqHead) parseTarget(target []byte) error {
	h.target = target
	if len(target) > 0 && target[0] == '/' {
		for _, c := range target {
			if c < ' ' || c == 0x7f {
				return fmt.Errorf("%w: control character in the request target %q", errBadRequest, clip(target))
			}
		}
		path := target
		if i := bytes.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		var err error
		if h.path, h.scratch, err = unescapePath(path, h.scratch); err != nil {
			return fmt.Errorf("%w: request target %q: %v", errBadRequest, clip(target), err)
		}
		h.uri = target
		return nil
	}
	if string(target) == "*" {
		h.uri, h.path = target, target
		return nil
	}
	raw := string(target)
	connect := string(h.method) == "CONNECT"
	if connect {
		raw = "http://" + raw
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return fmt.Errorf("%w: request target %q: %v", errBadRequest, clip(target), errors.Unwrap(err))
	}
	// Copies, so that read allocates nothing again for the next request
	// of this form; the slices of scratch stay valid if it grows.
	n := len(h.scratch)
	h.scratch = append(h.scratch, u.Path...)
	h.path = h.scratch[n:]
	n = len(h.scratch)
	h.scratch = append(h.scratch, u.RequestURI()...)
	h.uri = h.scratch[n:]
	n = len(h.scratch)
	h.scratch = append(h.scratch, u.Host...)
	h.host = h.scratch[n:]
	return nil
}

// unescapePath returns path with its %XX escapes decoded, appended to dst
// when it has any, and refuses a % without two hex digits after it, as
// net/url does.
func unescapePath(path, dst []byte) (out, scratch []byte, err error) {
	i := bytes.IndexByte(path, '%')
	if i < 0 {
		return path, dst, nil
	}
	n := len(dst)
	dst = append(dst, path[:i]...)
	for ; i < len(path); i++ {
		c := path[i]
		if c == '%' {
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return nil, dst, fmt.Errorf("invalid escape %q", path[i:min(i+3, len(path))])
			}
			c = byte(unhex(path[i+1])<<4 | unhex(path[i+2]))
			i += 2
		}
		dst = append(dst, c)
	}
	return dst[n:], dst, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// frame derives the body's framing, the connection's fate and what check
// needs from the fields, by net/http's rules for a request, and refuses
// a request whose framing is ambiguous or unsupported.
func (h *reqHead) frame() error {
	var cl, te, upgrade []byte
	var tes, hosts, upgrades, teFields int
	length := int64(0)
	closeTok, keepTok, upgradeTok, trailer := false, false, false, false
	for _, f := range h.fields {
		// Dispatch on the length first: most fields are none of these.
		switch len(f.name) {
		case len("TE"):
			if equalFold(f.name, "TE") {
				teFields++
				h.teTrailers = teFields == 1 && equalFold(f.value, "trailers")
			}
		case len("Host"):
			if equalFold(f.name, "Host") {
				if hosts++; hosts == 1 {
					h.hostField = f.value
				}
			}
		case len("Expect"):
			if equalFold(f.name, "Expect") {
				if h.expects++; h.expects == 1 {
					h.expectValue = f.value
				}
			}
		case len("Upgrade"): // and Trailer
			if equalFold(f.name, "Upgrade") {
				if upgrades++; upgrades == 1 {
					upgrade = f.value
				}
			} else if equalFold(f.name, "Trailer") {
				trailer = true
			}
		case len("Connection"):
			if equalFold(f.name, "Connection") {
				h.connection = true
				closeTok = closeTok || hasToken(f.value, "close")
				keepTok = keepTok || hasToken(f.value, "keep-alive")
				upgradeTok = upgradeTok || hasToken(f.value, "upgrade")
			}
		case len("X-Request-Id"):
			if h.id == nil && equalFold(f.name, "X-Request-Id") {
				h.id = f.value
			}
		case len("Content-Length"):
			if equalFold(f.name, "Content-Length") {
				var err error
				if cl, length, err = contentLength(cl, f.value, length); err != nil {
					return fmt.Errorf("%w: %w", errBadRequest, err)
				}
			}
		case len("Transfer-Encoding"):
			if equalFold(f.name, "Transfer-Encoding") {
				if tes++; tes == 1 {
					te = f.value
				}
			}
		}
	}
	if hosts > 1 {
		return fmt.Errorf("%w: too many Host headers", errBadRequest)
	}
	if len(h.host) == 0 { // no absolute-form target gave it
		h.host = h.hostField
	}
	chunked := false
	if tes > 0 {
		switch {
		case h.major == 1 && h.minor == 0:
			// RFC 9112, section 6.1: such framing is faulty. net/http
			// ignores the field and reads Content-Length; a server behind
			// a proxy that did not might read the body the other way.
			return fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 request: send Content-Length, or use HTTP/1.1", errBadRequest)
		case tes > 1:
			return fmt.Errorf("%w: more than one Transfer-Encoding field", errTransferCoding)
		case !equalFold(te, "chunked"):
			return fmt.Errorf("%w %q: only chunked is supported", errTransferCoding, clip(te))
		}
		chunked = true
	}
	if trailer && chunked {
		// As net/http: a trailer may not carry the body's framing.
		for _, f := range h.fields {
			if equalFold(f.name, "Trailer") && (hasToken(f.value, "Transfer-Encoding") || hasToken(f.value, "Trailer") || hasToken(f.value, "Content-Length")) {
				return fmt.Errorf("%w: Trailer %q names a field a trailer may not hold", errBadRequest, clip(f.value))
			}
		}
	}
	switch {
	case h.major < 1:
		h.close = true
	case h.major == 1 && h.minor == 0:
		h.close = closeTok || !keepTok
	default:
		h.close = closeTok
	}
	if chunked && cl != nil {
		// RFC 9112, section 6.1: the body is read as chunked (below), and
		// the connection must close after the answer, since something in
		// front of the proxy may have read the body by its length and
		// what it takes for the next request may not be one.
		h.close = true
	}
	if len(upgrade) > 0 && upgradeTok {
		h.upgrade = upgrade
	}
	switch {
	case chunked: // RFC 9112, section 6.3: chunked wins over a Content-Length
		h.framing, h.length = chunkedBody, -1
	case length > 0:
		h.framing, h.length = lengthBody, length
	default:
		h.framing, h.length = noBody, 0
	}
	return nil
}

// check applies the rules net/http's server applies to a request before
// its handler sees it, beyond those of the grammar, and the proxy's own.
func (h *reqHead) check() (int, string) {
	switch {
	case h.major != 1:
		return 505, "unsupported protocol version " + string(h.proto)
	case string(h.method) == "CONNECT":
		return 405, "CONNECT is not supported"
	case h.minor >= 1 && (h.hostField == nil || len(h.host) == 0):
		// RFC 9112, section 3.2: even with an absolute-form target, as
		// net/http's server
		return 400, "missing required Host header"
	case !validHost(h.hostField) || !validHost(h.host):
		return 400, "malformed Host header"
	}
	if h.expects > 0 && !(h.expects == 1 && equalFold(h.expectValue, "100-continue")) {
		return 417, "unsupported Expect header"
	}
	return 0, ""
}

// validHost applies httpguts.ValidHostHeader to b, 32 bytes at a time: a
// conversion of so few bytes to a string that does not escape needs no
// allocation.
func validHost(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), 32)
		if !httpguts.ValidHostHeader(string(b[:n])) {
			return false
		}
		b = b[n:]
	}
	return true
}

// routeHost appends to dst the host that routes match: h.host in lower
// case, without a port or a trailing dot (as strings.ToLower,
// net.SplitHostPort and strings.TrimSuffix would make it).
func (h *reqHead) routeHost(dst []byte) []byte {
	n := len(dst)
	for _, c := range h.host {
		dst = append(dst, lower(c))
	}
	host := dst[n:]
	if hp, ok := splitHostPort(host); ok {
		host = hp
	}
	if k := len(host); k > 0 && host[k-1] == '.' {
		host = host[:k-1]
	}
	return host
}

// splitHostPort returns the host of host:port, or ok false where
// net.SplitHostPort would return an error.
func splitHostPort(hp []byte) (host []byte, ok bool) {
	i := bytes.LastIndexByte(hp, ':')
	if i < 0 {
		return nil, false
	}
	j, k := 0, 0
	if hp[0] == '[' {
		end := bytes.IndexByte(hp, ']')
		if end < 0 || end+1 != i {
			return nil, false
		}
		host = hp[1:end]
		j, k = 1, end+1
	} else {
		host = hp[:i]
		if bytes.IndexByte(host, ':') >= 0 {
			return nil, false
		}
	}
	if bytes.IndexByte(hp[j:], '[') >= 0 || bytes.IndexByte(hp[k:], ']') >= 0 {
		return nil, false
	}
	return host, true
}

// makeID gives the request an id of the proxy's.
func (h *reqHead) makeID() {
	h.id = strconv.AppendUint(append(h.idBuf[:0], idPrefix...), idCounter.Add(1), 16)
	h.newID = true
}

// values returns the values of the fields named name, as strings (for the
// hash balancer, not the common path).
func (h *reqHead) values(name string) []string {
	var out []string
	for _, f := range h.fields {
		if equalFold(f.name, name) {
			out = append(out, string(f.value))
		}
	}
	return out
}
