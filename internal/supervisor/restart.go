package supervisor

import (
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// RestartPolicy says how the supervisor restarts a task whose process ended
// without being asked to. The zero value means the defaults.
type RestartPolicy struct {
	// Delay is the wait before the first restart, randomised by ±20%;
	// zero means 500 ms.
	Delay time.Duration
	// MaxDelay caps the wait, which doubles at each restart in a row;
	// zero means 30 s.
	MaxDelay time.Duration
	// StableAfter is how long a process must run for its end not to count
	// as part of a crash loop: the wait goes back to Delay and the earlier
	// failures are forgotten. Zero means 10 s.
	StableAfter time.Duration
	// MaxFailures ends within Window make the supervisor give the task up
	// (EventFailed) instead of restarting it again; zero means 5.
	MaxFailures int
	// Window is the span over which failures are counted; zero means 1 min.
	Window time.Duration
}

func (p RestartPolicy) withDefaults() RestartPolicy {
	if p.Delay == 0 {
		p.Delay = 500 * time.Millisecond
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = 30 * time.Second
	}
	if p.StableAfter == 0 {
		p.StableAfter = 10 * time.Second
	}
	if p.MaxFailures == 0 {
		p.MaxFailures = 5
	}
	if p.Window == 0 {
		p.Window = time.Minute
	}
	return p
}

// forTask is p with the task's own restart delays, where it gives them.
// A first delay above the policy's cap raises the cap to it.
func (p RestartPolicy) forTask(t Task) RestartPolicy {
	if t.RestartDelay > 0 {
		p.Delay = t.RestartDelay
	}
	if t.RestartMaxDelay > 0 {
		p.MaxDelay = t.RestartMaxDelay
	}
	p.MaxDelay = max(p.MaxDelay, p.Delay)
	return p
}

// Validate reports a policy that cannot work.
func (p RestartPolicy) Validate() error {
	p = p.withDefaults()
	switch {
	case p.Delay < 0 || p.MaxDelay < 0 || p.StableAfter < 0 || p.Window < 0 || p.MaxFailures < 0:
		return fmt.Errorf("restart policy: durations and max failures must not be negative")
	case p.MaxDelay < p.Delay:
		return fmt.Errorf("restart policy: max delay %s is below the first delay %s", p.MaxDelay, p.Delay)
	}
	return nil
}

// restarts is one task's crash history. It is pure: time comes in as
// arguments.
type restarts struct {
	p        RestartPolicy
	bo       *backoff.ExponentialBackOff
	failures []time.Time // ends within the window, oldest first
	count    int         // restarts so far
}

func newRestarts(p RestartPolicy) *restarts {
	p = p.withDefaults()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = p.Delay
	bo.MaxInterval = p.MaxDelay
	bo.Multiplier = 2
	bo.RandomizationFactor = 0.2
	return &restarts{p: p, bo: bo}
}

// next records a run from started to ended (a failed start has
// started == ended) and returns how long to wait before the next start, or
// giveUp once MaxFailures runs ended within Window.
func (r *restarts) next(started, ended time.Time) (delay time.Duration, giveUp bool) {
	if ended.Sub(started) >= r.p.StableAfter {
		r.bo.Reset()
		r.failures = r.failures[:0]
	}
	r.failures = append(r.failures, ended)
	cut := 0
	for cut < len(r.failures) && ended.Sub(r.failures[cut]) > r.p.Window {
		cut++
	}
	r.failures = r.failures[cut:]
	if len(r.failures) >= r.p.MaxFailures {
		return 0, true
	}
	r.count++
	return r.bo.NextBackOff(), false
}
