// Package health runs an instance's health checks and turns their results
// into a status.
//
// A [Checker] performs one run of one check (http, tcp, grpc or exec) and
// reports a [Result]; [New] builds it from a [registry.Check]. A [Tracker]
// is the pure state machine that applies a check's thresholds to a stream
// of results, and [Aggregate] folds the checks of an instance into one
// status. TTL checks are not Checkers: they are driven by renewals, so the
// runner that owns an instance handles them itself.
//
// The package does no scheduling: the runner on the owning node calls
// Check on each interval with a context whose deadline is the check's
// Timeout, feeds the result to the check's Tracker, and writes the
// aggregate to the store.
package health
