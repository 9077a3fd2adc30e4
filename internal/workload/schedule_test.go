package workload

import (
	"testing"

	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestAllocState: what the scheduler makes of an allocation and its node's
// report.
func TestAllocState(t *testing.T) {
	for _, tt := range []struct {
		name    string
		desired string
		status  *wire.AllocStatus
		want    string
	}{
		{"to stop, whatever the node says", wire.DesiredStop, &wire.AllocStatus{State: wire.AllocRunning}, scheduler.StateStopping},
		{"no report yet", wire.DesiredRun, nil, scheduler.StatePending},
		{"starting", wire.DesiredRun, &wire.AllocStatus{State: wire.AllocStarting}, scheduler.StatePending},
		{"running", wire.DesiredRun, &wire.AllocStatus{State: wire.AllocRunning}, scheduler.StateRunning},
		{"restarting counts as running (it stays on its node)", wire.DesiredRun, &wire.AllocStatus{State: wire.AllocBackoff}, scheduler.StateRunning},
		{"failed: handed back", wire.DesiredRun, &wire.AllocStatus{State: wire.AllocFailed}, scheduler.StateFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := allocEntry{a: wire.Allocation{Desired: tt.desired}, status: tt.status}
			if got := allocState(e); got != tt.want {
				t.Fatalf("allocState = %q, want %q", got, tt.want)
			}
		})
	}
}
