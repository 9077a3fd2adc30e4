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
)

// maxResponseHead bounds an answer's head.
const maxResponseHead = 64 << 10

var (
	// errMalformed: the instance's answer breaks HTTP/1.1's grammar or
	// frames its body ambiguously.
	errMalformed = errors.New("malformed response from the instance")
	// errHeadTooLarge: the answer's head is longer than maxResponseHead.
	errHeadTooLarge = fmt.Errorf("response head larger than %d KiB", maxResponseHead>>10)
)

// respHead is the head of an instance's answer. A clientConn owns one and
// reuses it, with its buffers, for each answer it reads; its slices are
// valid until the next read.
type respHead struct {
	msgHead
	code    int
	minor   int    // the answer's protocol is HTTP/1.minor
	status  []byte // the status line after the protocol: "200 OK"
	framing framing
	// length is the body's length for lengthBody; for noBody, the
	// Content-Length to pass on (an answer to HEAD gives the length of the
	// body GET would get), or -1.
	length int64
	// close: the connection cannot carry another request after this answer.
	close bool

	num [20]byte // to format a Content-Length without allocating
}

// read reads and checks an answer's head from br and derives its
// framing; head says the request was a HEAD.
func (h *respHead) read(br *bufio.Reader, head bool) error {
	h.reset()
	var err error
	if h.buf, err = readSection(br, h.buf, maxResponseHead, errHeadTooLarge); err != nil {
		return err
	}
	line, rest := nextLine(h.buf)
	if err := h.parseStatus(line); err != nil {
		return err
	}
	if h.fields, err = parseFields(rest, h.fields); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return h.frame(head)
}

// body makes b read the body of the answer h from br.
func (h *respHead) body(b *msgBody, br *bufio.Reader) { b.reset(&h.msgHead, h.framing, h.length, br) }

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
			var err error
			if cl, length, err = contentLength(cl, f.value, length); err != nil {
				return fmt.Errorf("%w: %w", errMalformed, err)
			}
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
