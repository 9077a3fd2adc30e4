package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// readRespHead parses s as an answer to a GET (or a HEAD) through a reader of
// the given buffer size.
func readRespHead(s string, head bool, size int) (*respHead, error) {
	h := &respHead{}
	err := h.read(bufio.NewReaderSize(strings.NewReader(s), size), head)
	return h, err
}

// fieldsText writes fields as "name: value" lines joined by "|".
func fieldsText(fields []field) string {
	var out []string
	for _, f := range fields {
		out = append(out, string(f.name)+": "+string(f.value))
	}
	return strings.Join(out, "|")
}

func TestResponseHeadValid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		head    bool
		code    int
		minor   int
		status  string
		framing framing
		length  int64
		close   bool
		fields  string
	}{
		{name: "content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 13, fields: "Content-Length: 13"},
		{name: "identical lengths collapse", in: "HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length:  7 \r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 7, fields: "Content-Length: 7|content-length: 7"},
		{name: "largest length", in: "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 1<<63 - 1, fields: "Content-Length: 9223372036854775807"},
		{name: "leading zeros", in: "HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 7, fields: "Content-Length: 007"},
		{name: "chunked any case, trimmed", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding:  ChUnKeD\t\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: chunkedBody, length: -1, fields: "Transfer-Encoding: ChUnKeD"},
		{name: "chunked wins over Content-Length, then close", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: chunkedBody, length: -1, close: true, fields: "Content-Length: 5|Transfer-Encoding: chunked"},
		{name: "close-delimited", in: "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: eofBody, length: -1, close: true, fields: "X-A: b"},
		{name: "HEAD keeps its Content-Length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", head: true,
			code: 200, minor: 1, status: "200 OK", framing: noBody, length: 1234, fields: "Content-Length: 1234"},
		{name: "HEAD without length", in: "HTTP/1.1 200 OK\r\n\r\n", head: true,
			code: 200, minor: 1, status: "200 OK", framing: noBody, length: -1},
		{name: "HEAD chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head: true,
			code: 200, minor: 1, status: "200 OK", framing: noBody, length: -1, fields: "Transfer-Encoding: chunked"},
		{name: "204", in: "HTTP/1.1 204 No Content\r\n\r\n",
			code: 204, minor: 1, status: "204 No Content", framing: noBody, length: -1},
		{name: "304 keeps its Content-Length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
			code: 304, minor: 1, status: "304 Not Modified", framing: noBody, length: 10, fields: "Content-Length: 10"},
		{name: "103", in: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
			code: 103, minor: 1, status: "103 Early Hints", framing: noBody, length: -1, fields: "Link: </a.css>; rel=preload"},
		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
			code: 101, minor: 1, status: "101 Switching Protocols", framing: noBody, length: -1, fields: "Upgrade: websocket|Connection: Upgrade"},
		{name: "Connection: close", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 0, close: true, fields: "Connection: keep-alive, CLOSE|Content-Length: 0"},
		{name: "HTTP/1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 0, status: "200 OK", framing: lengthBody, length: 0, close: true, fields: "Content-Length: 0"},
		{name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 0, status: "200 OK", framing: lengthBody, length: 0, fields: "Connection: Keep-Alive|Content-Length: 0"},
		{name: "no reason", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200", framing: lengthBody, length: 0, fields: "Content-Length: 0"},
		{name: "empty reason", in: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
			code: 404, minor: 1, status: "404 ", framing: lengthBody, length: 0, fields: "Content-Length: 0"},
		{name: "reason with tab and obs-text", in: "HTTP/1.1 200 \tD\xe9j\xe0 vu\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200 \tD\xe9j\xe0 vu", framing: lengthBody, length: 0, fields: "Content-Length: 0"},
		{name: "bare LF line ends", in: "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\r\n\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 2, fields: "Content-Length: 2|X-A: b"},
		{name: "spelling kept, value trimmed, empty value", in: "HTTP/1.1 200 OK\r\nx-CuStOm: \t v a \t\r\nX-Empty:\r\nX-Sp:   \r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 0, fields: "x-CuStOm: v a|X-Empty: |X-Sp: |Content-Length: 0"},
		{name: "token characters and obs-text value", in: "HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~09azAZ: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 0, fields: "!#$%&'*+-.^_`|~09azAZ: caf\xc3\xa9|Content-Length: 0"},
		{name: "line longer than the reader's buffer", in: "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("x", 10000) + "\r\nContent-Length: 0\r\n\r\n",
			code: 200, minor: 1, status: "200 OK", framing: lengthBody, length: 0, fields: "X-Long: " + strings.Repeat("x", 10000) + "|Content-Length: 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				h, err := readRespHead(tc.in, tc.head, size)
				if err != nil {
					t.Fatalf("buffer %d: %v", size, err)
				}
				if h.code != tc.code || h.minor != tc.minor || string(h.status) != tc.status {
					t.Errorf("buffer %d: code %d minor %d status %q", size, h.code, h.minor, h.status)
				}
				if h.framing != tc.framing || h.length != tc.length || h.close != tc.close {
					t.Errorf("buffer %d: framing %d length %d close %v, want %d %d %v", size, h.framing, h.length, h.close, tc.framing, tc.length, tc.close)
				}
				if got := fieldsText(h.fields); got != tc.fields {
					t.Errorf("buffer %d: fields %q, want %q", size, got, tc.fields)
				}
			}
		})
	}
}

// invalidHeads are answers the parser refuses, each for one rule.
var invalidHeads = []struct{ name, in, want string }{
	// the status line: HTTP/1.x SP 3DIGIT [SP reason]
	{"empty status line", "\r\nHTTP/1.1 200 OK\r\n\r\n", "status line"},
	{"not HTTP", "ICY 200 OK\r\n\r\n", "status line"},
	{"lower-case protocol", "http/1.1 200 OK\r\n\r\n", "status line"},
	{"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", "status line"},
	{"two-digit minor", "HTTP/1.10 200 OK\r\n\r\n", "status line"},
	{"no minor", "HTTP/1 200 OK\r\n\r\n", "status line"},
	{"two spaces", "HTTP/1.1  200 OK\r\n\r\n", "status line"},
	{"tab for space", "HTTP/1.1\t200 OK\r\n\r\n", "status line"},
	{"two-digit code", "HTTP/1.1 20 OK\r\n\r\n", "status line"},
	{"four-digit code", "HTTP/1.1 2000 OK\r\n\r\n", "status line"},
	{"code without space before reason", "HTTP/1.1 200OK\r\n\r\n", "status line"},
	{"non-digit code", "HTTP/1.1 2x0 OK\r\n\r\n", "status line"},
	{"signed code", "HTTP/1.1 +20 OK\r\n\r\n", "status line"},
	{"code below 100", "HTTP/1.1 099 Low\r\n\r\n", "status line"},
	{"code above 599", "HTTP/1.1 600 High\r\n\r\n", "status line"},
	{"control character in reason", "HTTP/1.1 200 O\x00K\r\n\r\n", "status line"},
	{"bare CR in reason", "HTTP/1.1 200 O\rK\r\n\r\n", "status line"},
	// field lines
	{"no colon", "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", "without a name and colon"},
	{"empty name", "HTTP/1.1 200 OK\r\n: value\r\n\r\n", "without a name and colon"},
	{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", "invalid field name"},
	{"tab before colon", "HTTP/1.1 200 OK\r\nX-A\t: b\r\n\r\n", "invalid field name"},
	{"space in name", "HTTP/1.1 200 OK\r\nX A: b\r\n\r\n", "invalid field name"},
	{"separator in name", "HTTP/1.1 200 OK\r\nX(A): b\r\n\r\n", "invalid field name"},
	{"control character in name", "HTTP/1.1 200 OK\r\nX\x01A: b\r\n\r\n", "invalid field name"},
	{"non-ASCII name", "HTTP/1.1 200 OK\r\nCaf\xc3\xa9: b\r\n\r\n", "invalid field name"},
	{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", "control character"},
	{"DEL in value", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n", "control character"},
	{"ESC in value", "HTTP/1.1 200 OK\r\nX-A: \x1b[31m\r\n\r\n", "control character"},
	{"bare CR in value", "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 0\r\n\r\n", "control character"},
	{"CR before CRLF", "HTTP/1.1 200 OK\r\nX-A: a\r\r\n\r\n", "control character"},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "folded"},
	{"obs-fold with tab", "HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n\r\n", "folded"},
	{"space before the first field", "HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n", "folded"},
	// Content-Length
	{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length"},
	{"lengths spelled differently", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 05\r\n\r\nhello", "Content-Length"},
	{"empty length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", "Content-Length"},
	{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"},
	{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "Content-Length"},
	{"hex length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", "Content-Length"},
	{"list of lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "Content-Length"},
	{"length with space inside", "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", "Content-Length"},
	{"length of 2^63", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n", "Content-Length"},
	{"invalid length on a 304", "HTTP/1.1 304 Not Modified\r\nContent-Length: ten\r\n\r\n", "Content-Length"},
	{"invalid length on HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", "Content-Length"},
	// Transfer-Encoding
	{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"},
	{"gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"},
	{"chunked, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "Transfer-Encoding"},
	{"identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok", "Transfer-Encoding"},
	{"empty coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", "Transfer-Encoding"},
	{"chunked with a parameter", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", "Transfer-Encoding"},
	{"two fields", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"},
	{"in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"},
	// the head as a whole
	{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "unexpected EOF"},
	{"nothing", "", "unexpected EOF"},
	{"too large", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 70) + "\r\n", "larger than 64 KiB"},
}

func TestResponseHeadInvalid(t *testing.T) {
	for _, tc := range invalidHeads {
		t.Run(tc.name, func(t *testing.T) {
			head := strings.Contains(tc.name, "HEAD")
			for _, size := range []int{16, 4096} {
				_, err := readRespHead(tc.in, head, size)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("buffer %d: error %v, want one about %q", size, err, tc.want)
				}
				isEOF := errors.Is(err, io.ErrUnexpectedEOF)
				if !isEOF && !errors.Is(err, errMalformed) && !errors.Is(err, errHeadTooLarge) {
					t.Errorf("buffer %d: %v is not errMalformed", size, err)
				}
			}
		})
	}
}

// The limit is on the head's bytes: a head of 64 KiB passes.
func TestResponseHeadLimit(t *testing.T) {
	start, end := "HTTP/1.1 200 OK\r\nX-Pad: ", "\r\n\r\n"
	in := start + strings.Repeat("p", maxResponseHead-len(start)-len(end)) + end
	if _, err := readRespHead(in, false, 4096); err != nil {
		t.Fatalf("%d bytes: %v", len(in), err)
	}
	in = start + strings.Repeat("p", maxResponseHead-len(start)-len(end)+1) + end
	if _, err := readRespHead(in, false, 4096); !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("%d bytes: %v", len(in), err)
	}
}

func TestResponseBody(t *testing.T) {
	for _, tc := range []struct {
		name, in, body, trailer, rest string
		err                           string
	}{
		{name: "length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", body: "hello", rest: "NEXT"},
		{name: "length cut short", in: "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", err: "unexpected EOF"},
		{name: "close-delimited", in: "HTTP/1.1 200 OK\r\n\r\nall of it\r\n\r\n", body: "all of it\r\n\r\n"},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT", body: "hello world", rest: "NEXT"},
		{name: "trailers", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: abc \r\nx-other:1\r\n\r\nNEXT",
			body: "ok", trailer: "X-Sum: abc|x-other: 1", rest: "NEXT"},
		{name: "trailers with bare LF", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: abc\n\nNEXT", body: "ok", trailer: "X-Sum: abc", rest: "NEXT"},
		{name: "folded trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: a\r\n b\r\n\r\n", err: "folded"},
		{name: "trailer without colon", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnonsense\r\n\r\n", err: "colon"},
		{name: "trailer cut short", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: a\r\n", err: "unexpected EOF"},
		{name: "trailer too large", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Pad: " + strings.Repeat("p", maxResponseHead) + "\r\n\r\n", err: "larger than"},
		{name: "bad chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", err: "invalid byte in chunk length"},
		{name: "chunk cut short", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", err: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.in), 4096)
			var h respHead
			if err := h.read(br, false); err != nil {
				t.Fatal(err)
			}
			var body msgBody
			h.body(&body, br)
			got, err := io.ReadAll(&body)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one about %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(br)
			if string(got) != tc.body || fieldsText(h.trailer) != tc.trailer || string(rest) != tc.rest {
				t.Fatalf("body %q trailer %q rest %q", got, fieldsText(h.trailer), rest)
			}
			if fieldsText(h.fields) == "" && h.framing != eofBody {
				t.Fatal("the head's fields went with the trailer's read")
			}
		})
	}
}

// Hop-by-hop fields and those Connection names stay behind, whatever
// their case; the others keep the instance's spelling and order.
func TestResponseWriteFields(t *testing.T) {
	h, err := readRespHead("HTTP/1.1 200 OK\r\nconnection: X-Secret, keep-alive\r\nx-b: 2\r\nX-SECRET: s\r\nKEEP-ALIVE: timeout=5\r\n"+
		"transfer-encoding: chunked\r\nproxy-authenticate: Basic\r\nProxy-Connection: close\r\nTRAILER: X-Sum\r\nupgrade: h2c\r\n"+
		"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-A: 1\r\n\r\n", false, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	h.writeFields(bw, h.fields)
	bw.Flush()
	if want := "x-b: 2\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-A: 1\r\n"; out.String() != want {
		t.Fatalf("wrote %q, want %q", out.String(), want)
	}
	if got := h.get("UPGRADE"); string(got) != "h2c" {
		t.Fatalf("get: %q", got)
	}
}

// The parser reads no more of the connection than the head: what follows
// is the body, or the next answer.
func TestResponseHeadStopsAtItsEnd(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nrest"), 16)
	var h respHead
	for _, want := range []int{103, 204} {
		if err := h.read(br, false); err != nil || h.code != want {
			t.Fatalf("code %d, %v; want %d", h.code, err, want)
		}
	}
	if rest, _ := io.ReadAll(br); string(rest) != "rest" {
		t.Fatalf("rest %q", rest)
	}
}

func TestResponseHeadDoesNotAllocate(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nConnection: keep-alive\r\n\r\n"
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 4096)
	var h respHead
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(in)
		br.Reset(sr)
		if err := h.read(br, false); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		h.writeFields(bw, h.fields)
		bw.Flush()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per head", allocs)
	}
}

// FuzzResponseHead checks that no input makes the parser panic; that it
// reads a head the same way whatever its reader's buffer size; that what
// it accepts, net/http accepts too, with the same status, framing and
// fields; and that their bodies and trailers agree.
func FuzzResponseHead(f *testing.F) {
	for _, tc := range invalidHeads {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in))
		}
	}
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
		"HTTP/1.1 200\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h, small respHead
		err := h.read(bufio.NewReaderSize(bytes.NewReader(data), 4096), false)
		serr := small.read(bufio.NewReaderSize(bytes.NewReader(data), 16), false)
		if (err == nil) != (serr == nil) || (err == nil && (h.code != small.code || h.framing != small.framing ||
			h.length != small.length || h.close != small.close || fieldsText(h.fields) != fieldsText(small.fields))) {
			t.Fatalf("the buffer's size changes the reading: %v / %v", err, serr)
		}
		if err != nil {
			return
		}
		h.writeFields(bufio.NewWriter(io.Discard), h.fields)

		hbr := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		resp, herr := http.ReadResponse(hbr, &http.Request{Method: http.MethodGet})
		if herr != nil {
			t.Fatalf("net/http refuses what the parser accepts: %v", herr)
		}
		defer resp.Body.Close()
		if resp.StatusCode != h.code || resp.ProtoMinor != h.minor {
			t.Fatalf("status %d HTTP/1.%d, net/http %d HTTP/1.%d", h.code, h.minor, resp.StatusCode, resp.ProtoMinor)
		}
		netChunked := slices.Equal(resp.TransferEncoding, []string{"chunked"})
		switch h.framing {
		case noBody:
			if resp.ContentLength != 0 {
				t.Fatalf("no body, net/http's length %d", resp.ContentLength)
			}
		case lengthBody:
			if resp.ContentLength != h.length || netChunked {
				t.Fatalf("length %d, net/http's %d (chunked %v)", h.length, resp.ContentLength, netChunked)
			}
		case chunkedBody:
			if resp.ContentLength != -1 || !netChunked {
				t.Fatalf("chunked, net/http's length %d (chunked %v)", resp.ContentLength, netChunked)
			}
		case eofBody:
			if resp.ContentLength != -1 || netChunked {
				t.Fatalf("close-delimited, net/http's length %d (chunked %v)", resp.ContentLength, netChunked)
			}
		}
		both := h.get("Transfer-Encoding") != nil && h.get("Content-Length") != nil
		if h.close != resp.Close && !(both && h.close) {
			t.Fatalf("close %v, net/http's %v", h.close, resp.Close)
		}
		for _, f := range h.fields {
			k := http.CanonicalHeaderKey(string(f.name))
			switch k {
			case "Transfer-Encoding", "Content-Length", "Trailer", "Connection":
				continue // net/http moves these to fields of Response
			}
			if !slices.Contains(resp.Header[k], string(f.value)) {
				t.Fatalf("field %q: %q, net/http's %q", f.name, f.value, resp.Header[k])
			}
		}

		br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		if err := h.read(br, false); err != nil {
			t.Fatal(err)
		}
		var body msgBody
		h.body(&body, br)
		sameBody(t, &body, &h.msgHead, resp.Body, func() http.Header { return resp.Trailer })
	})
}

// rawInstance is an instance that answers the n-th request it reads, on
// whatever connection, with answers[n] as raw bytes (the last answer
// again after the list ends), and records the connection each request
// came on.
type rawInstance struct {
	ln      net.Listener
	answers []rawAnswer
	mu      sync.Mutex
	conns   []int // per request, the number of its connection
}

type rawAnswer struct {
	text  string
	close bool // close the connection after the answer
}

func newRawInstance(t *testing.T, answers ...rawAnswer) *rawInstance {
	t.Helper()
	ri := &rawInstance{answers: answers}
	ri.ln = instance(t, ri.serve)
	return ri
}

func (ri *rawInstance) serve(c net.Conn, conn int) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		ri.mu.Lock()
		a := ri.answers[min(len(ri.conns), len(ri.answers)-1)]
		ri.conns = append(ri.conns, conn)
		ri.mu.Unlock()
		if _, err := io.WriteString(c, a.text); err != nil || a.close {
			return
		}
	}
}

// seen returns the connection each request came on.
func (ri *rawInstance) seen() []int {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return slices.Clone(ri.conns)
}

// ask sends a request for method to the proxy on a new connection and
// reads the answer, its body, and its trailer.
func ask(t *testing.T, p *Proxy, method string) (*http.Response, string) {
	t.Helper()
	_, br := raw(t, p, method+" / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, string(b)
}

// The proxy passes on each way an instance may frame an answer, refuses
// an answer framed ambiguously with a 502, and uses a connection again
// only after an answer whose end was certain.
func TestH1ResponseFraming(t *testing.T) {
	next := rawAnswer{text: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"}
	for _, tc := range []struct {
		name   string
		method string
		answer rawAnswer
		reuse  bool // the next request may go on the same connection
		check  func(t *testing.T, resp *http.Response, body string)
	}{
		{"chunked with trailers", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\nConnection: x\r\n\r\n"}, true,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 200 || body != "hello world" || resp.Trailer.Get("X-Sum") != "abc" || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
					t.Errorf("%s %q trailer %v", resp.Status, body, resp.Trailer)
				}
				if _, ok := resp.Trailer["Connection"]; ok {
					t.Error("a hop-by-hop trailer field was passed on")
				}
			}},
		{"close-delimited", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end", close: true}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 200 || body != "until the end" || resp.Header.Get("X-A") != "1" || resp.Close {
					t.Errorf("%s %q close %v", resp.Status, body, resp.Close)
				}
			}},
		{"HEAD with Content-Length", "HEAD", rawAnswer{text: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"}, true,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 200 || resp.ContentLength != 1234 || body != "" {
					t.Errorf("%s length %d %q", resp.Status, resp.ContentLength, body)
				}
			}},
		{"204", "GET", rawAnswer{text: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"}, true,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 204 || resp.Header.Get("X-A") != "1" || resp.Header.Get("Content-Length") != "" {
					t.Errorf("%s %v", resp.Status, resp.Header)
				}
			}},
		{"304", "GET", rawAnswer{text: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n"}, true,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 304 || resp.Header.Get("Content-Length") != "10" || resp.Header.Get("ETag") != `"x"` || body != "" {
					t.Errorf("%s %v %q", resp.Status, resp.Header, body)
				}
			}},
		{"conflicting Content-Length", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 502 || !strings.Contains(body, "Content-Length") {
					t.Errorf("%s %q", resp.Status, body)
				}
			}},
		{"obs-fold", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 502 || !strings.Contains(body, "folded") {
					t.Errorf("%s %q", resp.Status, body)
				}
			}},
		{"chunked and Content-Length", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 200 || body != "ok" || resp.ContentLength != -1 {
					t.Errorf("%s %q length %d", resp.Status, body, resp.ContentLength)
				}
			}},
		{"Connection: close", "GET", rawAnswer{text: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 200 || body != "ok" || resp.Close {
					t.Errorf("%s %q close %v", resp.Status, body, resp.Close)
				}
			}},
		{"101 unasked", "GET", rawAnswer{text: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"}, false,
			func(t *testing.T, resp *http.Response, body string) {
				if resp.StatusCode != 502 {
					t.Errorf("%s %q", resp.Status, body)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ri := newRawInstance(t, tc.answer, next)
			p := startProxy(t, ri.ln.Addr().String())
			resp, body := ask(t, p, tc.method)
			tc.check(t, resp, body)
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
			// The instance's connection is back in the pool (or closed)
			// before the client has the end of the answer.
			if resp, body = ask(t, p, "GET"); resp.StatusCode != 200 || body != "next" {
				t.Fatalf("next request: %s %q", resp.Status, body)
			}
			seen := ri.seen()
			if reused := seen[1] == seen[0]; reused != tc.reuse {
				t.Fatalf("next request on connection %d after %d: reused %v, want %v", seen[1], seen[0], reused, tc.reuse)
			}
		})
	}
}

// A 103 is passed on before the final answer; a 100 is not.
func TestH1Informational(t *testing.T) {
	ri := newRawInstance(t, rawAnswer{text: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: close\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
	p := startProxy(t, ri.ln.Addr().String())
	_, br := raw(t, p, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	early, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if early.StatusCode != 103 || early.Header.Get("Link") != "</a.css>; rel=preload" || early.Header.Get("Connection") != "" {
		t.Fatalf("first answer %s %v", early.Status, early.Header)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("final answer %s %q", resp.Status, body)
	}
}

// sameBody reads body (of the head h) and net/http's reading of it to
// their ends and fails t if they differ, or if a trailer field of h is
// not among net/http's (netTrailer, once its body is read). It reports
// false, checking nothing, if either could not be read to its end:
// net/http takes folded trailer lines, and more of them.
func sameBody(t *testing.T, body *msgBody, h *msgHead, netBody io.Reader, netTrailer func() http.Header) bool {
	t.Helper()
	got, err := io.ReadAll(body)
	want, nerr := io.ReadAll(netBody)
	if err != nil || nerr != nil {
		return false
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("body %q, net/http's %q", got, want)
	}
	for _, f := range h.trailer {
		k := http.CanonicalHeaderKey(string(f.name))
		if !slices.Contains(netTrailer()[k], string(f.value)) {
			t.Fatalf("trailer %q: %q, net/http's %q", f.name, f.value, netTrailer()[k])
		}
	}
	return true
}
