package proxy

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// OutlierPolicy tunes passive outlier detection (registry.OutlierPolicy,
// with durations as time.Duration). Zero fields take their defaults.
type OutlierPolicy struct {
	// ConsecutiveErrors 5xx in a row eject a backend (default 5).
	ConsecutiveErrors int
	// BaseEjection is the first ejection's length; the n-th in a row lasts
	// n × BaseEjection, at most maxEjectionMultiplier × BaseEjection
	// (default 5s).
	BaseEjection time.Duration
	// MaxEjectionPercent of a service's backends at most are kept out by
	// Eligible (default 50; at least one backend may always be ejected).
	MaxEjectionPercent int
}

// Outlier detection defaults.
const (
	DefaultConsecutiveErrors  = 5
	DefaultBaseEjection       = 5 * time.Second
	DefaultMaxEjectionPercent = 50
)

// maxEjectionMultiplier caps how long a backend that keeps failing is
// ejected: at most this many times BaseEjection.
const maxEjectionMultiplier = 10

// withDefaults returns p with its zero (or negative) fields defaulted.
func (p OutlierPolicy) withDefaults() OutlierPolicy {
	if p.ConsecutiveErrors <= 0 {
		p.ConsecutiveErrors = DefaultConsecutiveErrors
	}
	if p.BaseEjection <= 0 {
		p.BaseEjection = DefaultBaseEjection
	}
	if p.MaxEjectionPercent <= 0 {
		p.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	p.MaxEjectionPercent = min(p.MaxEjectionPercent, 100)
	return p
}

// Outcome is how a request to a backend went, as passive outlier
// detection sees it.
type Outcome int

const (
	// Success: the backend answered, with anything but a 5xx. Any outcome
	// other than ConnectFailure and ServerError counts as a success.
	Success Outcome = iota
	// ConnectFailure: no connection could be opened. It ejects at once.
	ConnectFailure
	// ServerError: a 5xx answer, or the connection broke after the request
	// was sent. ConsecutiveErrors of them in a row eject.
	ServerError
)

// outlierState is a backend's passive outlier detection state. The fields
// Eligible reads on every request are atomics; Report updates them under
// mu, which guards only this backend.
type outlierState struct {
	until atomic.Int64 // Unix ns: ejected while now < until (0: never)
	since atomic.Int64 // Unix ns: when the latest ejection started
	quiet atomic.Bool  // no error counted and a multiplier of 0: a success has nothing to do

	mu        sync.Mutex
	errors    int   // consecutive ServerErrors since the last success or ejection
	times     int   // ejection multiplier: ejections in a row, 0..maxEjectionMultiplier
	decayFrom int64 // Unix ns from which healthy time lowers times
}

// Report records the outcome of a request to b at now and reports whether
// it ejected b. Any goroutine may call it; it locks only b's state.
//
//   - ConnectFailure ejects b at once.
//   - ServerError counts toward p.ConsecutiveErrors; the last one ejects.
//   - Any other outcome resets the count.
//
// An ejection lasts BaseEjection × the multiplier, which each ejection
// raises by one, up to maxEjectionMultiplier. Outcomes of requests that
// finish while b is ejected (sent before it, or in panic mode) neither
// count nor eject again. The multiplier decays with healthy time: when a
// success is reported, it drops by one for every full BaseEjection since
// the ejection ended (or since the last drop), so a backend that has been
// healthy for k × BaseEjection starts over k steps lower.
func (b *Backend) Report(p OutlierPolicy, r Outcome, now time.Time) (ejected bool) {
	o := &b.outlier
	if r != ConnectFailure && r != ServerError && o.quiet.Load() {
		return false // the hot path: a success with nothing to reset
	}
	p = p.withDefaults()
	t := now.UnixNano()
	o.mu.Lock()
	defer o.mu.Unlock()
	if t < o.until.Load() {
		return false // already ejected
	}
	switch r {
	case ConnectFailure:
		o.eject(p, t)
		return true
	case ServerError:
		o.errors++
		if o.errors >= p.ConsecutiveErrors {
			o.eject(p, t)
			return true
		}
		o.quiet.Store(false)
		return false
	}
	o.errors = 0
	if o.times > 0 && t >= o.decayFrom {
		steps := (t - o.decayFrom) / int64(p.BaseEjection)
		if steps >= int64(o.times) {
			o.times = 0
		} else {
			o.times -= int(steps)
			o.decayFrom += steps * int64(p.BaseEjection)
		}
	}
	o.quiet.Store(o.times == 0)
	return false
}

// eject starts an ejection at t (Unix ns). o.mu is held.
func (o *outlierState) eject(p OutlierPolicy, t int64) {
	o.errors = 0
	o.times = min(o.times+1, maxEjectionMultiplier)
	until := t + int64(o.times)*int64(p.BaseEjection)
	o.decayFrom = until
	o.quiet.Store(false)
	o.since.Store(t)
	o.until.Store(until)
}

// Ejected reports whether b is ejected at now. It takes no lock.
func (b *Backend) Ejected(now time.Time) bool {
	return now.UnixNano() < b.outlier.until.Load()
}

// Eligible returns the backends of all to pick from at now, and whether
// the proxy is in panic mode. Any goroutine may call it; it takes no lock.
//
// Backends that are not ejected are eligible. Of the ejected ones, at most
// MaxEjectionPercent of len(all) (rounded down, but at least one) are kept
// out: those whose ejections started first, as if a later ejection that
// would break the cap had been refused; the rest are eligible again. When
// every backend is ejected, all of them are returned and panic is true:
// the proxy sends to all rather than to none.
//
// The result is appended to buf[:0] (pass a stack array to avoid
// allocating), or is all itself when nothing is ejected; the caller must
// not modify it. Eligible backends keep their order in all, except that
// backends let back in by the cap come last.
func Eligible(all []*Backend, p OutlierPolicy, now time.Time, buf []*Backend) (eligible []*Backend, panicMode bool) {
	t := now.UnixNano()
	ejected := 0
	for _, b := range all {
		if t < b.outlier.until.Load() {
			ejected++
		}
	}
	switch ejected {
	case 0:
		return all, false
	case len(all):
		return all, true
	}
	p = p.withDefaults()
	keepOut := max(len(all)*p.MaxEjectionPercent/100, 1)
	eligible = buf[:0]
	if ejected <= keepOut {
		for _, b := range all {
			if t >= b.outlier.until.Load() {
				eligible = append(eligible, b)
			}
		}
		if len(eligible) == 0 { // all were ejected meanwhile
			return all, true
		}
		return eligible, false
	}
	// Too many are ejected: let back in the latest-ejected ones. Snapshot
	// the start times so a concurrent ejection cannot upset the sort.
	type ejection struct {
		since int64
		b     *Backend
	}
	var arr [32]ejection
	out := arr[:0]
	for _, b := range all {
		if t >= b.outlier.until.Load() {
			eligible = append(eligible, b)
		} else {
			out = append(out, ejection{b.outlier.since.Load(), b})
		}
	}
	slices.SortFunc(out, func(x, y ejection) int {
		if c := cmp.Compare(y.since, x.since); c != 0 { // latest first
			return c
		}
		return cmp.Compare(x.b.ID, y.b.ID)
	})
	// A backend whose ejection expired since the first pass is already
	// eligible, so len(out) may be below ejected: keep the cap on what is
	// left.
	for _, e := range out[:max(len(out)-keepOut, 0)] {
		eligible = append(eligible, e.b)
	}
	return eligible, false
}
