package system

import "github.com/tandemhq/tandem/internal/api"

type apiWatchEvent = api.WatchEvent
