package store

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors callers test for.
var (
	// ErrNoQuorum means this node could not reach a majority of voters:
	// a real loss of quorum, as measured by a probe of the voters.
	ErrNoQuorum = errors.New("no quorum")
	// ErrLeaderChanged means the store leader changed (or was being
	// elected) while the request waited; a write's outcome is unknown.
	ErrLeaderChanged = errors.New("the store leader changed during the request")
	// ErrTimeout means the request ran out of time although a majority of
	// voters was reachable and the store had a leader.
	ErrTimeout = errors.New("store timeout")
	// ErrNotFound means the key or node does not exist.
	ErrNotFound = errors.New("not found")
	// ErrCompacted means a watch asked for history the store has discarded.
	ErrCompacted = errors.New("revision compacted")
	// ErrPortTaken means another process holds a port the store member
	// needs: retrying will not help until the operator acts.
	ErrPortTaken = errors.New("port taken")
)

// IsUnavailable reports whether err means the store could not serve a
// request that needs a quorum: a timeout, no leader, or no reachable member.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrLeaderChanged) || errors.Is(err, ErrTimeout) {
		return true
	}
	switch {
	case errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrNotCapable),
		errors.Is(err, rpctypes.ErrStopped), errors.Is(err, rpctypes.ErrTooManyRequests):
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	// v3client returns server errors unwrapped; match their text.
	msg := err.Error()
	for _, m := range []string{"request timed out", "no leader", "leader changed", "server stopped", "proposal dropped"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// NotApplied reports whether err proves a write was not applied: the
// store refused it before proposing it to Raft (no leader known, the
// proposal dropped, too many requests). A timeout proves nothing.
func NotApplied(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTooManyRequests) || errors.Is(err, rpctypes.ErrNotCapable) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "proposal dropped") || strings.Contains(msg, "no leader")
}
