package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/tandemhq/tandem/internal/client"
)

// Workload is a set of clients doing random get, put, delete and
// put-if-absent on a few keys, each with one operation outstanding.
type Workload struct {
	// Addrs are the nodes' API addresses. Client i starts at Addrs[i mod n]
	// and fails over to the others in order.
	Addrs []string
	// Clients is the number of concurrent clients; default 6.
	Clients int
	// Keys is the number of keys; default 5. Few keys make clients collide.
	Keys int
	// Timeout is the server-side request timeout (timeout=); default 1s. The
	// client waits one second longer, so a node that is up answers 503
	// before the client gives up.
	Timeout time.Duration
	// Seed makes the choice of operations reproducible; 0 picks one.
	Seed uint64
	// IdempotentClients is how many of the clients (the first ones) send
	// each write with its own Idempotency-Key and, when its outcome is
	// unknown, send it again with the same key until it is answered or
	// RepeatFor has passed. The history records one operation from the
	// first call to the last return; if the cluster applied a repeat
	// twice, a reader could see the value, another write's, then the value
	// again, and the checker would find it.
	IdempotentClients int
	// RepeatFor bounds the repeats of one idempotent write; default 5s.
	RepeatFor time.Duration
	// Client makes the client of a list of nodes (default: client.New,
	// for an insecure cluster; a secure one passes its credentials).
	Client func(addrs []string) *client.Client
}

func (w Workload) withDefaults() Workload {
	if w.Clients == 0 {
		w.Clients = 6
	}
	if w.Keys == 0 {
		w.Keys = 5
	}
	if w.Timeout == 0 {
		w.Timeout = time.Second
	}
	if w.Seed == 0 {
		w.Seed = rand.Uint64()
	}
	if w.RepeatFor == 0 {
		w.RepeatFor = 5 * time.Second
	}
	if w.Client == nil {
		w.Client = client.New
	}
	return w
}

// KeyNames returns the keys the workload uses.
func (w Workload) KeyNames() []string {
	w = w.withDefaults()
	keys := make([]string, w.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("robustness/k%d", i)
	}
	return keys
}

// Run runs the clients until ctx ends, recording into h. It returns when
// every client has finished its last operation.
func (w Workload) Run(ctx context.Context, h *History) error {
	w = w.withDefaults()
	if len(w.Addrs) == 0 {
		return errors.New("workload: no node address")
	}
	keys := w.KeyNames()
	var wg sync.WaitGroup
	for i := range w.Clients {
		addrs := append(append([]string(nil), w.Addrs[i%len(w.Addrs):]...), w.Addrs[:i%len(w.Addrs)]...)
		cl := w.Client(addrs)
		rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
		wg.Go(func() {
			id := h.NewClient()
			// What this client last saw of each key: the value and its
			// mod revision, for compare-and-set.
			type seen struct {
				value string
				rev   int64
			}
			last := map[string]seen{}
			for seq := 0; ctx.Err() == nil; seq++ {
				in := Input{Key: keys[rng.IntN(len(keys))], Value: fmt.Sprintf("c%d-%d", i, seq)}
				switch p := rng.IntN(100); {
				case p < 35:
					in.Kind, in.Value = Get, ""
				case p < 55:
					in.Kind = Put
				case p < 70:
					in.Kind, in.Value = Delete, ""
				case p < 82:
					in.Kind = PutIfAbsent
				default:
					in.Kind = CompareAndSet
					sn, ok := last[in.Key]
					if !ok {
						in.Kind, in.Value = Get, "" // nothing to compare with yet
					}
					in.Rev, in.Expect = sn.rev, sn.value
				}
				r := Record{Client: id, Input: in, Call: h.Now()}
				if i < w.IdempotentClients && in.Kind != Get {
					r.Output, r.Failed = applyRepeating(cl, in, w.Timeout, fmt.Sprintf("rb-%d-%d-%d", w.Seed, i, seq), w.RepeatFor)
				} else {
					r.Output, r.Failed = Apply(cl, in, w.Timeout, "")
				}
				r.Return = h.Now()
				h.Add(r)
				switch {
				case r.Failed || r.Output.Unknown:
				case in.Kind == Get && r.Output.Found:
					last[in.Key] = seen{r.Output.Value, r.Output.Revision}
				case in.Kind == Get, in.Kind == Delete:
					delete(last, in.Key)
				case in.Kind == Put, r.Output.OK:
					last[in.Key] = seen{in.Value, r.Output.Revision}
				default: // a refused put-if-absent or cas: what it saw is stale
					delete(last, in.Key)
				}
				if r.Output.Unknown {
					id = h.NewClient()
				}
				if r.Failed {
					// No node answered (all down, or the one tried is
					// frozen): back off a little rather than spin.
					time.Sleep(failedPause)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// failedPause is how long a client waits after an operation that failed.
const failedPause = 50 * time.Millisecond

// applyRepeating sends a write with idempotency key id and sends it again,
// with the same key, while its outcome is unknown or no node was reached,
// for up to repeatFor.
func applyRepeating(cl *client.Client, in Input, timeout time.Duration, id string, repeatFor time.Duration) (out Output, failed bool) {
	deadline := time.Now().Add(repeatFor)
	sent := false // some attempt may have reached a node
	for {
		out, failed = Apply(cl, in, timeout, id)
		sent = sent || !failed
		if (!out.Unknown && !failed) || time.Now().After(deadline) {
			break
		}
		time.Sleep(failedPause)
	}
	if failed && sent {
		// An earlier attempt may have been applied: its outcome is
		// unknown, not failed.
		return Output{Unknown: true}, false
	}
	return out, failed
}

// Apply sends one operation and classifies the answer. A 404 on a get and a
// 409 on a put-if-absent or a cas are definite answers. A write that reached no node
// (every connection was refused: see notSent) failed like a read: it had no
// effect. Any other error makes a write Unknown (it may have been applied)
// and a read failed (it had no effect).
// The operation is not bound to a caller's context: it is always given its
// whole time, so a write is never cut short by the end of a run.
//
// requestID, if set, is sent as the write's Idempotency-Key.
func Apply(cl *client.Client, in Input, timeout time.Duration, requestID string) (out Output, failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	defer cancel()
	wo := client.WriteOptions{Timeout: timeout, RequestID: requestID}
	switch in.Kind {
	case Get:
		res, gerr := cl.Get(ctx, in.Key, client.ReadOptions{Timeout: timeout})
		switch {
		case gerr == nil:
			return Output{Found: true, Value: res.Value, Revision: res.ModRevision}, false
		case client.IsStatus(gerr, 404):
			return Output{}, false
		default:
			return Output{}, true
		}
	case Put:
		res, perr := cl.Put(ctx, in.Key, []byte(in.Value), wo)
		switch {
		case perr == nil:
			return Output{Revision: res.Revision, Replayed: res.Replayed}, false
		case notSent(perr):
			return Output{}, true
		}
	case PutIfAbsent, CompareAndSet:
		rev := in.Rev // 0 for put-if-absent
		wo.CAS = &rev
		res, perr := cl.Put(ctx, in.Key, []byte(in.Value), wo)
		switch {
		case perr == nil:
			return Output{OK: true, Revision: res.Revision, Replayed: res.Replayed}, false
		case client.IsStatus(perr, 409):
			return Output{}, false
		case notSent(perr):
			return Output{}, true
		}
	case Delete:
		res, derr := cl.Delete(ctx, in.Key, wo)
		switch {
		case derr == nil:
			return Output{Deleted: res.Deleted, Revision: res.Revision, Replayed: res.Replayed}, false
		case notSent(derr):
			return Output{}, true
		}
	default:
		panic(fmt.Sprintf("robustness: unknown operation %q", in.Kind))
	}
	return Output{Unknown: true}, false
}

// notSent reports whether err says the client reached no node: it tried
// every address and each connection attempt failed (a dial error, such as
// connection refused). The client sends a write to the next address only
// when the connection to the last was never made, so such a write was sent
// nowhere. Without this, a cluster with every node down would fill the
// history with thousands of unknown-outcome writes that cannot have been
// applied, and the checker would have to place each of them.
func notSent(err error) bool {
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return false
	}
	errs := joined.Unwrap()
	if len(errs) == 0 {
		return false
	}
	for _, e := range errs {
		var op *net.OpError
		if !errors.As(e, &op) || op.Op != "dial" {
			return false
		}
	}
	return true
}
