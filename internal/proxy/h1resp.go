package proxy

// The HTTP/1.1 path reads an instance's answer with this parser rather
// than http.ReadResponse: it keeps the head's fields as (name, value)
// slices of one reused buffer, so an answer costs no map and no strings,
// and it is stricter. Connections to instances are pooled and carry the
// requests of many clients in turn, so an answer whose end two parsers
// could see in different places (duplicate lengths, an unknown transfer
// coding, folded lines) could leave the next client reading the rest of
// someone else's answer. Such an answer is refused: the client gets a
// 502 and the connection is closed.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http/httputil"
	"strings"
)

// maxResponseHead bounds an answer's head, and separately its trailer
// section.
const maxResponseHead = 64 << 10

var (
	// errMalformed: the instance's answer breaks HTTP/1.1's grammar or
	// frames its body ambiguously.
	errMalformed = errors.New("malformed response from the instance")
	// errHeadTooLarge: the answer's head is longer than maxResponseHead.
	errHeadTooLarge = fmt.Errorf("response head larger than %d KiB", maxResponseHead>>10)
)

// field is a header or trailer field as the instance sent it, without the
// whitespace around its value.
type field struct{ name, value []byte }

// framing says where an answer's body ends.
type framing uint8

const (
	noBody      framing = iota // an answer to HEAD, 1xx, 204, 304
	lengthBody                 // after Content-Length bytes
	chunkedBody                // after the last chunk and the trailer section
	eofBody                    // when the instance closes the connection
)

// respHead is the head of an instance's answer. A clientConn owns one and
// reuses it, with its buffers, for each answer it reads; its slices are
// valid until the next read.
type respHead struct {
	code    int
	minor   int    // the answer's protocol is HTTP/1.minor
	status  []byte // the status line after the protocol: "200 OK"
	fields  []field
	trailer []field // the trailer section of a chunked body, once read
	framing framing
	// length is the body's length for lengthBody; for noBody, the
	// Content-Length to pass on (an answer to HEAD gives the length of the
	// body GET would get), or -1.
	length int64
	// close: the connection cannot carry another request after this answer.
	close      bool
	connection bool // a Connection field is among fields

	buf []byte   // the head's lines, then the trailer's
	num [20]byte // to format a Content-Length without allocating
}

// read reads and checks an answer's head from br and derives its
// framing; head says the request was a HEAD.
func (h *respHead) read(br *bufio.Reader, head bool) error {
	if cap(h.buf) > 16<<10 {
		h.buf = nil // one large head does not pin its buffer to the connection
	}
	if cap(h.fields) > 256 {
		h.fields = nil
	}
	h.fields, h.trailer = h.fields[:0], h.trailer[:0]
	var err error
	if h.buf, err = readSection(br, h.buf[:0]); err != nil {
		return err
	}
	line, rest := nextLine(h.buf)
	if err := h.parseStatus(line); err != nil {
		return err
	}
	if h.fields, err = parseFields(rest, h.fields); err != nil {
		return err
	}
	return h.frame(head)
}

// parseStatus parses a status line: HTTP/1.x SP 3DIGIT [SP reason].
func (h *respHead) parseStatus(line []byte) error {
	if len(line) < len("HTTP/1.x 200") || string(line[:7]) != "HTTP/1." || !isDigit(line[7]) || line[8] != ' ' ||
		line[9] < '1' || line[9] > '5' || !isDigit(line[10]) || !isDigit(line[11]) ||
		(len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	for _, c := range line[12:] {
		if !valueByte(c) {
			return fmt.Errorf("%w: control character in the status line %q", errMalformed, clip(line))
		}
	}
	h.minor = int(line[7] - '0')
	h.code = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	h.status = line[9:]
	return nil
}

// frame derives the body's framing and whether the connection can be
// used again from the head's fields, the way net/http does for an answer,
// and refuses a head that could be read more than one way.
func (h *respHead) frame(head bool) error {
	var cl []byte
	length := int64(-1)
	chunked, closeTok, keepTok := false, false, false
	h.connection = false
	for _, f := range h.fields {
		switch {
		case equalFold(f.name, "Content-Length"):
			if cl != nil {
				if string(f.value) != string(cl) {
					return fmt.Errorf("%w: Content-Length %q and %q", errMalformed, clip(cl), clip(f.value))
				}
				continue
			}
			n, ok := parseLength(f.value)
			if !ok {
				return fmt.Errorf("%w: Content-Length %q", errMalformed, clip(f.value))
			}
			cl, length = f.value, n
		case equalFold(f.name, "Transfer-Encoding"):
			if chunked {
				return fmt.Errorf("%w: more than one Transfer-Encoding field", errMalformed)
			}
			if !equalFold(f.value, "chunked") {
				return fmt.Errorf("%w: Transfer-Encoding other than chunked (%q)", errMalformed, clip(f.value))
			}
			if h.minor == 0 {
				return fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 response", errMalformed)
			}
			chunked = true
		case equalFold(f.name, "Connection"):
			h.connection = true
			closeTok = closeTok || hasToken(f.value, "close")
			keepTok = keepTok || hasToken(f.value, "keep-alive")
		}
	}
	h.close = closeTok || (h.minor == 0 && !keepTok)
	if chunked && length >= 0 {
		// RFC 9112, section 6.3: chunked wins; the instance framed its
		// answer two ways, so its connection is not trusted with another.
		length, h.close = -1, true
	}
	h.length = length
	switch {
	case head || h.code < 200 || h.code == 204 || h.code == 304:
		h.framing = noBody
	case chunked:
		h.framing = chunkedBody
	case length >= 0:
		h.framing = lengthBody
	default:
		h.framing, h.close = eofBody, true
	}
	return nil
}

// readTrailer reads the trailer section after a chunked body's last chunk.
func (h *respHead) readTrailer(br *bufio.Reader) error {
	start := len(h.buf)
	var err error
	// Appending may move buf, but the head's fields keep the old array.
	if h.buf, err = readSection(br, h.buf); err != nil {
		return err
	}
	h.trailer, err = parseFields(h.buf[start:], h.trailer[:0])
	return err
}

// get returns the value of the first field named name.
func (h *respHead) get(name string) []byte {
	for _, f := range h.fields {
		if equalFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// writeFields writes fields to bw, but the hop-by-hop ones and those the
// head's Connection fields name.
func (h *respHead) writeFields(bw *bufio.Writer, fields []field) {
	for _, f := range fields {
		if isHop(f.name) || (h.connection && h.listed(f.name)) {
			continue
		}
		bw.Write(f.name)
		bw.WriteString(": ")
		bw.Write(f.value)
		bw.WriteString("\r\n")
	}
}

// listed reports whether a Connection field of the head names name.
func (h *respHead) listed(name []byte) bool {
	for _, f := range h.fields {
		if equalFold(f.name, "Connection") && hasToken(f.value, name) {
			return true
		}
	}
	return false
}

// readSection appends lines from br to buf up to and including the empty
// line that ends a head or a trailer section, at most maxResponseHead
// bytes of them.
func readSection(br *bufio.Reader, buf []byte) ([]byte, error) {
	start, line := len(buf), len(buf)
	for {
		b, err := br.ReadSlice('\n')
		if len(buf)-start+len(b) > maxResponseHead {
			return buf, errHeadTooLarge
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
// value of visible characters, spaces and tabs.
func parseField(line []byte) (field, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return field{}, fmt.Errorf("%w: folded field line %q", errMalformed, clip(line))
	}
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
		if !tchar[c] {
			return field{}, fmt.Errorf("%w: invalid field name in %q", errMalformed, clip(line))
		}
	}
	if colon <= 0 {
		return field{}, fmt.Errorf("%w: field line without a name and colon %q", errMalformed, clip(line))
	}
	v := line[colon+1:]
	for _, c := range v {
		if !valueByte(c) {
			return field{}, fmt.Errorf("%w: control character in field %q", errMalformed, clip(line))
		}
	}
	return field{name: line[:colon], value: trimOWS(v)}, nil
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

// respBody reads an answer's body from the instance's connection by the
// framing of its head; a chunked body's trailer section is read into the
// head before the body reports its end. A clientConn owns one and resets
// it for each answer.
type respBody struct {
	h      *respHead
	br     *bufio.Reader
	left   int64     // lengthBody: bytes not yet read
	chunks io.Reader // chunkedBody
	eof    bool
}

func (b *respBody) reset(h *respHead, br *bufio.Reader) {
	*b = respBody{h: h, br: br, left: h.length}
	if h.framing == chunkedBody {
		b.chunks = httputil.NewChunkedReader(br)
	}
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	switch b.h.framing {
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
func (b *respBody) discard(limit int64) bool {
	n, err := io.Copy(io.Discard, io.LimitReader(b, limit))
	return err == nil && n < limit
}

// tchar marks the bytes a token (a field name) may hold (RFC 9110,
// section 5.6.2).
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

// hopLower holds hopHeaders' names in lower case, to match a name as an
// instance spelled it.
var hopLower = func() map[string]bool {
	m := map[string]bool{}
	for k := range hopHeaders {
		m[strings.ToLower(k)] = true
	}
	return m
}()

// isHop reports whether a field named name is one that writeHeader would
// not pass on either.
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
