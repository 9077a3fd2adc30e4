package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkH1Proxy measures one request through the HTTP/1.1 path on a
// keep-alive connection, against an in-process instance that answers
// without allocating, so that allocs/op and B/op are the proxy's (the
// client's reads here allocate nothing either).
func BenchmarkH1Proxy(b *testing.B) {
	for _, tc := range []struct{ name, answer string }{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n" +
			"Date: Mon, 02 Jan 2006 15:04:05 GMT\r\n\r\nhello, world\n"},
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n" +
			"Date: Mon, 02 Jan 2006 15:04:05 GMT\r\n\r\nd\r\nhello, world\n\r\n0\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := fixedBackend(b, tc.answer)
			p := startProxy(b, addr)
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			req := []byte("GET / HTTP/1.1\r\nHost: svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if err := readAnswer(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fixedBackend answers every request (a head without a body) on every
// connection with answer.
func fixedBackend(tb testing.TB, answer string) string {
	tb.Helper()
	out := []byte(answer)
	ln := instance(tb, func(c net.Conn, _ int) {
		defer c.Close()
		br := bufio.NewReader(c)
		for skipHead(br) == nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	})
	return ln.Addr().String()
}

// skipHead reads a message head up to its empty line.
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// readAnswer reads an answer framed by Content-Length or chunked
// encoding, without allocating.
func readAnswer(br *bufio.Reader) error {
	n, chunked := -1, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n = 0
			for _, c := range v {
				n = n*10 + int(c-'0')
			}
		} else if bytes.Equal(line, []byte("Transfer-Encoding: chunked")) {
			chunked = true
		}
	}
	if !chunked {
		if n < 0 {
			return io.ErrUnexpectedEOF
		}
		_, err := br.Discard(n)
		return err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size := 0
		for _, c := range bytes.TrimRight(line, "\r\n") {
			d := bytes.IndexByte([]byte("0123456789abcdef"), c|0x20)
			if d < 0 {
				return errors.New("bad chunk size")
			}
			size = size*16 + d
		}
		if size == 0 {
			return skipHead(br) // trailers and the final CRLF
		}
		if _, err := br.Discard(size + 2); err != nil {
			return err
		}
	}
}

// benchHeads runs one sub-benchmark per parser on the same head.
func benchHeads(b *testing.B, in string, parsers map[string]func(*bufio.Reader) error) {
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 4096)
	for _, name := range []string{"proxy", "net-http"} {
		parse := parsers[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(in)
				br.Reset(sr)
				if err := parse(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkResponseHead compares the parser of instances' answers with
// net/http's, which the HTTP/1.1 path used before, on a typical head.
func BenchmarkResponseHead(b *testing.B) {
	var h respHead
	req := &http.Request{Method: http.MethodGet}
	benchHeads(b, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n"+
		"Date: Mon, 02 Jan 2006 15:04:05 GMT\r\nCache-Control: no-store\r\n\r\n", map[string]func(*bufio.Reader) error{
		"proxy": func(br *bufio.Reader) error { return h.read(br, false) },
		"net-http": func(br *bufio.Reader) error {
			_, err := http.ReadResponse(br, req)
			return err
		},
	})
}

// BenchmarkRequestHead compares the parser of clients' requests with
// net/http's, which the HTTP/1.1 path used before, on a typical head:
// reading it and the checks the path makes before routing.
func BenchmarkRequestHead(b *testing.B) {
	var h reqHead
	benchHeads(b, "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: svc\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"+
		"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n", map[string]func(*bufio.Reader) error{
		"proxy": func(br *bufio.Reader) error {
			if err := h.read(br); err != nil {
				return err
			}
			if code, msg := h.check(); code != 0 {
				return errors.New(msg)
			}
			return nil
		},
		"net-http": func(br *bufio.Reader) error {
			req, err := http.ReadRequest(br)
			if err != nil {
				return err
			}
			if code := netCheck(req); code != 0 {
				return fmt.Errorf("net/http check: %d", code)
			}
			return nil
		},
	})
}
