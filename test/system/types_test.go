package system

import (
	"github.com/tandemhq/tandem/internal/wire"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

type apiWatchEvent = wire.WatchEvent

func mvccRangeOptions() mvcc.RangeOptions { return mvcc.RangeOptions{} }
