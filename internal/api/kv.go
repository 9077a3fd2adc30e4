package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

func toKV(kv *mvccpb.KeyValue) wire.KV {
	out := wire.KV{Key: keys.FromUserKey(string(kv.Key)), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}
	if utf8.Valid(kv.Value) {
		out.Value = string(kv.Value)
	} else {
		out.ValueBase64 = base64.StdEncoding.EncodeToString(kv.Value)
	}
	return out
}

func (s *Server) readInfo(stale bool, rev int64) wire.ReadInfo {
	if !stale {
		return wire.ReadInfo{Consistency: "linearizable", Revision: rev}
	}
	return wire.ReadInfo{Consistency: "stale", Revision: rev, LastContactMs: s.lastContactMs()}
}

func (s *Server) kvGet(w http.ResponseWriter, r *http.Request) {
	p := params{r: r}
	prefix := p.bool("prefix")
	key := p.key(prefix)
	stale := p.stale()
	keysOnly := p.bool("keys")
	limit := p.count("limit", 0)
	if !p.check(w) {
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	var opts []clientv3.OpOption
	if stale {
		opts = append(opts, clientv3.WithSerializable())
	}
	if prefix {
		opts = append(opts, clientv3.WithPrefix(), clientv3.WithLimit(limit))
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
	}
	var resp *clientv3.GetResponse
	err := s.retry(ctx, anyFailure, func(ctx context.Context) (err error) {
		resp, err = s.st.Client().Get(ctx, keys.UserKey(key), opts...)
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	info := s.readInfo(stale, resp.Header.Revision)
	if prefix {
		out := wire.ListResult{ReadInfo: info, Items: make([]wire.KV, 0, len(resp.Kvs)), Count: resp.Count, More: resp.More}
		for _, kv := range resp.Kvs {
			out.Items = append(out.Items, toKV(kv))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if len(resp.Kvs) == 0 {
		writeJSON(w, http.StatusNotFound, struct {
			Error string `json:"error"`
			wire.ReadInfo
		}{fmt.Sprintf("key %q not found", key), info})
		return
	}
	writeJSON(w, http.StatusOK, wire.GetResult{ReadInfo: info, KV: toKV(resp.Kvs[0])})
}

func (s *Server) kvPut(w http.ResponseWriter, r *http.Request) {
	p := params{r: r}
	key := p.key(false)
	cas, hasCAS := p.rev("cas")
	idem := p.idempotency()
	if !p.check(w) {
		return
	}
	value, err := io.ReadAll(io.LimitReader(r.Body, MaxValueBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read value: "+err.Error())
		return
	}
	if len(value) > MaxValueBytes {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("value is over the limit of %d bytes (1 MiB); store large data elsewhere and keep a reference here", MaxValueBytes))
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	sk := keys.UserKey(key)
	kw := kvWrite{key: key, op: clientv3.OpPut(sk, string(value)), hasCAS: hasCAS, cas: cas, idem: idem,
		method: r.Method, value: value,
		result: func(resp *clientv3.TxnResponse) wire.WriteResult {
			return wire.WriteResult{Key: key, Revision: resp.Header.Revision}
		}}
	if idem != "" {
		s.idempotentWrite(w, r, ctx, kw)
		return
	}
	c := s.st.Client()
	if !hasCAS {
		var resp *clientv3.PutResponse
		err := s.retry(ctx, notApplied, func(ctx context.Context) (err error) {
			resp, err = c.Put(ctx, sk, string(value))
			return err
		})
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, wire.WriteResult{Key: key, Revision: resp.Header.Revision})
		return
	}
	s.compareAndSet(w, r, ctx, kw)
}

// compareAndSet runs op if key is at mod revision cas and answers with
// result, or 409 with the key's current revision. It is repeated only when
// the store proves an attempt was not applied (a repeat of an attempt that
// did commit would report a false conflict), and, like every write, cut
// short when the store leader changes: a proposal forwarded to a leader
// that died, or that was handing over, is dropped without an answer.
func (s *Server) compareAndSet(w http.ResponseWriter, r *http.Request, ctx context.Context, kw kvWrite) {
	sk := keys.UserKey(kw.key)
	var resp *clientv3.TxnResponse
	err := s.retry(ctx, notApplied, func(ctx context.Context) (err error) {
		resp, err = s.st.Client().Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(sk), "=", kw.cas)).
			Then(kw.op).Else(clientv3.OpGet(sk, clientv3.WithKeysOnly())).Commit()
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !resp.Succeeded {
		casFailed(w, kw.key, kw.cas, resp.Responses[0].GetResponseRange().Kvs)
		return
	}
	writeJSON(w, http.StatusOK, kw.result(resp))
}

// casFailed answers a compare-and-set whose condition did not hold; kvs is
// the key as the transaction found it.
func casFailed(w http.ResponseWriter, key string, want int64, kvs []*mvccpb.KeyValue) {
	cur := int64(0)
	if len(kvs) > 0 {
		cur = kvs[0].ModRevision
	}
	msg := fmt.Sprintf("compare-and-set failed: key %q is at mod_revision %d, not %d; read it again and retry", key, cur, want)
	if cur == 0 {
		msg = fmt.Sprintf("compare-and-set failed: key %q does not exist (cas=%d); use cas=0 to create it", key, want)
	}
	writeJSON(w, http.StatusConflict, wire.Error{Error: msg, ModRevision: &cur})
}

func (s *Server) kvDelete(w http.ResponseWriter, r *http.Request) {
	p := params{r: r}
	prefix := p.bool("prefix")
	key := p.key(false)
	if prefix {
		p.allowKey(key, true)
	}
	cas, hasCAS := p.rev("cas")
	idem := p.idempotency()
	if hasCAS && prefix {
		p.fail("cas and prefix cannot be combined: compare-and-set works on one key")
	}
	if !p.check(w) {
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	sk := keys.UserKey(key)
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	kw := kvWrite{key: key, op: clientv3.OpDelete(sk, opts...), hasCAS: hasCAS, cas: cas, idem: idem,
		method: r.Method, prefix: prefix,
		result: func(resp *clientv3.TxnResponse) wire.WriteResult {
			return wire.WriteResult{Key: key, Revision: resp.Header.Revision, Deleted: resp.Responses[0].GetResponseDeleteRange().Deleted}
		}}
	if idem != "" {
		s.idempotentWrite(w, r, ctx, kw)
		return
	}
	c := s.st.Client()
	if !hasCAS {
		var resp *clientv3.DeleteResponse
		err := s.retry(ctx, notApplied, func(ctx context.Context) (err error) {
			resp, err = c.Delete(ctx, sk, opts...)
			return err
		})
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, wire.WriteResult{Key: key, Revision: resp.Header.Revision, Deleted: resp.Deleted})
		return
	}
	s.compareAndSet(w, r, ctx, kw)
}

// kvWatch streams changes as JSON lines from rev= (default: now). A client
// resumes after a broken stream by asking again from its last revision + 1.
func (s *Server) kvWatch(w http.ResponseWriter, r *http.Request) {
	p := params{r: r}
	prefix := p.bool("prefix")
	key := p.key(prefix)
	rev, _ := p.rev("rev")
	if !p.check(w) {
		return
	}
	s.stream(w, r, keys.UserKey(key), prefix, rev, func(ev *clientv3.Event) any {
		kv := toKV(ev.Kv)
		typ := "put"
		if ev.Type == mvccpb.DELETE {
			typ = "delete"
		}
		return wire.WatchEvent{Type: typ, Revision: ev.Kv.ModRevision, KV: &kv}
	})
}

// stream runs a store watch and writes one JSON line per event, plus an
// empty heartbeat line every 10 s so dead connections are noticed.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key string, prefix bool, rev int64, line func(*clientv3.Event) any) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming not supported")
		return
	}
	opts := []clientv3.OpOption{}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	ctx := clientv3.WithRequireLeader(r.Context())
	wch := s.st.Client().Watch(ctx, key, opts...)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	enc := json.NewEncoder(w)
	hb := time.NewTicker(10 * time.Second)
	defer hb.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-hb.C:
			_, _ = w.Write([]byte("\n"))
			fl.Flush()
		case wr, ok := <-wch:
			if !ok {
				return
			}
			if err := wr.Err(); err != nil {
				ev := wire.WatchEvent{Type: "error", Error: err.Error(), CompactRevision: wr.CompactRevision}
				if errors.Is(err, rpctypes.ErrCompacted) || wr.CompactRevision != 0 {
					ev.Error = fmt.Sprintf("revision %d is compacted; resume from %d (history before it is gone)", rev, wr.CompactRevision)
				} else if store.IsUnavailable(err) {
					ev.Error = s.st.Unavailable(err).Error()
				}
				_ = enc.Encode(ev)
				fl.Flush()
				return
			}
			for _, e := range wr.Events {
				if err := enc.Encode(line(e)); err != nil {
					return
				}
			}
			fl.Flush()
		}
	}
}
