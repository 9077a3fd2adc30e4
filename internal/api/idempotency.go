package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
)

// Idempotent writes. A KV write that carries an Idempotency-Key header is
// committed in one transaction with a record of the key, guarded by the
// record's absence. A repeat of the same request, from the client or from
// the API's own retry after an attempt whose outcome is unknown, finds the
// record and is answered with the first attempt's revision instead of being
// applied again. Records live on a lease: at least IdempotencyWindow, at
// most IdempotencyWindow + idempotencyRotate.

// IdempotencyWindow is how long, at least, a key is remembered.
const IdempotencyWindow = 10 * time.Minute

// idempotencyRotate is how long one lease takes new records before the
// next is granted; a lease lives IdempotencyWindow + idempotencyRotate.
const idempotencyRotate = 5 * time.Minute

// maxIdempotencyKey bounds the header's length.
const maxIdempotencyKey = 128

// idempotencyKey returns the request's key ("" if it has none), or an
// error naming what is wrong with it.
func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get(wire.IdempotencyHeader)
	if k == "" {
		return "", nil
	}
	if len(k) > maxIdempotencyKey {
		return "", fmt.Errorf("%s is %d bytes, over the limit of %d", wire.IdempotencyHeader, len(k), maxIdempotencyKey)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return "", fmt.Errorf("%s %q has %q: use letters, digits, '-', '_', '.' and ':' (a UUID fits)", wire.IdempotencyHeader, k, c)
		}
	}
	return k, nil
}

// idempotencyRecord is the stored record of a key's first request.
type idempotencyRecord struct {
	// Request is a digest of what the request asked (method, key, value,
	// conditions): the same key sent with another request is refused.
	Request string    `json:"request"`
	Node    string    `json:"node"`
	At      time.Time `json:"at"`
	// Conflict: the request was a compare-and-set whose condition did not
	// hold, and it was answered 409. Recorded so that the answer is final:
	// an earlier attempt of the same request still on its way to the
	// leader finds the record and changes nothing, instead of applying
	// after the client was told it had not.
	Conflict bool `json:"conflict,omitempty"`
}

// requestDigest identifies what a write asks, for comparing a repeat with
// the request its key was first used for.
func requestDigest(kw kvWrite) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%t\x00%t\x00%d\x00", kw.method, kw.key, kw.cas, kw.hasCAS, kw.prefix, len(kw.value))
	h.Write(kw.value)
	return hex.EncodeToString(h.Sum(nil))
}

// idemLease hands out the lease records are written on, granting a new one
// every idempotencyRotate.
type idemLease struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	granted time.Time
}

func (s *Server) idempotencyLease(ctx context.Context) (clientv3.LeaseID, error) {
	l := &s.idemLease
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.id != 0 && time.Since(l.granted) < idempotencyRotate {
		return l.id, nil
	}
	resp, err := s.st.Client().Grant(ctx, int64((IdempotencyWindow+idempotencyRotate)/time.Second))
	if err != nil {
		return 0, err
	}
	l.id, l.granted = resp.ID, time.Now()
	return l.id, nil
}

// forgetLease drops a lease the store no longer has (revoked by hand, or
// expired while this node was cut off).
func (s *Server) forgetLease(id clientv3.LeaseID) {
	l := &s.idemLease
	l.mu.Lock()
	if l.id == id {
		l.id = 0
	}
	l.mu.Unlock()
}

// kvWrite is one KV write as the API received it.
type kvWrite struct {
	key    string
	op     clientv3.Op
	hasCAS bool
	cas    int64  // with hasCAS: the key's mod revision it is conditional on
	idem   string // the Idempotency-Key, or ""
	// what requestDigest reads: the request's method, value, and prefix=
	method string
	value  []byte
	prefix bool
	result func(*clientv3.TxnResponse) wire.WriteResult
}

// idempotentWrite applies kw at most once for its idempotency key, and
// answers the request.
func (s *Server) idempotentWrite(w http.ResponseWriter, r *http.Request, ctx context.Context, kw kvWrite) {
	sk := keys.UserKey(kw.key)
	rec := keys.IdempotencyKey(kw.idem)
	digest := requestDigest(kw)
	applied, err := json.Marshal(idempotencyRecord{Request: digest, Node: s.cm.Self().Name, At: time.Now().UTC()})
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	refused, err := json.Marshal(idempotencyRecord{Request: digest, Node: s.cm.Self().Name, At: time.Now().UTC(), Conflict: true})
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var resp *clientv3.TxnResponse
	// With the record in the same transaction, repeating an attempt whose
	// outcome is unknown is safe: if it was applied, the repeat finds the
	// record and changes nothing. A refused compare-and-set is recorded
	// too, in a transaction nested under the record's absence.
	err = s.retry(ctx, anyFailure, func(ctx context.Context) error {
		for try := 0; ; try++ {
			lease, err := s.idempotencyLease(ctx)
			if err != nil {
				return err
			}
			record := func(v []byte) clientv3.Op { return clientv3.OpPut(rec, string(v), clientv3.WithLease(lease)) }
			then := []clientv3.Op{kw.op, record(applied)}
			if kw.hasCAS {
				then = []clientv3.Op{clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(sk), "=", kw.cas)},
					then,
					[]clientv3.Op{record(refused), clientv3.OpGet(sk, clientv3.WithKeysOnly())})}
			}
			resp, err = s.st.Client().Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(rec), "=", 0)).
				Then(then...).
				Else(clientv3.OpGet(rec), clientv3.OpGet(sk, clientv3.WithKeysOnly())).Commit()
			if try == 0 && errors.Is(err, rpctypes.ErrLeaseNotFound) {
				// Revoked by hand, or expired while this node was cut
				// off: grant a new one. Nothing was applied.
				s.forgetLease(lease)
				continue
			}
			return err
		}
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !resp.Succeeded { // a record: a repeat
		replay(w, kw, digest, resp.Responses[0].GetResponseRange().Kvs[0], resp.Responses[1].GetResponseRange().Kvs)
		return
	}
	if kw.hasCAS {
		nested := resp.Responses[0].GetResponseTxn()
		if !nested.Succeeded {
			casFailed(w, kw.key, kw.cas, nested.Responses[1].GetResponseRange().Kvs)
			return
		}
		resp = &clientv3.TxnResponse{Header: resp.Header, Succeeded: true, Responses: nested.Responses}
	}
	writeJSON(w, http.StatusOK, kw.result(resp))
}

// replay answers a repeat of a request whose key has a record: with the
// first request's revision if it is the same request, with 409 again if
// that was refused, 422 if it is another request. cur is the key as the
// transaction found it.
func replay(w http.ResponseWriter, kw kvWrite, digest string, kv *mvccpb.KeyValue, cur []*mvccpb.KeyValue) {
	var first idempotencyRecord
	if err := json.Unmarshal(kv.Value, &first); err != nil || first.Request != digest {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf(
			"%s %q was already used for another request (at %s through node %s): use a new key for a new request",
			wire.IdempotencyHeader, kw.idem, first.At.Format(time.RFC3339), first.Node))
		return
	}
	if first.Conflict {
		casFailed(w, kw.key, kw.cas, cur)
		return
	}
	writeJSON(w, http.StatusOK, wire.WriteResult{Key: kw.key, Revision: kv.ModRevision, Replayed: true})
}
