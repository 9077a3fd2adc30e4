package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestUnavailableNamesTheCause: "no quorum" only when fewer than a majority
// of voters answered the probe; a leader change and a timeout say so.
func TestUnavailableNamesTheCause(t *testing.T) {
	now := time.Now()
	timeout := fmt.Errorf("attempt: %w", context.DeadlineExceeded)
	changed := fmt.Errorf("%w: %w", ErrLeaderChanged, context.Canceled)
	for _, tc := range []struct {
		name  string
		h     Health
		cause error
		want  error
		text  string
	}{
		{"leader change, all reachable", Health{Voters: 3, Reachable: 3, LeaderID: 2, Measured: now}, changed, ErrLeaderChanged, "new one was just elected"},
		{"leader change, nothing probed", Health{}, changed, ErrLeaderChanged, "leader changed"},
		{"never probed", Health{}, timeout, ErrTimeout, "did not answer in time"},
		{"minority", Health{Voters: 3, Reachable: 1, Measured: now}, timeout, ErrNoQuorum, "1 of 3 voters reachable, 2 needed"},
		{"majority, no leader", Health{Voters: 3, Reachable: 2, Measured: now}, timeout, ErrLeaderChanged, "electing a leader"},
		{"majority with a leader", Health{Voters: 3, Reachable: 3, LeaderID: 1, Measured: now}, timeout, ErrTimeout, "3 of 3 voters are reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := unavailable(tc.h, tc.cause)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want != ErrNoQuorum && strings.Contains(err.Error(), "no quorum") {
				t.Errorf("says no quorum with %d of %d voters reachable: %v", tc.h.Reachable, tc.h.Voters, err)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%q does not say %q", err, tc.text)
			}
			if !IsUnavailable(err) {
				t.Errorf("IsUnavailable(%v) = false", err)
			}
		})
	}
}
