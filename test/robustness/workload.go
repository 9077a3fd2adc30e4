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
		cl := client.New(addrs)
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
				r.Output, r.Failed = Apply(cl, in, w.Timeout)
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

// Apply sends one operation and classifies the answer. A 404 on a get and a
// 409 on a put-if-absent or a cas are definite answers. A write that reached no node
// (every connection was refused: see notSent) failed like a read: it had no
// effect. Any other error makes a write Unknown (it may have been applied)
// and a read failed (it had no effect).
// The operation is not bound to a caller's context: it is always given its
// whole time, so a write is never cut short by the end of a run.
func Apply(cl *client.Client, in Input, timeout time.Duration) (out Output, failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	defer cancel()
	wo := client.WriteOptions{Timeout: timeout}
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
			return Output{Revision: res.Revision}, false
		case notSent(perr):
			return Output{}, true
		}
	case PutIfAbsent, CompareAndSet:
		rev := in.Rev // 0 for put-if-absent
		wo.CAS = &rev
		res, perr := cl.Put(ctx, in.Key, []byte(in.Value), wo)
		switch {
		case perr == nil:
			return Output{OK: true, Revision: res.Revision}, false
		case client.IsStatus(perr, 409):
			return Output{}, false
		case notSent(perr):
			return Output{}, true
		}
	case Delete:
		res, derr := cl.Delete(ctx, in.Key, wo)
		switch {
		case derr == nil:
			return Output{Deleted: res.Deleted, Revision: res.Revision}, false
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
