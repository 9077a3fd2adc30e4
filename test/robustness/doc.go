// Package robustness checks that tandem's KV API stays linearizable while
// nodes fail. Clients run a random workload against a real cluster of
// `tandem agent` processes (internal/clustertest), every operation is
// recorded with its call and return times, faults are injected, and the
// history is checked with porcupine (github.com/anishathalye/porcupine).
//
// What exists:
//
//   - model.go: a porcupine model of the KV API, partitioned by key, for
//     get, put, delete and put-if-absent (PUT with cas=0). Every write
//     carries a unique value. Compare-and-set on a mod revision other than
//     0 is not modelled (see Model).
//   - history.go: a recorder safe for concurrent use, on the monotonic
//     clock. A write with an unknown outcome (503, transport error) is
//     checked as an operation that never returns: it may take effect at
//     any point after its call, or not at all. A read that failed is left
//     out: it had no effect.
//   - workload.go: N clients, one operation outstanding each, each starting
//     at a different node and failing over to the others. A write that
//     reached no node (every connection refused) is left out like a failed
//     read; a client backs off 50 ms after a failed operation.
//   - check.go: the linearizability check plus a revision check (one mod
//     revision per value: catches a write applied twice). On failure it
//     writes history.html (porcupine's visualisation), history.txt,
//     problems.txt and every node's log to a folder under
//     $TANDEM_ROBUSTNESS_OUT (default: the system's temporary folder).
//   - nemesis_test.go: TestNemesisLinearizable runs a table of nemesis
//     scenarios one at a time through one runner: kill -9 the leader and
//     restart it; kill -9 a follower and restart it; SIGSTOP the leader for
//     2 s (longer than the 500 ms election timeout) and SIGCONT it; kill -9
//     every node and restart them all; kill -9 the leader of a five-voter
//     cluster and restart it. Each runs the workload for 8 to 10 s, reads
//     every key through every node once the cluster is healthy (a lost
//     acknowledged write shows up there), checks the history, and logs the
//     figures: operations checked, violations, unknown-outcome writes,
//     success rate before, during and after the fault, and the time to the
//     first acknowledged write after the fault.
//
// $TANDEM_ROBUSTNESS_SEEDS (default 1) runs every scenario with that many
// workload seeds (1, 2, ...), one subtest each, for longer runs.
//
// To come: network partitions in network namespaces (netns) instead of
// process faults only, one-way partitions, blackholes, a delay and loss
// proxy; clock skew; an availability workload that measures error budgets
// rather than correctness; autopilot voter replacement under the checker;
// compare-and-set on revisions in the model. See docs/ROBUSTNESS.md.
//
// Run with:
//
//	go test ./test/robustness -count=1 -v
//	TANDEM_ROBUSTNESS_SEEDS=5 go test ./test/robustness -count=1 -v -timeout 30m
//
// -short runs the model tests only.
package robustness
