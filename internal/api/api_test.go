package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/api"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestBadInput sends each kind of bad request to a real node and checks it
// gets a 400 naming the problem, and that nothing was written.
func TestBadInput(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	base := "http://" + c.Nodes[0].API
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
			resp, err := http.DefaultClient.Do(req)
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
