package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemhq/tandem/internal/store"
)

// retry runs op until it succeeds, fails for a reason other than the store
// being unavailable, or ctx ends. Each attempt is bounded by the attempt
// timeout and, on a voter, cut short when the store leader changes: a
// proposal forwarded to a leader that died is lost, and waiting out the
// whole request timeout for it would turn a sub-second election into a
// multi-second outage.
//
// Only operations that are safe to repeat may go through retry: reads, and
// plain puts and deletes (a repeat leaves the same final value, though a put
// that had committed and is repeated makes a second revision and watch event).
// Compare-and-set runs once, because a repeat of an attempt that did commit
// would report a false conflict.
func (s *Server) retry(ctx context.Context, op func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, s.attemptTimeout)
		stop := s.cancelOnLeaderChange(actx, cancel)
		err := op(actx)
		stop()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// The request's own deadline (or the client) ended it: report
			// that, not an attempt cut short by a leader change.
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		}
		if !store.IsUnavailable(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cancelOnLeaderChange calls cancel if this node's store member sees the
// leader change before ctx ends. The returned func stops watching.
func (s *Server) cancelOnLeaderChange(ctx context.Context, cancel context.CancelFunc) func() {
	m := s.st.Member()
	if m == nil {
		return func() {}
	}
	changed := m.Etcd.Server.LeaderChangedNotify()
	done := make(chan struct{})
	go func() {
		select {
		case <-changed:
			cancel()
		case <-ctx.Done():
		case <-done:
		}
	}()
	return func() { close(done) }
}
