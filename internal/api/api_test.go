package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/api"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestBadInput sends each kind of bad request to a real node and checks it
// gets a 400 naming the problem, and that nothing was written.
func TestBadInput(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	base := c.Nodes[0].URL("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := c.Client().List(ctx, "", true, client.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}

	longKey := strings.Repeat("k", api.MaxKeyBytes+1)
	bigValue := strings.Repeat("v", api.MaxValueBytes+1)
	tests := []struct {
		name, method, path, body, want string
	}{
		{"empty key put", "PUT", "/v1/kv/", "x", "empty key"},
		{"empty key get", "GET", "/v1/kv/", "", "empty key"},
		{"empty key delete", "DELETE", "/v1/kv/", "", "empty key"},
		{"key over 1 KiB", "PUT", "/v1/kv/" + longKey, "x", "limit is 1024"},
		{"key over 1 KiB get", "GET", "/v1/kv/" + longKey, "", "limit is 1024"},
		{"value over 1 MiB", "PUT", "/v1/kv/big", bigValue, "1 MiB"},
		{"malformed cas revision", "PUT", "/v1/kv/a?cas=abc", "x", "cas \"abc\""},
		{"negative cas revision", "PUT", "/v1/kv/a?cas=-1", "x", "cas \"-1\""},
		{"malformed cas on delete", "DELETE", "/v1/kv/a?cas=1.5", "", "cas \"1.5\""},
		{"malformed watch revision", "GET", "/v1/watch/a?rev=yesterday", "", "rev \"yesterday\""},
		{"unknown consistency", "GET", "/v1/kv/a?consistency=eventual", "", "consistency \"eventual\""},
		{"bad timeout", "PUT", "/v1/kv/a?timeout=soon", "x", "timeout \"soon\""},
		{"timeout too long", "GET", "/v1/kv/a?timeout=1h", "", "timeout \"1h\""},
		{"bad prefix flag", "GET", "/v1/kv/a?prefix=maybe", "", "prefix \"maybe\""},
		{"cas with prefix delete", "DELETE", "/v1/kv/a?prefix=true&cas=1", "", "cannot be combined"},
		{"bad limit", "GET", "/v1/kv/a?prefix=true&limit=-2", "", "limit \"-2\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.HTTP().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", resp.StatusCode, body)
			}
			var e wire.Error
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body is not JSON: %s", body)
			}
			if !strings.Contains(e.Error, tt.want) {
				t.Fatalf("error %q does not say %q", e.Error, tt.want)
			}
		})
	}

	after, err := c.Client().List(ctx, "", true, client.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != before.Count {
		t.Fatalf("bad requests wrote keys: %d before, %d after", before.Count, after.Count)
	}
}

// TestCompareAndSet checks cas semantics: 0 creates only, a stale revision
// is refused with the current one, the right revision wins.
func TestCompareAndSet(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := int64(0)
	created, err := cl.Put(ctx, "cas/k", []byte("v1"), client.WriteOptions{CAS: &zero})
	if err != nil {
		t.Fatalf("create with cas=0: %v", err)
	}
	if _, err := cl.Put(ctx, "cas/k", []byte("again"), client.WriteOptions{CAS: &zero}); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("cas=0 on an existing key: want 409, got %v", err)
	}
	stale := created.Revision - 1
	_, err = cl.Put(ctx, "cas/k", []byte("v2"), client.WriteOptions{CAS: &stale})
	var ce *client.Error
	if !client.IsStatus(err, http.StatusConflict) || !asError(err, &ce) || ce.Body.ModRevision == nil || *ce.Body.ModRevision != created.Revision {
		t.Fatalf("stale cas: want 409 with mod_revision %d, got %v", created.Revision, err)
	}
	if _, err := cl.Put(ctx, "cas/k", []byte("v2"), client.WriteOptions{CAS: &created.Revision}); err != nil {
		t.Fatalf("cas with the current revision: %v", err)
	}
	got, err := cl.Get(ctx, "cas/k", client.ReadOptions{})
	if err != nil || got.Value != "v2" {
		t.Fatalf("after cas: %v %+v", err, got)
	}
	if _, err := cl.Delete(ctx, "cas/k", client.WriteOptions{CAS: &created.Revision}); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("delete with a stale cas: want 409, got %v", err)
	}
	if _, err := cl.Delete(ctx, "cas/k", client.WriteOptions{CAS: &got.ModRevision}); err != nil {
		t.Fatalf("delete with the current cas: %v", err)
	}
	if _, err := cl.Get(ctx, "cas/k", client.ReadOptions{}); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("after delete: want 404, got %v", err)
	}
}

func asError(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestIdempotentWrites checks that a write sent again with the same
// Idempotency-Key is answered with the first write's revision and changes
// nothing, that the key cannot be reused for another request, that a
// refused compare-and-set leaves the key free, and that a lease the records
// lived on, revoked by hand, is replaced.
func TestIdempotentWrites(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	put := func(key, value, id string, cas *int64) (*wire.WriteResult, error) {
		return cl.Put(ctx, key, []byte(value), client.WriteOptions{RequestID: id, CAS: cas})
	}
	value := func(key string) string {
		t.Helper()
		got, err := cl.Get(ctx, key, client.ReadOptions{})
		if client.IsStatus(err, http.StatusNotFound) {
			return "<absent>"
		}
		if err != nil {
			t.Fatal(err)
		}
		return got.Value
	}

	first, err := put("idem/k", "v1", "req-A", nil)
	if err != nil || first.Replayed {
		t.Fatalf("first write: %v %+v", err, first)
	}
	if _, err := put("idem/k", "v2", "", nil); err != nil {
		t.Fatal(err)
	}
	again, err := put("idem/k", "v1", "req-A", nil)
	if err != nil || !again.Replayed || again.Revision != first.Revision {
		t.Fatalf("repeat: want the first write's revision %d, replayed; got %v %+v", first.Revision, err, again)
	}
	if v := value("idem/k"); v != "v2" {
		t.Fatalf("the repeat was applied again: value %q, want v2", v)
	}
	if _, err := put("idem/k", "other", "req-A", nil); !client.IsStatus(err, http.StatusUnprocessableEntity) || !strings.Contains(err.Error(), "already used for another request") {
		t.Fatalf("the key reused for another value: want 422, got %v", err)
	}

	// Compare-and-set: a repeat is not a false conflict, and a refusal is
	// recorded, so it stays the answer.
	cur, err := cl.Get(ctx, "idem/k", client.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	casOK, err := put("idem/k", "v3", "req-B", &cur.ModRevision)
	if err != nil {
		t.Fatalf("cas: %v", err)
	}
	if again, err := put("idem/k", "v3", "req-B", &cur.ModRevision); err != nil || !again.Replayed || again.Revision != casOK.Revision {
		t.Fatalf("cas repeat: want revision %d replayed, got %v %+v", casOK.Revision, err, again)
	}
	stale := casOK.Revision - 1
	if _, err := put("idem/k", "v4", "req-C", &stale); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("stale cas: want 409, got %v", err)
	}
	if _, err := put("idem/k", "v4", "req-C", &stale); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("stale cas again: want 409, got %v", err)
	}
	// A refused put-if-absent repeated after the key is gone is still
	// refused: an attempt that was refused (or one still on its way to the
	// leader) may not apply after the client was told it had not.
	zero := int64(0)
	if _, err := put("idem/k", "late", "req-F", &zero); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("put-if-absent on an existing key: want 409, got %v", err)
	}
	if _, err := cl.Delete(ctx, "idem/k", client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := put("idem/k", "late", "req-F", &zero); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("the refused put-if-absent repeated after the key was deleted: want 409 again, got %v", err)
	}
	if v := value("idem/k"); v != "<absent>" {
		t.Fatalf("a refused write applied on its repeat: value %q", v)
	}
	if _, err := put("idem/k", "v3", "", nil); err != nil {
		t.Fatal(err)
	}

	// Delete: a repeat after the key was written again leaves it alone.
	del, err := cl.Delete(ctx, "idem/k", client.WriteOptions{RequestID: "req-D"})
	if err != nil || del.Deleted != 1 {
		t.Fatalf("delete: %v %+v", err, del)
	}
	if _, err := put("idem/k", "v5", "", nil); err != nil {
		t.Fatal(err)
	}
	if again, err := cl.Delete(ctx, "idem/k", client.WriteOptions{RequestID: "req-D"}); err != nil || !again.Replayed || again.Revision != del.Revision {
		t.Fatalf("delete repeat: want revision %d replayed, got %v %+v", del.Revision, err, again)
	}
	if v := value("idem/k"); v != "v5" {
		t.Fatalf("the repeated delete was applied again: value %q, want v5", v)
	}

	// Bad keys are refused before anything is written.
	for _, id := range []string{"has space", strings.Repeat("x", 129), "a/b"} {
		if _, err := put("idem/bad", "v", id, nil); !client.IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "Idempotency-Key") {
			t.Fatalf("key %q: want 400 naming Idempotency-Key, got %v", id, err)
		}
	}
	if v := value("idem/bad"); v != "<absent>" {
		t.Fatalf("a refused request wrote %q", v)
	}

	// The records' lease revoked by hand: the next write takes a new one.
	sc, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Nodes[0].StoreURL()}, TLS: c.Nodes[0].StoreTLS(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec, err := sc.Get(ctx, keys.IdempotencyKey("req-B"))
	if err != nil || len(rec.Kvs) != 1 || rec.Kvs[0].Lease == 0 {
		t.Fatalf("record of req-B: want one key on a lease, got %v %+v", err, rec)
	}
	if _, err := sc.Revoke(ctx, clientv3.LeaseID(rec.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if again, err := put("idem/k", "v1", "req-A", nil); err != nil || again.Replayed {
		t.Fatalf("req-A after its record's lease was revoked: want a fresh write, got %v %+v", err, again)
	}
	if _, err := put("idem/k", "v6", "req-E", nil); err != nil {
		t.Fatalf("a write after the lease was revoked: %v", err)
	}
}
