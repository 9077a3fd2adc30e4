package health

import "github.com/tandemhq/tandem/internal/registry"

// Tracker applies one check's thresholds to its results: a pure state
// machine with no clock or I/O. It is not safe for concurrent use; the
// goroutine that runs the check owns it.
//
// FailuresBeforeCritical consecutive critical results turn it critical and
// SuccessesBeforePassing consecutive passing results turn it passing;
// until a streak reaches its threshold the status holds. A warning result
// turns it warning at once and breaks both streaks: it is a definite
// answer from the service that it is degraded (an HTTP 429, an exit code
// of 1), not a flaky probe to be smoothed over.
type Tracker struct {
	failuresBeforeCritical int
	successesBeforePassing int

	status    string
	output    string
	failures  int // consecutive critical results
	successes int // consecutive passing results
}

// NewTracker starts tracking check c in state initial: the instance's
// initial state, or critical when that is empty. Thresholds below 1 take
// the registry's defaults.
func NewTracker(c registry.Check, initial string) *Tracker {
	c.Normalize()
	if initial == "" {
		initial = registry.Critical
	}
	return &Tracker{
		failuresBeforeCritical: max(c.FailuresBeforeCritical, 1),
		successesBeforePassing: max(c.SuccessesBeforePassing, 1),
		status:                 initial,
	}
}

// Observe records one result and returns the check's status and whether
// this result changed it. An unrecognised result status counts as critical.
func (t *Tracker) Observe(r Result) (status string, changed bool) {
	t.output = r.Output
	next := t.status
	switch r.Status {
	case registry.Passing:
		t.failures = 0
		t.successes++
		if t.successes >= t.successesBeforePassing {
			next = registry.Passing
		}
	case registry.Warning:
		t.failures, t.successes = 0, 0
		next = registry.Warning
	default:
		t.successes = 0
		t.failures++
		if t.failures >= t.failuresBeforeCritical {
			next = registry.Critical
		}
	}
	changed = next != t.status
	t.status = next
	return t.status, changed
}

// Status is the check's current status.
func (t *Tracker) Status() string { return t.status }

// Output is the output of the last result observed, even when that result
// did not (yet) change the status.
func (t *Tracker) Output() string { return t.output }
