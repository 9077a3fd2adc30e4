package proxy

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// Header rules of the HTTP/1.1 path: what a request must satisfy, what
// is forwarded, and the request id.

// check applies the rules net/http's server applies to a request before
// its handler sees it, beyond those http.ReadRequest applies.
func check(req *http.Request) (int, string) {
	switch {
	case req.ProtoMajor != 1:
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version " + req.Proto
	case req.Method == http.MethodConnect:
		return http.StatusMethodNotAllowed, "CONNECT is not supported"
	case req.Host == "" && req.ProtoAtLeast(1, 1):
		return http.StatusBadRequest, "missing required Host header"
	case !httpguts.ValidHostHeader(req.Host):
		return http.StatusBadRequest, "malformed Host header"
	}
	// Field names and values need no check here: http.ReadRequest's
	// header reader (net/textproto) refuses invalid ones already.
	if e := req.Header["Expect"]; len(e) > 0 && !(len(e) == 1 && strings.EqualFold(e[0], "100-continue")) {
		return http.StatusExpectationFailed, "unsupported Expect header"
	}
	return 0, ""
}

// hopHeaders are meaningful for one connection only and are not
// forwarded (RFC 9110, section 7.6.1). Forwarded and X-Forwarded-* from a
// client are not trusted: the proxy sets its own.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Expect": true, "Host": true,
}

var forwardedHeaders = map[string]bool{
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// writeHeader writes h's fields but the hop-by-hop ones, those the
// Connection field lists, and those in skip.
func writeHeader(bw *bufio.Writer, h http.Header, connection []string, skip map[string]bool) {
	for k, vv := range h {
		if hopHeaders[k] || skip[k] || (len(connection) > 0 && listed(connection, k)) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

// writeHead writes the request line and head of req as the proxy sends it
// on; its body's framing is the proxy's own.
func (cc *clientConn) writeHead(bw *bufio.Writer, req *http.Request) {
	uri := req.RequestURI
	if uri == "" || (uri[0] != '/' && uri != "*") {
		uri = req.URL.RequestURI() // absolute form: send the path only
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	writeHeader(bw, req.Header, req.Header["Connection"], forwardedHeaders)
	if te := req.Header["Te"]; len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers") {
		bw.WriteString("Te: trailers\r\n") // gRPC-style clients need it end to end
	}
	if isUpgrade(req.Header) {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(req.Header.Get("Upgrade"))
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-For: ")
	bw.WriteString(cc.clientIP)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\nX-Forwarded-Proto: ")
	bw.WriteString(cc.proto)
	bw.WriteString("\r\n")
	switch {
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

// listed reports whether the Connection field values name header k.
func listed(connection []string, k string) bool {
	for _, v := range connection {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// isUpgrade reports whether a request asks to switch protocols.
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// Request ids: a random per-process prefix and a counter, unique without a
// system call per request.
var (
	idPrefix  = func() string { var b [6]byte; _, _ = rand.Read(b[:]); return hex.EncodeToString(b[:]) }()
	idCounter atomic.Uint64
)

func newRequestID() string {
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 16)
}
