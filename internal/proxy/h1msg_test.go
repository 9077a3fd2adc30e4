package proxy

import (
	"bufio"
	"bytes"
	"net/http/httputil"
	"strings"
	"testing"
)

// chunkedWriter writes what httputil's chunked writer writes.
func TestChunkedWriter(t *testing.T) {
	for _, pieces := range [][]string{{}, {"a"}, {"hello", "", strings.Repeat("x", 5000), "end"}} {
		var ours, theirs bytes.Buffer
		bw := bufio.NewWriterSize(&ours, 64)
		w, tw := chunkedWriter{bw}, httputil.NewChunkedWriter(&theirs)
		for _, p := range pieces {
			if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
				t.Fatalf("Write(%d bytes): %d, %v", len(p), n, err)
			}
			tw.Write([]byte(p))
		}
		w.Close()
		tw.Close()
		bw.Flush()
		if ours.String() != theirs.String() {
			t.Errorf("%d pieces: %.80q, httputil's %.80q", len(pieces), ours.String(), theirs.String())
		}
	}
}
