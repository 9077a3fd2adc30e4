package proxy

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// Header rules of the HTTP/1.1 path: what is forwarded, and the request
// id. What a request must satisfy is reqHead.check's (h1req.go).

// hopHeaders are meaningful for one connection only and are not
// forwarded (RFC 9110, section 7.6.1); nor are the fields whose place the
// proxy takes (the body's framing, Expect, which it answers itself, and
// Host, which it writes first).
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Expect": true, "Host": true,
}

// isForwarded reports whether a field is one of those a client may not
// set: the proxy sets its own, and Forwarded is not passed on.
func isForwarded(name []byte) bool {
	switch len(name) {
	case len("Forwarded"):
		return equalFold(name, "Forwarded")
	case len("X-Forwarded-For"):
		return equalFold(name, "X-Forwarded-For")
	case len("X-Forwarded-Host"):
		return equalFold(name, "X-Forwarded-Host")
	case len("X-Forwarded-Proto"):
		return equalFold(name, "X-Forwarded-Proto")
	}
	return false
}

// writeHead writes the request line and head of h as the proxy sends it
// on; its body's framing is the proxy's own.
func (cc *clientConn) writeHead(bw *bufio.Writer, h *reqHead) {
	bw.Write(h.method)
	bw.WriteByte(' ')
	bw.Write(h.uri) // an absolute-form target goes on as its path and query
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.Write(h.host)
	bw.WriteString("\r\n")
	for _, f := range h.fields {
		if h.passes(f.name) && !isForwarded(f.name) && !(h.newID && equalFold(f.name, "X-Request-Id")) {
			writeField(bw, f)
		}
	}
	if h.teTrailers {
		bw.WriteString("Te: trailers\r\n") // gRPC-style clients need it end to end
	}
	if h.upgrade != nil {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.Write(h.upgrade)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-For: ")
	bw.WriteString(cc.clientIP)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.Write(h.host)
	bw.WriteString("\r\nX-Forwarded-Proto: ")
	bw.WriteString(cc.proto)
	bw.WriteString("\r\n")
	if h.newID {
		bw.WriteString("X-Request-Id: ")
		bw.Write(h.id)
		bw.WriteString("\r\n")
	}
	switch {
	case h.length > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), h.length, 10))
		bw.WriteString("\r\n")
	case h.length < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case string(h.method) == "POST" || string(h.method) == "PUT" || string(h.method) == "PATCH":
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
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
