package health

import (
	"testing"

	"github.com/tandemhq/tandem/internal/registry"
)

const (
	P = registry.Passing
	W = registry.Warning
	C = registry.Critical
)

func TestTracker(t *testing.T) {
	type step struct {
		result  string // status of the result observed
		status  string // tracker status afterwards
		changed bool
	}
	tests := []struct {
		name      string
		failures  int // FailuresBeforeCritical (0 = default 2)
		successes int // SuccessesBeforePassing (0 = default 1)
		initial   string
		steps     []step
	}{
		{
			name: "empty initial state is critical; one pass turns passing by default", initial: "",
			steps: []step{{P, P, true}},
		},
		{
			name: "one failure below threshold 2 stays passing", failures: 2, initial: P,
			steps: []step{{C, P, false}},
		},
		{
			name: "two failures at threshold 2 turn critical", failures: 2, initial: P,
			steps: []step{{C, P, false}, {C, C, true}, {C, C, false}},
		},
		{
			name: "a pass resets the failure streak", failures: 2, initial: P,
			steps: []step{{C, P, false}, {P, P, false}, {C, P, false}, {C, C, true}},
		},
		{
			name: "default failure threshold is 2", initial: P,
			steps: []step{{C, P, false}, {C, C, true}},
		},
		{
			name: "failure threshold 1 turns critical at once", failures: 1, initial: P,
			steps: []step{{C, C, true}},
		},
		{
			name: "successes threshold 3 needs 3 passes", successes: 3, initial: C,
			steps: []step{{P, C, false}, {P, C, false}, {P, P, true}, {P, P, false}},
		},
		{
			name: "a failure resets the success streak", successes: 3, failures: 5, initial: C,
			steps: []step{{P, C, false}, {P, C, false}, {C, C, false}, {P, C, false}, {P, C, false}, {P, P, true}},
		},
		{
			name: "warning applies at once from passing", failures: 3, initial: P,
			steps: []step{{W, W, true}, {W, W, false}},
		},
		{
			name: "warning applies at once from critical", successes: 3, initial: C,
			steps: []step{{W, W, true}},
		},
		{
			name: "warning breaks the failure streak", failures: 2, initial: P,
			steps: []step{{C, P, false}, {W, W, true}, {C, W, false}, {C, C, true}},
		},
		{
			name: "warning breaks the success streak", successes: 2, initial: C,
			steps: []step{{P, C, false}, {W, W, true}, {P, W, false}, {P, P, true}},
		},
		{
			name: "initial warning holds until a threshold is met", failures: 2, successes: 2, initial: W,
			steps: []step{{C, W, false}, {P, W, false}, {P, P, true}},
		},
		{
			name: "unknown result status counts as critical", failures: 1, initial: P,
			steps: []step{{"bogus", C, true}},
		},
		{
			name: "flapping below both thresholds never changes", failures: 2, successes: 2, initial: P,
			steps: []step{{C, P, false}, {P, P, false}, {C, P, false}, {P, P, false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(registry.Check{
				Type:                   registry.CheckTCP,
				FailuresBeforeCritical: tt.failures,
				SuccessesBeforePassing: tt.successes,
			}, tt.initial)
			for i, s := range tt.steps {
				out := "result " + string(rune('a'+i))
				status, changed := tr.Observe(Result{Status: s.result, Output: out})
				if status != s.status || changed != s.changed {
					t.Fatalf("step %d: Observe(%s) = (%s, %v), want (%s, %v)", i+1, s.result, status, changed, s.status, s.changed)
				}
				if tr.Status() != status {
					t.Fatalf("step %d: Status() = %s, Observe returned %s", i+1, tr.Status(), status)
				}
				if tr.Output() != out {
					t.Fatalf("step %d: Output() = %q, want the last result's %q", i+1, tr.Output(), out)
				}
			}
		})
	}
}

func TestTrackerInitialStatus(t *testing.T) {
	for _, initial := range []string{P, W, C} {
		if got := NewTracker(registry.Check{}, initial).Status(); got != initial {
			t.Errorf("NewTracker(%q).Status() = %q", initial, got)
		}
	}
	if got := NewTracker(registry.Check{}, "").Status(); got != C {
		t.Errorf(`NewTracker("").Status() = %q, want critical`, got)
	}
}

func TestAggregate(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, P},
		{[]string{}, P},
		{[]string{P}, P},
		{[]string{P, P}, P},
		{[]string{P, W}, W},
		{[]string{W, P}, W},
		{[]string{P, W, C}, C},
		{[]string{C, P}, C},
		{[]string{W, W}, W},
		{[]string{P, "bogus"}, C},
	}
	for _, tt := range tests {
		if got := Aggregate(tt.in); got != tt.want {
			t.Errorf("Aggregate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
