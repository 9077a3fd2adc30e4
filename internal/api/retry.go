package api

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/tandemhq/tandem/internal/store"
)

// Retry modes.
const (
	// anyFailure: the operation has no effect (a read); repeat it after any
	// failure that means the store was unavailable.
	anyFailure = iota
	// notApplied: the operation writes; repeat it only after a failure that
	// proves it was not applied (no leader, proposal dropped). A write whose
	// attempt timed out, or was cut short by a leader change, may have been
	// applied, and applying it twice could let a reader see its value, then
	// another write's, then its value again: not linearizable.
	notApplied
)

// retry runs op until it succeeds, fails for a reason mode does not allow to
// repeat, or ctx ends. Each attempt is bounded by the attempt timeout and,
// on a voter, cut short when the store leader changes: a read sent to a
// leader that died would otherwise wait out the whole request timeout and
// turn a sub-second election into a multi-second outage.
//
// Pauses between attempts grow from 5 ms to at most 50 ms, with jitter, so
// a request repeated while the store has no leader goes through within
// about 50 ms of the new leader's election.
func (s *Server) retry(ctx context.Context, mode int, op func(ctx context.Context) error) error {
	b := &backoff.ExponentialBackOff{InitialInterval: 5 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 50 * time.Millisecond}
	b.Reset()
	for {
		actx, cancel := context.WithTimeout(ctx, s.attemptTimeout)
		var changed atomic.Bool
		stop := s.cancelOnLeaderChange(actx, func() { changed.Store(true); cancel() })
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
		if changed.Load() {
			err = fmt.Errorf("%w: %w", store.ErrLeaderChanged, err)
		}
		if !store.IsUnavailable(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if mode == notApplied && !store.NotApplied(err) {
			return err
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-t.C:
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
