package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/tandemhq/tandem/internal/registry"
)

// readReq parses s as a request head through a reader of the given
// buffer size.
func readReq(s string, size int) (*reqHead, error) {
	h := &reqHead{}
	err := h.read(bufio.NewReaderSize(strings.NewReader(s), size))
	return h, err
}

func TestRequestHeadValid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		method  string
		uri     string // what goes on to the instance
		path    string // what routes match
		host    string
		minor   int
		framing framing
		length  int64
		close   bool
		upgrade string
		fields  string
	}{
		{name: "origin-form", in: "GET /a/b?c=d HTTP/1.1\r\nHost: svc\r\nUser-Agent: t\r\n\r\n",
			method: "GET", uri: "/a/b?c=d", path: "/a/b", host: "svc", minor: 1, fields: "Host: svc|User-Agent: t"},
		{name: "escapes decoded for routing only", in: "GET /a%2Fb%20c?x=%zz HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/a%2Fb%20c?x=%zz", path: "/a/b c", host: "svc", minor: 1, fields: "Host: svc"},
		{name: "fragment and empty query kept", in: "GET /a#f? HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/a#f?", path: "/a#f", host: "svc", minor: 1, fields: "Host: svc"},
		{name: "absolute-form: its authority is the host, its path goes on", in: "GET http://Other:8080/p/q?r HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/p/q?r", path: "/p/q", host: "Other:8080", minor: 1, fields: "Host: svc"},
		{name: "absolute-form without a path", in: "GET http://svc HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/", path: "", host: "svc", minor: 1, fields: "Host: svc"},
		{name: "asterisk-form", in: "OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "OPTIONS", uri: "*", path: "*", host: "svc", minor: 1, fields: "Host: svc"},
		{name: "extension method", in: "PURGE /x HTTP/1.1\r\nHost: svc\r\n\r\n",
			method: "PURGE", uri: "/x", path: "/x", host: "svc", minor: 1, fields: "Host: svc"},
		{name: "content-length", in: "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "svc", minor: 1, framing: lengthBody, length: 5, fields: "Host: svc|Content-Length: 5"},
		{name: "zero length is no body", in: "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "svc", minor: 1, fields: "Host: svc|Content-Length: 0"},
		{name: "identical lengths collapse", in: "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 7\r\ncontent-length:  7 \r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "svc", minor: 1, framing: lengthBody, length: 7, fields: "Host: svc|Content-Length: 7|content-length: 7"},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: ChUnKeD\r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "svc", minor: 1, framing: chunkedBody, length: -1, fields: "Host: svc|Transfer-Encoding: ChUnKeD"},
		{name: "chunked wins over Content-Length, and the connection closes", in: "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "svc", minor: 1, framing: chunkedBody, length: -1, close: true, fields: "Host: svc|Content-Length: 4|Transfer-Encoding: chunked"},
		{name: "Connection: close", in: "GET / HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Close\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 1, close: true, fields: "Host: svc|Connection: keep-alive, Close"},
		{name: "HTTP/1.0 closes", in: "GET / HTTP/1.0\r\n\r\n",
			method: "GET", uri: "/", path: "/", minor: 0, close: true},
		{name: "HTTP/1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 0, fields: "Connection: Keep-Alive|Host: svc"},
		{name: "HTTP/1.9 reads as 1.1", in: "GET / HTTP/1.9\r\nHost: svc\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 9, fields: "Host: svc"},
		{name: "upgrade", in: "GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", uri: "/ws", path: "/ws", host: "svc", minor: 1, upgrade: "websocket", fields: "Host: svc|Connection: keep-alive, Upgrade|Upgrade: websocket"},
		{name: "Upgrade without Connection: upgrade is no upgrade", in: "GET / HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 1, fields: "Host: svc|Upgrade: websocket"},
		{name: "bare LF line ends", in: "GET / HTTP/1.1\nHost: svc\nX-A: b\r\n\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 1, fields: "Host: svc|X-A: b"},
		{name: "spelling kept, value trimmed, empty value, obs-text", in: "GET / HTTP/1.1\r\nhOsT: svc\r\nx-CuStOm: \t v a \t\r\nX-Empty:\r\nX-T: caf\xc3\xa9\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 1, fields: "hOsT: svc|x-CuStOm: v a|X-Empty: |X-T: caf\xc3\xa9"},
		{name: "line longer than the reader's buffer", in: "GET / HTTP/1.1\r\nHost: svc\r\nX-Long: " + strings.Repeat("x", 10000) + "\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "svc", minor: 1, fields: "Host: svc|X-Long: " + strings.Repeat("x", 10000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				h, err := readReq(tc.in, size)
				if err != nil {
					t.Fatalf("buffer %d: %v", size, err)
				}
				if string(h.method) != tc.method || string(h.uri) != tc.uri || string(h.path) != tc.path || string(h.host) != tc.host || h.minor != tc.minor {
					t.Errorf("buffer %d: method %q uri %q path %q host %q minor %d", size, h.method, h.uri, h.path, h.host, h.minor)
				}
				if h.framing != tc.framing || h.length != tc.length || h.close != tc.close || string(h.upgrade) != tc.upgrade {
					t.Errorf("buffer %d: framing %d length %d close %v upgrade %q, want %d %d %v %q", size, h.framing, h.length, h.close, h.upgrade, tc.framing, tc.length, tc.close, tc.upgrade)
				}
				if got := fieldsText(h.fields); got != tc.fields {
					t.Errorf("buffer %d: fields %q, want %q", size, got, tc.fields)
				}
			}
		})
	}
}

// invalidRequests are requests the parser refuses, each for one rule, and
// the answer they get.
var invalidRequests = []struct {
	name, in, want string
	sentinel       error
}{
	// the request line
	{"empty line first", "\r\nGET / HTTP/1.1\r\nHost: svc\r\n\r\n", "request line", errBadRequest},
	{"no target", "GET HTTP/1.1\r\nHost: svc\r\n\r\n", "request line", errBadRequest},
	{"two spaces", "GET  / HTTP/1.1\r\nHost: svc\r\n\r\n", "malformed HTTP version", errBadRequest},
	{"tabs", "GET\t/\tHTTP/1.1\r\nHost: svc\r\n\r\n", "request line", errBadRequest},
	{"trailing space", "GET / HTTP/1.1 \r\nHost: svc\r\n\r\n", "malformed HTTP version", errBadRequest},
	{"lower-case protocol", "GET / http/1.1\r\nHost: svc\r\n\r\n", "malformed HTTP version", errBadRequest},
	{"two-digit minor", "GET / HTTP/1.10\r\nHost: svc\r\n\r\n", "malformed HTTP version", errBadRequest},
	{"space first", " GET / HTTP/1.1\r\nHost: svc\r\n\r\n", "no method", errBadRequest},
	{"separator in method", "GE(T / HTTP/1.1\r\nHost: svc\r\n\r\n", "invalid method", errBadRequest},
	{"NUL in method", "G\x00T / HTTP/1.1\r\nHost: svc\r\n\r\n", "invalid method", errBadRequest},
	{"control character in target", "GET /a\x01b HTTP/1.1\r\nHost: svc\r\n\r\n", "control character", errBadRequest},
	{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: svc\r\n\r\n", "control character", errBadRequest},
	{"bare CR in target", "GET /a\rb HTTP/1.1\r\nHost: svc\r\n\r\n", "control character", errBadRequest},
	{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: svc\r\n\r\n", "invalid escape", errBadRequest},
	{"cut escape", "GET /a%2 HTTP/1.1\r\nHost: svc\r\n\r\n", "invalid escape", errBadRequest},
	{"relative target", "GET a/b HTTP/1.1\r\nHost: svc\r\n\r\n", "request target", errBadRequest},
	{"bad absolute-form host", "GET http://[::1/ HTTP/1.1\r\nHost: svc\r\n\r\n", "request target", errBadRequest},
	// field lines
	{"obs-fold", "GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n b\r\n\r\n", "folded", errBadRequest},
	{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n\tb\r\n\r\n", "folded", errBadRequest},
	{"space before the first field", "GET / HTTP/1.1\r\n Host: svc\r\n\r\n", "folded", errBadRequest},
	{"space before colon", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length : 5\r\n\r\nhello", "invalid field name", errBadRequest},
	{"space in name", "GET / HTTP/1.1\r\nHost: svc\r\nBad Name: x\r\n\r\n", "invalid field name", errBadRequest},
	{"no colon", "GET / HTTP/1.1\r\nHost: svc\r\nNoColon\r\n\r\n", "without a name and colon", errBadRequest},
	{"empty name", "GET / HTTP/1.1\r\nHost: svc\r\n: v\r\n\r\n", "without a name and colon", errBadRequest},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\x00b\r\n\r\n", "control character", errBadRequest},
	{"bare CR in value", "GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\rContent-Length: 5\r\n\r\n", "control character", errBadRequest},
	{"bare LF in value ends the line", "GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\nb\r\n\r\n", "without a name and colon", errBadRequest},
	// Host
	{"two Host fields", "GET / HTTP/1.1\r\nHost: svc\r\nHost: other\r\n\r\n", "too many Host", errBadRequest},
	// Content-Length
	{"differing lengths", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length", errBadRequest},
	{"lengths spelled differently", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello", "Content-Length", errBadRequest},
	{"differing lengths and chunked", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length", errBadRequest},
	{"empty length", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: \r\n\r\n", "Content-Length", errBadRequest},
	{"negative length", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: -1\r\n\r\n", "Content-Length", errBadRequest},
	{"signed length", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: +5\r\n\r\n", "Content-Length", errBadRequest},
	{"list of lengths", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5, 5\r\n\r\n", "Content-Length", errBadRequest},
	{"length of 2^63", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 9223372036854775808\r\n\r\n", "Content-Length", errBadRequest},
	// Transfer-Encoding
	{"gzip", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer coding", errTransferCoding},
	{"gzip, chunked", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported transfer coding", errTransferCoding},
	{"chunked, chunked", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "unsupported transfer coding", errTransferCoding},
	{"identity", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok", "unsupported transfer coding", errTransferCoding},
	{"two fields", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "more than one", errTransferCoding},
	{"in HTTP/1.0", "POST / HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "HTTP/1.0", errBadRequest},
	{"framing in a trailer", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, content-length\r\n\r\n", "Trailer", errBadRequest},
	// the head as a whole
	{"too large", "GET / HTTP/1.1\r\nHost: svc\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 1100) + "\r\n", "larger than 1 MiB", errRequestTooLarge},
}

func TestRequestHeadInvalid(t *testing.T) {
	for _, tc := range invalidRequests {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				_, err := readReq(tc.in, size)
				if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.sentinel) {
					t.Fatalf("buffer %d: error %v, want one about %q", size, err, tc.want)
				}
			}
		})
	}
}

func TestRequestHeadCutShort(t *testing.T) {
	for _, in := range []string{"", "GET / HTTP/1.1\r\nHost: svc\r\n", "GET / HTTP/1.1"} {
		if _, err := readReq(in, 4096); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: %v, want unexpected EOF", in, err)
		}
	}
}

func TestRequestCheck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
	}{
		{"GET / HTTP/1.1\r\nHost: svc\r\n\r\n", 0},
		{"GET / HTTP/1.0\r\n\r\n", 0}, // HTTP/1.0 needs no Host
		{"GET / HTTP/2.0\r\nHost: svc\r\n\r\n", 505},
		{"PRI * HTTP/2.0\r\n\r\n", 505},
		{"GET / HTTP/0.9\r\nHost: svc\r\n\r\n", 505},
		{"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n", 405},
		{"GET / HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: " + strings.Repeat("a", 40) + "\"\r\n\r\n", 400}, // past the first 32 bytes
		{"GET http://svc/ HTTP/1.1\r\nHost: \r\n\r\n", 0},                          // the target gives the host
		{"GET http://svc/ HTTP/1.1\r\n\r\n", 400},                                  // but a Host field is due all the same
		{"GET http://svc/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400},                     // and valid
		{"GET / HTTP/1.1\r\nHost: svc\r\nExpect: 100-Continue\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: svc\r\nExpect: magic\r\n\r\n", 417},
		{"GET / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n", 417},
	} {
		h, err := readReq(tc.in, 4096)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if code, msg := h.check(); code != tc.code {
			t.Errorf("%q: %d %s, want %d", tc.in, code, msg, tc.code)
		}
	}
}

// The common path allocates nothing: reading an origin-form request,
// checking it, and finding its route, whatever the lengths of its host
// and path.
func TestRequestHeadAllocs(t *testing.T) {
	in := "GET /a/rather/long/path/with/an%20escape/and/more/segments?q=1 HTTP/1.1\r\n" +
		"Host: a-service-with-a-long-name.service.example-corp.internal:8080\r\n" +
		"User-Agent: test\r\nAccept: */*\r\nX-Request-Id: abc\r\nConnection: keep-alive\r\n\r\n"
	rt := &routes{
		byHost:   map[string]*Pool{"a-service-with-a-long-name.service.example-corp.internal": {}},
		prefixes: []prefixRoute{{host: "other", prefix: "/a/rather/long/path/with/an escape/", pool: &Pool{}}},
	}
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 4096)
	var h reqHead
	var host []byte
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(in)
		br.Reset(sr)
		if err := h.read(br); err != nil {
			t.Fatal(err)
		}
		if code, msg := h.check(); code != 0 {
			t.Fatal(msg)
		}
		host = h.routeHost(host[:0])
		if route(rt, host, h.path) == nil {
			t.Fatal("no route")
		}
		h.makeID()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request", allocs)
	}
}

// FuzzRequestHead checks the parser against net/http's server on the
// same bytes: what the proxy forwards, net/http accepts and reads the
// same way (method, target, host, fields, where the body ends and what it
// holds, what follows it); what net/http forwards, the proxy forwards too,
// but for the two refusals h1req.go documents (a folded line,
// Transfer-Encoding in HTTP/1.0).
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"GET /a%20b?c=d HTTP/1.1\r\nHost: Svc.Service.Tandem.:80\r\nX-Request-Id: id\r\nCookie: s=1; t=2\r\nX-Key: k\r\n\r\n",
		"GET http://svc/p?q HTTP/1.1\r\nHost: svc\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nNEXT",
		"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"POST /p HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTE: trailers\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: svc\nPragma: no-cache\n\n",
		"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length : 5\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	hashOn := []*Pool{
		{Spec: registry.Service{Balance: "hash", HashOn: "cookie:s"}},
		{Spec: registry.Service{Balance: "hash", HashOn: "header:x-key"}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h, small reqHead
		br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		err := h.read(br)
		serr := small.read(bufio.NewReaderSize(bytes.NewReader(data), 16))
		if (err == nil) != (serr == nil) || (err == nil && (string(h.uri) != string(small.uri) || h.framing != small.framing ||
			h.length != small.length || h.close != small.close || fieldsText(h.fields) != fieldsText(small.fields))) {
			t.Fatalf("the buffer's size changes the reading: %v / %v", err, serr)
		}
		forwards := err == nil
		if forwards {
			code, _ := h.check()
			forwards = code == 0
		}

		nbr := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		req, nerr := http.ReadRequest(nbr)
		netForwards := nerr == nil && serverAccepts(data, req) && netCheck(req) == 0
		switch {
		case forwards && !netForwards:
			t.Fatalf("the proxy forwards what net/http refuses (%v)", nerr)
		case !forwards && netForwards:
			if folded(data) || (req.ProtoMajor == 1 && req.ProtoMinor == 0 && hasField(data, "Transfer-Encoding")) {
				return // stricter on purpose
			}
			t.Fatalf("the proxy refuses what net/http forwards: %v", err)
		case !forwards:
			return
		}

		// Stricter on purpose: a request framed both ways closes its
		// connection after the answer (RFC 9112, section 6.1).
		wantClose := req.Close || (hasField(data, "Content-Length") && hasField(data, "Transfer-Encoding"))
		if string(h.method) != req.Method || string(h.target) != req.RequestURI || string(h.host) != req.Host ||
			h.major != req.ProtoMajor || h.minor != req.ProtoMinor || h.close != wantClose {
			t.Fatalf("%q %q host %q HTTP/%d.%d close %v; net/http %q %q host %q HTTP/%d.%d close %v",
				h.method, h.target, h.host, h.major, h.minor, h.close, req.Method, req.RequestURI, req.Host, req.ProtoMajor, req.ProtoMinor, req.Close)
		}
		uri := req.RequestURI
		if uri[0] != '/' && uri != "*" {
			uri = req.URL.RequestURI()
		}
		if string(h.uri) != uri || string(h.path) != req.URL.Path {
			t.Fatalf("sends %q, routes %q; net/http %q, %q", h.uri, h.path, uri, req.URL.Path)
		}
		if got, want := string(h.routeHost(nil)), netRouteHost(req.Host); got != want {
			t.Fatalf("route host %q, net/http's %q", got, want)
		}
		netChunked := reflect.DeepEqual(req.TransferEncoding, []string{"chunked"})
		if h.length != req.ContentLength || (h.framing == chunkedBody) != netChunked {
			t.Fatalf("length %d (%d), net/http's %d (chunked %v)", h.length, h.framing, req.ContentLength, netChunked)
		}
		if got, want := string(h.upgrade), netUpgrade(req.Header); got != want {
			t.Fatalf("upgrade %q, net/http's %q", got, want)
		}
		te := req.Header["Te"]
		if h.teTrailers != (len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) || (h.expects > 0) != (req.Header["Expect"] != nil) {
			t.Fatalf("TE trailers %v, expect %d; net/http's %q %q", h.teTrailers, h.expects, te, req.Header["Expect"])
		}
		if string(h.id) != req.Header.Get("X-Request-Id") {
			t.Fatalf("X-Request-Id %q, net/http's %q", h.id, req.Header.Get("X-Request-Id"))
		}
		if got, want := forwardedFields(&h), netForwardedFields(req.Header); !reflect.DeepEqual(got, want) {
			t.Fatalf("fields %q, net/http's %q", got, want)
		}
		for _, pool := range hashOn {
			if got, want := hashKeyOf(pool, "ip", h.values), hashKeyOf(pool, "ip", req.Header.Values); got != want {
				t.Fatalf("hash key (%s) %q, net/http's %q", pool.Spec.HashOn, got, want)
			}
		}
		cc := &clientConn{clientIP: "192.0.2.1", proto: "http"}
		cc.writeHead(bufio.NewWriter(io.Discard), &h)

		var body msgBody
		body.reset(&h.msgHead, h.framing, h.length, br)
		if !sameBody(t, &body, &h.msgHead, req.Body, func() http.Header { return req.Trailer }) {
			return
		}
		// What follows the body, the next request, is the same.
		rest, _ := io.ReadAll(br)
		nrest, _ := io.ReadAll(nbr)
		if !bytes.Equal(rest, nrest) {
			t.Fatalf("after the body %q, net/http %q", rest, nrest)
		}
	})
}

// serverAccepts applies the checks net/http's server makes after reading
// a request, beyond http.ReadRequest's (server.go, readRequest): the
// Host field present in HTTP/1.1 and valid, valid field names and values.
// ReadRequest has deleted the Host field, so it is looked for in data.
func serverAccepts(data []byte, req *http.Request) bool {
	hosts := fieldValues(data, "Host")
	if req.ProtoAtLeast(1, 1) && len(hosts) == 0 && req.Method != "CONNECT" && !(req.Method == "PRI" && req.Proto == "HTTP/2.0") {
		return false
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// netCheck is the check the HTTP/1.1 path applied to what
// http.ReadRequest returned, before it had a parser of its own.
func netCheck(req *http.Request) int {
	switch {
	case req.ProtoMajor != 1:
		return 505
	case req.Method == http.MethodConnect:
		return 405
	case req.Host == "" && req.ProtoAtLeast(1, 1):
		return 400
	case !httpguts.ValidHostHeader(req.Host):
		return 400
	}
	if e := req.Header["Expect"]; len(e) > 0 && !(len(e) == 1 && strings.EqualFold(e[0], "100-continue")) {
		return 417
	}
	return 0
}

// netRouteHost is the host the HTTP/1.1 path routed by before.
func netRouteHost(host string) string {
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(host, ".")
}

func netUpgrade(h http.Header) string {
	if h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return h.Get("Upgrade")
	}
	return ""
}

// forwardedFields are the fields the proxy passes on, by canonical name.
func forwardedFields(h *reqHead) map[string][]string {
	m := map[string][]string{}
	for _, f := range h.fields {
		if h.passes(f.name) && !isForwarded(f.name) {
			k := http.CanonicalHeaderKey(string(f.name))
			m[k] = append(m[k], string(f.value))
		}
	}
	return m
}

// netForwardedFields are the fields the proxy passed on when net/http
// read the request, less the Cache-Control net/http adds to a Pragma.
func netForwardedFields(hdr http.Header) map[string][]string {
	m := map[string][]string{}
	for k, vv := range hdr {
		if hopHeaders[k] || isForwarded([]byte(k)) || (len(hdr["Connection"]) > 0 && netListed(hdr["Connection"], k)) {
			continue
		}
		if k == "Cache-Control" && hdr.Get("Pragma") == "no-cache" && len(vv) == 1 && vv[0] == "no-cache" {
			continue // net/http's fixPragmaCacheControl, unless the client sent it
		}
		m[k] = vv
	}
	return m
}

func netListed(connection []string, k string) bool {
	for _, v := range connection {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// folded reports whether the head in data has a line starting with a
// space or a tab.
func folded(data []byte) bool {
	head, _, _ := bytes.Cut(data, []byte("\n\r\n"))
	head, _, _ = bytes.Cut(head, []byte("\n\n"))
	return bytes.Contains(head, []byte("\n ")) || bytes.Contains(head, []byte("\n\t"))
}

// fieldValues returns the values of the fields named name in the head in
// data, read plainly.
func fieldValues(data []byte, name string) []string {
	var out []string
	_, rest := nextLine(data)
	for {
		var line []byte
		line, rest = nextLine(rest)
		if len(line) == 0 {
			return out
		}
		if k, v, ok := bytes.Cut(line, []byte{':'}); ok && strings.EqualFold(string(k), name) {
			out = append(out, strings.Trim(string(v), " \t"))
		}
	}
}

func hasField(data []byte, name string) bool { return len(fieldValues(data, name)) > 0 }
