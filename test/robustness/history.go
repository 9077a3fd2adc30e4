package robustness

import (
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Record is one operation a client attempted.
type Record struct {
	Client int // porcupine client id; a client gets a new id after an unknown outcome
	Input  Input
	Output Output
	Call   int64 // ns since the history started
	Return int64 // ns since the history started, when the answer (or error) came
	// Failed is set for a read that got no answer, or a write that reached
	// no node (see Apply): it had no effect, so it is kept for the
	// statistics but left out of the checked history.
	Failed bool
}

// History records operations from many goroutines. Timestamps come from
// the monotonic clock, as nanoseconds since NewHistory.
type History struct {
	start time.Time

	mu      sync.Mutex
	clients int
	records []Record
}

// NewHistory starts an empty history; its clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock: nanoseconds since it started.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// NewClient returns a fresh client id. A client whose write has an unknown
// outcome takes a new id, since in the checked history that write never
// returns and one id must not have two operations open.
func (h *History) NewClient() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients++
	return h.clients - 1
}

// Add records an operation.
func (h *History) Add(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
}

// Records returns a copy of every record, failed operations included.
func (h *History) Records() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.records...)
}

// Operations returns the history to check: failed operations are left out and
// every unknown-outcome write returns after the last timestamp of the
// history, so it may take effect at any point after its call, or never.
func (h *History) Operations() []porcupine.Operation {
	recs := h.Records()
	var end int64
	for _, r := range recs {
		end = max(end, r.Call, r.Return)
	}
	ops := make([]porcupine.Operation, 0, len(recs))
	for _, r := range recs {
		if r.Failed {
			continue
		}
		ret := r.Return
		if r.Output.Unknown {
			ret = end + 1
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.Input, Call: r.Call, Output: r.Output, Return: ret})
	}
	return ops
}
