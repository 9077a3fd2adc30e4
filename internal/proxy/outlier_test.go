package proxy

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const s = time.Second

// report is one step of an outlier script: an outcome reported at an
// offset from t0, and whether it should eject.
type report struct {
	at      time.Duration
	outcome Outcome
	eject   bool
}

// repeat is n copies of a report at the same time.
func repeat(n int, r report) []report {
	out := make([]report, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func script(parts ...[]report) []report {
	var out []report
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestReport(t *testing.T) {
	ok := func(d time.Duration) report { return report{d, Success, false} }
	e5 := func(d time.Duration) report { return report{d, ServerError, false} }
	tests := []struct {
		name    string
		policy  OutlierPolicy
		reports []report
		ejected []time.Duration // Ejected is true at these offsets
		kept    []time.Duration // and false at these
	}{
		{
			name:    "connect failure ejects at once",
			reports: []report{{0, ConnectFailure, true}},
			ejected: []time.Duration{0, 4*s + 999*time.Millisecond},
			kept:    []time.Duration{5 * s, 6 * s},
		},
		{
			name:    "five 5xx in a row eject",
			reports: script(repeat(4, e5(0)), []report{{s, ServerError, true}}),
			ejected: []time.Duration{s, 5 * s},
			kept:    []time.Duration{6 * s},
		},
		{
			name:    "four 5xx do not",
			reports: repeat(4, e5(0)),
			kept:    []time.Duration{0, s},
		},
		{
			name:    "success resets the count",
			reports: script(repeat(4, e5(0)), []report{ok(0)}, repeat(4, e5(0))),
			kept:    []time.Duration{0},
		},
		{
			name:    "other outcomes reset the count",
			reports: script(repeat(4, e5(0)), []report{{0, Outcome(42), false}}, repeat(4, e5(0))),
			kept:    []time.Duration{0},
		},
		{
			name:    "policy sets the count and base",
			policy:  OutlierPolicy{ConsecutiveErrors: 2, BaseEjection: 30 * s},
			reports: []report{e5(0), {0, ServerError, true}},
			ejected: []time.Duration{29 * s},
			kept:    []time.Duration{30 * s},
		},
		{
			name: "outcomes while ejected are ignored",
			reports: script([]report{{0, ConnectFailure, true}, {s, ConnectFailure, false}},
				repeat(10, e5(2*s)), []report{{5 * s, ServerError, false}}), // the count started over
			ejected: []time.Duration{4 * s},
			kept:    []time.Duration{5 * s},
		},
		{
			name: "ejection grows with each ejection in a row",
			reports: []report{
				{0, ConnectFailure, true},      // 1 × 5s: until 5s
				{5 * s, ConnectFailure, true},  // 2 × 5s: until 15s
				{15 * s, ConnectFailure, true}, // 3 × 5s: until 30s
				{30 * s, Success, false},       // no healthy time yet: no decay
				{31 * s, ConnectFailure, true}, // 4 × 5s: until 51s
			},
			ejected: []time.Duration{50 * s},
			kept:    []time.Duration{51 * s},
		},
		{
			name: "ejection is capped at 10 × base",
			reports: func() []report {
				var rs []report
				var d time.Duration
				for i := 1; i <= 12; i++ {
					rs = append(rs, report{d, ConnectFailure, true})
					d += time.Duration(min(i, 10)) * 5 * s
				}
				return rs // the 12th: 10 × 5s from its start
			}(),
			ejected: []time.Duration{(5*55 + 50 + 49) * s},
			kept:    []time.Duration{(5*55 + 50 + 50) * s},
		},
		{
			name: "healthy time decays the multiplier",
			reports: []report{
				{0, ConnectFailure, true},                     // until 5s
				{5 * s, ConnectFailure, true},                 // until 15s
				{15 * s, ConnectFailure, true},                // until 30s, multiplier 3
				{42*s + 500*time.Millisecond, Success, false}, // 2.5 bases healthy: multiplier 1
				{43 * s, ConnectFailure, true},                // 2 × 5s: until 53s
			},
			ejected: []time.Duration{52 * s},
			kept:    []time.Duration{53 * s},
		},
		{
			name: "long health starts over",
			reports: []report{
				{0, ConnectFailure, true},
				{5 * s, ConnectFailure, true}, // until 15s
				{time.Hour, Success, false},
				{time.Hour, ConnectFailure, true}, // 1 × 5s again
			},
			ejected: []time.Duration{time.Hour + 4*s},
			kept:    []time.Duration{time.Hour + 5*s},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBackend("a", "svc", "127.0.0.1:1", "n0", 1)
			for i, r := range tt.reports {
				if got := b.Report(tt.policy, r.outcome, at(r.at)); got != r.eject {
					t.Fatalf("report %d (%v at %v) ejected = %v, want %v", i, r.outcome, r.at, got, r.eject)
				}
			}
			for _, d := range tt.ejected {
				if !b.Ejected(at(d)) {
					t.Errorf("Ejected(%v) = false, want true", d)
				}
			}
			for _, d := range tt.kept {
				if b.Ejected(at(d)) {
					t.Errorf("Ejected(%v) = true, want false", d)
				}
			}
		})
	}
}

func TestReportConcurrent(t *testing.T) {
	b := NewBackend("a", "svc", "127.0.0.1:1", "n0", 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ejections := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				r := Success
				if (g+i)%3 == 0 {
					r = ServerError
				}
				if b.Report(OutlierPolicy{ConsecutiveErrors: 2}, r, at(time.Duration(i)*time.Millisecond)) {
					mu.Lock()
					ejections++
					mu.Unlock()
				}
				b.Ejected(at(time.Duration(i) * time.Millisecond))
			}
		})
	}
	wg.Wait()
	t.Logf("%d ejections", ejections)
}

// ejectAt ejects the backends with the given indexes, one second apart
// from t0 in the order given.
func ejectAt(bs []*Backend, order ...int) {
	for i, k := range order {
		bs[k].Report(OutlierPolicy{}, ConnectFailure, at(time.Duration(i)*s))
	}
}

func ids(bs []*Backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func TestEligible(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		policy OutlierPolicy
		eject  []int // in this order, a second apart
		at     time.Duration
		want   string
		panic  bool
	}{
		{name: "none ejected", n: 4, want: "[b0 b1 b2 b3]"},
		{name: "one of four", n: 4, eject: []int{2}, at: 3 * s, want: "[b0 b1 b3]"},
		{name: "two of four: at the cap", n: 4, eject: []int{2, 0}, at: 3 * s, want: "[b1 b3]"},
		{name: "ejection expired", n: 4, eject: []int{2, 0}, at: 5 * s, want: "[b1 b2 b3]"},
		{name: "three of four: latest let back", n: 4, eject: []int{2, 0, 3}, at: 3 * s, want: "[b1 b3]"},
		{name: "the cap comes from the policy", n: 4, policy: OutlierPolicy{MaxEjectionPercent: 75}, eject: []int{2, 0, 3}, at: 3 * s, want: "[b1]"},
		{name: "four of six at 50%", n: 6, eject: []int{5, 1, 4, 0}, at: 4 * s, want: "[b2 b3 b0]"},
		{name: "at least one may be ejected", n: 3, policy: OutlierPolicy{MaxEjectionPercent: 10}, eject: []int{1, 2}, at: 2 * s, want: "[b0 b2]"},
		{name: "all ejected: panic", n: 4, eject: []int{0, 1, 2, 3}, at: 4 * s, want: "[b0 b1 b2 b3]", panic: true},
		{name: "the only one ejected: panic", n: 1, eject: []int{0}, at: 0, want: "[b0]", panic: true},
		{name: "all ejected at 100%: panic", n: 2, policy: OutlierPolicy{MaxEjectionPercent: 100}, eject: []int{0, 1}, at: s, want: "[b0 b1]", panic: true},
		{name: "panic ends as ejections expire", n: 2, eject: []int{0, 1}, at: 5 * s, want: "[b0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.n)
			ejectAt(bs, tt.eject...)
			var buf [16]*Backend
			got, panicked := Eligible(bs, tt.policy, at(tt.at), buf[:0])
			if s := fmt.Sprint(ids(got)); s != tt.want || panicked != tt.panic {
				t.Errorf("Eligible = %s, panic %v; want %s, panic %v", s, panicked, tt.want, tt.panic)
			}
		})
	}
}

func TestEligibleDoesNotAllocate(t *testing.T) {
	bs := backends(10)
	ejectAt(bs, 1, 3, 5, 7, 9, 0, 2) // 7 of 10: the cap lets 2 back in
	var buf [16]*Backend
	if n := testing.AllocsPerRun(1000, func() { Eligible(bs, OutlierPolicy{}, at(6*s), buf[:0]) }); n != 0 {
		t.Errorf("Eligible allocates %.1f times", n)
	}
	if got, _ := Eligible(bs, OutlierPolicy{}, at(6*s), buf[:0]); len(got) != 5 {
		t.Errorf("Eligible = %v, want 5 backends", ids(got))
	}
}

func BenchmarkEligible(b *testing.B) {
	for _, ejected := range []int{0, 3, 7} {
		b.Run(fmt.Sprintf("ejected=%d", ejected), func(b *testing.B) {
			bs := backends(10)
			for i := range ejected {
				bs[i].Report(OutlierPolicy{}, ConnectFailure, at(time.Duration(i)*time.Millisecond))
			}
			var buf [16]*Backend
			b.ReportAllocs()
			for b.Loop() {
				Eligible(bs, OutlierPolicy{}, at(s), buf[:0])
			}
		})
	}
}

func BenchmarkReportSuccess(b *testing.B) {
	bk := NewBackend("a", "svc", "127.0.0.1:1", "n0", 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bk.Report(OutlierPolicy{}, Success, t0)
		}
	})
}
