// Package bench holds benchmarks of real tandem clusters: three `tandem
// agent` processes on loopback ports, started by internal/clustertest.
//
// The package has Benchmark functions only, so a plain `go test ./...` builds
// it and runs nothing. Run the benchmarks with:
//
//	go test ./test/bench -run '^$' -bench . -benchtime 1x -timeout 30m
//
// Each benchmark measures one fixed workload per sub-benchmark (a duration,
// or a number of failover runs) whatever b.N is, and reports its figures with
// b.ReportMetric; ns/op is suppressed because it would only be the wall time
// of the whole run. Flags after -args tune the workload:
//
//	-bench.duration 5s   measured window of each KV sub-benchmark
//	-bench.warmup 1s     unmeasured warm-up before each window
//	-bench.runs 10       failover runs
//
// docs/BENCHMARKS.md records the figures measured with these benchmarks.
package bench
