package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxEvents bounds the event history; autopilot trims older entries.
const MaxEvents = 1000

// RecordEvent appends e to the history. Keys sort by time.
func RecordEvent(ctx context.Context, c *clientv3.Client, e wire.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b, _ := json.Marshal(e)
	key := fmt.Sprintf("%s%020d-%s", keys.EventsPrefix, e.Time.UnixNano(), e.Node)
	_, err := c.Put(ctx, key, string(b))
	return err
}

// TrimEvents deletes all but the newest MaxEvents events.
func TrimEvents(ctx context.Context, c *clientv3.Client) error {
	resp, err := c.Get(ctx, keys.EventsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	extra := resp.Count - MaxEvents
	if extra <= 0 {
		return nil
	}
	old, err := c.Get(ctx, keys.EventsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(extra))
	if err != nil {
		return err
	}
	for _, kv := range old.Kvs {
		if _, err := c.Delete(ctx, string(kv.Key)); err != nil {
			return err
		}
	}
	return nil
}
