package system

import "github.com/tandemhq/tandem/internal/wire"

type apiWatchEvent = wire.WatchEvent
