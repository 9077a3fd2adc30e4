package proxy

import (
	"math"
	"sync"
	"time"
)

// RetryBudget bounds the extra load retries add to a service: retries may
// be at most ratio of its recent requests, plus a small reserve so that a
// service with little traffic can still retry.
//
// It is two token buckets. Every request deposits ratio tokens into the
// first; deposits fade exponentially with a time constant of budgetWindow,
// so the balance is about ratio × the requests of the last 10 seconds and
// a quiet spell after a busy one cannot bank a retry storm. The second, the
// reserve, refills at minPerSecond tokens a second up to minPerSecond. A
// retry spends a token from the first bucket, or else from the reserve.
//
// A RetryBudget is shared by all requests of a service; its methods may be
// called from any goroutine and hold a mutex only for a few arithmetic
// steps. Times that go backwards (goroutines read the clock before
// calling) count as no time passing.
type RetryBudget struct {
	deposit  int64 // tokens one request deposits, in budgetUnits
	perSec   int64 // reserve refill, in budgetUnits a second
	reserveC int64 // reserve capacity, in budgetUnits

	mu       sync.Mutex
	last     int64 // Unix ns of the latest update (0: none yet)
	balance  int64 // first bucket, in budgetUnits
	reserve  int64 // second bucket, in budgetUnits
	reserveT int64 // Unix ns the reserve was last refilled
}

// budgetUnit is one token: balances are kept in integers so that 100
// deposits of 0.2 make exactly 20 retries.
const budgetUnit = 1_000_000

// budgetWindow is the time constant over which request deposits fade.
const budgetWindow = 10 * time.Second

// NewRetryBudget returns a budget allowing retries of ratio (e.g. 0.2) of
// the requests, plus minPerSecond retries a second whatever the traffic.
// The reserve starts full. Negative arguments count as 0.
func NewRetryBudget(ratio float64, minPerSecond int) *RetryBudget {
	ratio = max(ratio, 0)
	minPerSecond = max(minPerSecond, 0)
	rb := &RetryBudget{
		deposit:  int64(math.Round(ratio * budgetUnit)),
		perSec:   int64(minPerSecond) * budgetUnit,
		reserveC: int64(minPerSecond) * budgetUnit,
	}
	rb.reserve = rb.reserveC
	return rb
}

// Request records that a request was sent at now.
func (rb *RetryBudget) Request(now time.Time) {
	rb.mu.Lock()
	rb.advance(now.UnixNano())
	rb.balance += rb.deposit
	rb.mu.Unlock()
}

// TryRetry reports whether a retry may be sent at now, and if so spends a
// token for it.
func (rb *RetryBudget) TryRetry(now time.Time) bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.advance(now.UnixNano())
	switch {
	case rb.balance >= budgetUnit:
		rb.balance -= budgetUnit
	case rb.reserve >= budgetUnit:
		rb.reserve -= budgetUnit
	default:
		return false
	}
	return true
}

// advance fades the balance and refills the reserve up to t. rb.mu is
// held.
func (rb *RetryBudget) advance(t int64) {
	if rb.last == 0 {
		rb.last, rb.reserveT = t, t
		return
	}
	if dt := t - rb.last; dt > 0 {
		if rb.balance > 0 {
			rb.balance = int64(float64(rb.balance) * math.Exp(-float64(dt)/float64(budgetWindow)))
		}
		rb.last = t
	}
	// reserveT moves only when something was added, so that calls close
	// together do not lose their fractions of a unit to rounding.
	if rb.perSec > 0 && rb.reserve < rb.reserveC {
		if dt := t - rb.reserveT; dt > 0 {
			add := int64(float64(dt) * float64(rb.perSec) / float64(time.Second))
			rb.reserve = min(rb.reserve+add, rb.reserveC)
			if add > 0 {
				rb.reserveT = t
			}
		}
	} else if t > rb.reserveT {
		rb.reserveT = t
	}
}
