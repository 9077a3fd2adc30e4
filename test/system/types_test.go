package system

import (
	"go.etcd.io/etcd/server/v3/storage/mvcc"

	"github.com/tandemhq/tandem/internal/api"
)

type apiWatchEvent = api.WatchEvent

func mvccRangeOptions() mvcc.RangeOptions { return mvcc.RangeOptions{} }
