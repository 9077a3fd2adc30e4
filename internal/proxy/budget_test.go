package proxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// budgetStep is one step of a retry budget script: requests sent at an
// offset from t0, then retries tried at the same time, of which allowed
// should go.
type budgetStep struct {
	at       time.Duration
	requests int
	retries  int
	allowed  int
}

func TestRetryBudget(t *testing.T) {
	tests := []struct {
		name   string
		ratio  float64
		minSec int
		steps  []budgetStep
	}{
		{
			name:  "20% of 100 requests, plus the minimum of 3",
			ratio: 0.2, minSec: 3,
			steps: []budgetStep{{0, 100, 30, 23}, {0, 0, 5, 0}},
		},
		{
			name:  "the minimum refills each second",
			ratio: 0.2, minSec: 3,
			steps: []budgetStep{
				{0, 0, 5, 3},
				{333 * time.Millisecond, 0, 5, 0},
				{334 * time.Millisecond, 0, 5, 1},
				{time.Second, 0, 5, 2},
				{10 * time.Second, 0, 5, 3}, // capped at one second's worth
			},
		},
		{
			name:  "requests refill the budget",
			ratio: 0.2, minSec: 3,
			steps: []budgetStep{
				{0, 100, 30, 23},
				{0, 50, 30, 10},
				{0, 4, 1, 0}, // 0.8 tokens
				{0, 1, 1, 1},
			},
		},
		{
			name:  "old requests fade",
			ratio: 0.2, minSec: 0,
			steps: []budgetStep{
				{0, 100, 0, 0},
				{30 * time.Second, 0, 5, 0}, // 20 × e^-3 < 1
			},
		},
		{
			name:  "recent requests mostly count",
			ratio: 0.2, minSec: 0,
			steps: []budgetStep{
				{0, 100, 0, 0},
				{time.Second, 0, 30, 18}, // 20 × e^-0.1 = 18.1
			},
		},
		{
			name:  "steady traffic",
			ratio: 0.1, minSec: 0,
			steps: func() []budgetStep {
				var st []budgetStep
				for i := range 100 { // 100 requests a second for 100 s
					st = append(st, budgetStep{time.Duration(i) * time.Second, 100, 0, 0})
				}
				// The balance settles near 10/s × 10 s (a little less
				// because deposits fade within each second).
				return append(st, budgetStep{100 * time.Second, 0, 200, 95})
			}(),
		},
		{
			name:  "nothing without ratio or minimum",
			steps: []budgetStep{{0, 1000, 1, 0}, {time.Minute, 1000, 1, 0}},
		},
		{
			name:  "clock going back counts as no time",
			ratio: 0.2, minSec: 3,
			steps: []budgetStep{{10 * time.Second, 0, 3, 3}, {9 * time.Second, 0, 3, 0}, {10 * time.Second, 5, 3, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := NewRetryBudget(tt.ratio, tt.minSec)
			for i, st := range tt.steps {
				for range st.requests {
					rb.Request(at(st.at))
				}
				allowed := 0
				for range st.retries {
					if rb.TryRetry(at(st.at)) {
						allowed++
					}
				}
				if allowed != st.allowed {
					t.Fatalf("step %d (at %v): %d of %d retries allowed, want %d", i, st.at, allowed, st.retries, st.allowed)
				}
			}
		})
	}
}

func TestRetryBudgetConcurrent(t *testing.T) {
	rb := NewRetryBudget(0.2, 3)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				rb.Request(t0)
				if rb.TryRetry(t0) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 8000 requests: 1600 tokens, and 3 from the reserve.
	if got := allowed.Load(); got != 1603 {
		t.Errorf("%d retries allowed, want 1603", got)
	}
}

func BenchmarkRetryBudgetRequest(b *testing.B) {
	rb := NewRetryBudget(0.2, 3)
	start := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		rb.Request(start.Add(time.Duration(i) * time.Microsecond))
	}
}
