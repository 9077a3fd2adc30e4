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
//     at a different node and failing over to the others.
//   - check.go: the linearizability check plus a revision check (one mod
//     revision per value: catches a write applied twice). On failure it
//     writes history.html (porcupine's visualisation), history.txt,
//     problems.txt and every node's log to a folder under
//     $TANDEM_ROBUSTNESS_OUT (default: the system's temporary folder).
//   - TestKillLeaderLinearizable: kill -9 the store leader mid-run, restart
//     it, check the history, and log availability figures.
//
// To come: network partitions in network namespaces (netns) instead of
// process faults only; five-node clusters; SIGSTOP pauses and clock skew;
// an availability workload that measures error budgets rather than
// correctness; compare-and-set on revisions in the model; and an
// environment variable to run the workloads for minutes instead of seconds.
//
// Run with:
//
//	go test ./test/robustness -count=1 -v
//
// -short runs the model tests only.
package robustness
