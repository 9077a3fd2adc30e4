package proxy

// What the HTTP/1.1 path's two parsers share: clients' requests
// (h1req.go) and instances' answers (h1resp.go) are both a head of field
// lines, kept as slices of one reused buffer and read by the same strict
// rules, and a body read by the framing its head gave.

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http/httputil"
	"strconv"
	"strings"
)

// maxTrailer bounds the trailer section of a chunked body, a request's or
// an answer's.
const maxTrailer = 64 << 10

// errTrailerTooLarge: a trailer section longer than maxTrailer.
var errTrailerTooLarge = fmt.Errorf("trailer section larger than %d KiB", maxTrailer>>10)

// field is a header or trailer field as the peer sent it, without the
// whitespace around its value.
type field struct{ name, value []byte }

// framing says where a message's body ends.
type framing uint8

const (
	noBody      framing = iota // an answer to HEAD, 1xx, 204, 304; a request without a length
	lengthBody                 // after Content-Length bytes
	chunkedBody                // after the last chunk and the trailer section
	eofBody                    // when the instance closes the connection (answers only)
)

// msgHead holds the lines of a message's head, later those of its
// trailer section, and the fields in them. Its slices are valid until the
// next reset.
type msgHead struct {
	buf        []byte
	fields     []field
	trailer    []field // the trailer section of a chunked body, once read
	connection bool    // a Connection field is among fields
}

// reset empties h for the next message, keeping its buffers unless one
// large message made them large.
func (h *msgHead) reset() {
	if cap(h.buf) > 16<<10 {
		h.buf = nil // one large head does not pin its buffer to the connection
	}
	if cap(h.fields) > 256 {
		h.fields = nil
	}
	h.buf, h.fields, h.trailer, h.connection = h.buf[:0], h.fields[:0], h.trailer[:0], false
}

// readTrailer reads the trailer section after a chunked body's last chunk.
func (h *msgHead) readTrailer(br *bufio.Reader) error {
	start := len(h.buf)
	var err error
	// Appending may move buf, but the head's fields keep the old array.
	if h.buf, err = readSection(br, h.buf, maxTrailer, errTrailerTooLarge); err != nil {
		return err
	}
	h.trailer, err = parseFields(h.buf[start:], h.trailer[:0])
	return err
}

// get returns the value of the first field named name.
func (h *msgHead) get(name string) []byte {
	for _, f := range h.fields {
		if equalFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// passes reports whether a field named name goes on to the other side:
// not a hop-by-hop field, nor one that the head's Connection fields name.
func (h *msgHead) passes(name []byte) bool {
	return !isHop(name) && !(h.connection && h.listed(name))
}

// listed reports whether a Connection field of the head names name.
func (h *msgHead) listed(name []byte) bool {
	for _, f := range h.fields {
		if equalFold(f.name, "Connection") && hasToken(f.value, name) {
			return true
		}
	}
	return false
}

// writeFields writes those of fields that pass to bw.
func (h *msgHead) writeFields(bw *bufio.Writer, fields []field) {
	for _, f := range fields {
		if h.passes(f.name) {
			writeField(bw, f)
		}
	}
}

func writeField(bw *bufio.Writer, f field) {
	bw.Write(f.name)
	bw.WriteString(": ")
	bw.Write(f.value)
	bw.WriteString("\r\n")
}

// readSection appends lines from br to buf up to and including the empty
// line that ends a head or a trailer section; more than limit bytes of
// them is the error tooLarge.
func readSection(br *bufio.Reader, buf []byte, limit int, tooLarge error) ([]byte, error) {
	start, line := len(buf), len(buf)
	for {
		b, err := br.ReadSlice('\n')
		if len(buf)-start+len(b) > limit {
			return buf, tooLarge
		}
		buf = append(buf, b...)
		switch err {
		case nil:
			if n := len(buf) - line; n == 1 || (n == 2 && buf[line] == '\r') {
				return buf, nil
			}
			line = len(buf)
		case bufio.ErrBufferFull: // a line longer than br's buffer
		case io.EOF:
			return buf, io.ErrUnexpectedEOF
		default:
			return buf, err
		}
	}
}

// nextLine splits the first line, without its CRLF or bare LF, off b.
func nextLine(b []byte) (line, rest []byte) {
	i := 0
	for i < len(b) && b[i] != '\n' {
		i++
	}
	line, rest = b[:i], b[min(i+1, len(b)):]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseFields appends the fields of the lines in b, up to the empty line,
// to fields.
func parseFields(b []byte, fields []field) ([]field, error) {
	for {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			return fields, nil
		}
		f, err := parseField(line)
		if err != nil {
			return fields, err
		}
		fields = append(fields, f)
	}
}

// parseField parses a field line: a token, a colon right after it, and a
// value of visible characters, spaces and tabs. A line that starts with
// whitespace continues the previous one (obs-fold); it is refused, as RFC
// 9112 (section 5.2) allows, rather than joined: a field read one way here
// and another way by the instance is how requests are smuggled.
func parseField(line []byte) (field, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return field{}, fmt.Errorf("folded field line (obsolete line folding) %q: send each field on one line", clip(line))
	}
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
		if !tchar[c] {
			return field{}, fmt.Errorf("invalid field name in %q", clip(line))
		}
	}
	if colon <= 0 {
		return field{}, fmt.Errorf("field line without a name and colon %q", clip(line))
	}
	v := line[colon+1:]
	for _, c := range v {
		if !valueByte(c) {
			return field{}, fmt.Errorf("control character in field %q", clip(line))
		}
	}
	return field{name: line[:colon], value: trimOWS(v)}, nil
}

// contentLength takes the value v of a Content-Length field into a head's
// cl (the first such value, nil before it) and length. Another field with
// the same value is allowed (RFC 9110, section 8.6), one with another
// value is refused, as net/http refuses it: two parsers would each pick
// one.
func contentLength(cl, v []byte, length int64) ([]byte, int64, error) {
	if cl != nil {
		if string(v) != string(cl) {
			return cl, length, fmt.Errorf("Content-Length %q and %q: send one length", clip(cl), clip(v))
		}
		return cl, length, nil
	}
	n, ok := parseLength(v)
	if !ok {
		return nil, 0, fmt.Errorf("Content-Length %q", clip(v))
	}
	return v, n, nil
}

// parseLength parses a Content-Length: decimal digits, less than 2^63.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// msgBody reads a message's body from its connection by the framing of
// its head; a chunked body's trailer section is read into the head before
// the body reports its end. A clientConn owns one for requests and one
// for answers, and resets them for each message.
type msgBody struct {
	h       *msgHead
	framing framing
	br      *bufio.Reader
	left    int64     // lengthBody: bytes not yet read
	chunks  io.Reader // chunkedBody
	eof     bool
}

func (b *msgBody) reset(h *msgHead, f framing, length int64, br *bufio.Reader) {
	*b = msgBody{h: h, framing: f, br: br, left: length}
	if f == chunkedBody {
		b.chunks = httputil.NewChunkedReader(br)
	}
}

func (b *msgBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	switch b.framing {
	case lengthBody:
		if b.left == 0 {
			b.eof = true
			return 0, io.EOF
		}
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case chunkedBody:
		n, err := b.chunks.Read(p)
		if err == io.EOF {
			if err = b.h.readTrailer(b.br); err == nil {
				b.eof, err = true, io.EOF
			}
		}
		return n, err
	case eofBody:
		return b.br.Read(p)
	}
	b.eof = true
	return 0, io.EOF
}

// discard reads and drops the body, at most limit bytes of it, and
// reports whether it came to its end.
func (b *msgBody) discard(limit int64) bool {
	n, err := io.Copy(io.Discard, io.LimitReader(b, limit))
	return err == nil && n < limit
}

// chunkedWriter writes the chunked transfer coding to a bufio.Writer, as
// httputil's does, but as a value of one pointer: making one and putting
// it in an io.Writer allocates nothing.
type chunkedWriter struct{ bw *bufio.Writer }

func (w chunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // a chunk of size 0 would end the body
	}
	w.bw.Write(strconv.AppendUint(w.bw.AvailableBuffer(), uint64(len(p)), 16))
	w.bw.WriteString("\r\n")
	n, err := w.bw.Write(p)
	if err == nil {
		_, err = w.bw.WriteString("\r\n")
	}
	return n, err
}

// Close writes the last chunk; the trailer section and the empty line
// that ends the body are the caller's to write.
func (w chunkedWriter) Close() error {
	_, err := w.bw.WriteString("0\r\n")
	return err
}

// tchar marks the bytes a token (a field name, a method) may hold (RFC
// 9110, section 5.6.2).
var tchar = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
		t[c] = true
	}
	return t
}()

// valueByte reports whether c may stand in a field value or a reason
// phrase: anything but a control character other than HTAB.
func valueByte(c byte) bool { return (c >= ' ' && c != 0x7f) || c == '\t' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold reports whether a and b are equal, ignoring ASCII case.
func equalFold[T string | []byte](a []byte, b T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasToken reports whether the comma-separated list names tok, ignoring
// case.
func hasToken[T string | []byte](list []byte, tok T) bool {
	for len(list) > 0 {
		i := 0
		for i < len(list) && list[i] != ',' {
			i++
		}
		if equalFold(trimOWS(list[:i]), tok) {
			return true
		}
		list = list[min(i+1, len(list)):]
	}
	return false
}

// hopLower holds hopHeaders' names in lower case, to match a name as a
// peer spelled it.
var hopLower = func() map[string]bool {
	m := map[string]bool{}
	for k := range hopHeaders {
		m[strings.ToLower(k)] = true
	}
	return m
}()

// isHop reports whether a field named name is one of hopHeaders, in any
// case.
func isHop(name []byte) bool {
	var b [32]byte
	if len(name) > len(b) {
		return false // longer than any of hopHeaders
	}
	for i, c := range name {
		b[i] = lower(c)
	}
	return hopLower[string(b[:len(name)])]
}

// clip shortens what goes into an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
