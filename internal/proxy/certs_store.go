package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
)

// storeCerts is the source of the service certificates kept in the store
// (PUT /v1/certs/NAME). Like the node's view it lists once, then watches
// from that revision, and lists again only after a compaction or a broken
// watch.
type storeCerts struct {
	client func() *clientv3.Client
	set    *CertSet
	log    *slog.Logger

	certs  map[string]*tls.Certificate // name -> certificate
	loaded chan struct{}               // closed after the first list
}

func newStoreCerts(client func() *clientv3.Client, set *CertSet, log *slog.Logger) *storeCerts {
	return &storeCerts{client: client, set: set, log: log, loaded: make(chan struct{})}
}

// run follows the store's certificates until ctx ends.
func (s *storeCerts) run(ctx context.Context) {
	b := &backoff.ExponentialBackOff{InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: time.Second}
	b.Reset()
	for ctx.Err() == nil {
		rev, err := s.list(ctx)
		if err != nil {
			s.log.Debug("proxy: listing the store's certificates failed; retrying", "err", err)
			sleepCtx(ctx, b.NextBackOff())
			continue
		}
		b.Reset()
		err = s.watch(ctx, rev+1)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			s.log.Info("proxy: certificate watch history compacted; listing again")
		} else {
			s.log.Debug("proxy: certificate watch ended; listing again", "err", err)
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

func (s *storeCerts) list(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.client().Get(lctx, keys.CertsPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	s.certs = map[string]*tls.Certificate{}
	for _, kv := range resp.Kvs {
		s.apply(mvccpb.PUT, kv)
	}
	s.publish()
	select {
	case <-s.loaded:
	default:
		close(s.loaded)
	}
	return resp.Header.Revision, nil
}

func (s *storeCerts) watch(ctx context.Context, from int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range s.client().Watch(wctx, keys.CertsPrefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			s.apply(ev.Type, ev.Kv)
		}
		if len(wr.Events) > 0 {
			s.publish()
		}
	}
	return errors.New("watch closed")
}

// apply takes in one key's put or delete. A record that does not parse
// (written around the API) is logged and left out.
func (s *storeCerts) apply(typ mvccpb.Event_EventType, kv *mvccpb.KeyValue) {
	name := string(kv.Key[len(keys.CertsPrefix):])
	delete(s.certs, name)
	if typ == mvccpb.DELETE {
		return
	}
	var rec StoredCert
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		s.log.Error("proxy: skipping a certificate of the store", "key", string(kv.Key), "err", err)
		return
	}
	c, err := ParseCert([]byte(rec.Cert), []byte(rec.Key))
	if err != nil {
		s.log.Error("proxy: skipping a certificate of the store", "key", string(kv.Key), "err", err)
		return
	}
	s.certs[name] = c
}

func (s *storeCerts) publish() {
	s.set.Set("store", slices.Collect(maps.Values(s.certs)))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
