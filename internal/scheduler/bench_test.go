package scheduler

import (
	"fmt"
	"strconv"
	"testing"
)

// benchCluster is 100 nodes over 5 zones and 200 services of 50 instances
// each: a quarter spread over zones, a tenth kept out of one zone.
func benchCluster() (map[string]Workload, []Node) {
	var nodes []Node
	for i := range 100 {
		n := node(fmt.Sprintf("node-%03d", i), "zone="+string(rune('a'+i%5)))
		n.Capacity = Resources{CPUMillis: 16000, MemoryMB: 65536}
		nodes = append(nodes, n)
	}
	specs := map[string]Workload{}
	for i := range 200 {
		w := spec(50, func(w *Workload) { w.Resources = Resources{CPUMillis: 100, MemoryMB: 256} })
		if i%4 == 0 {
			w.Spread = "zone"
		}
		if i%10 == 0 {
			w.Constraints = []Constraint{"zone!=e"}
		}
		specs[fmt.Sprintf("svc-%03d", i)] = w
	}
	return specs, nodes
}

func benchOptions() Options {
	n := 0
	return Options{LeaseTTL: testTTL, LossMargin: testMargin, NewID: func(svc string) string {
		n++
		return svc + "-" + strconv.Itoa(n)
	}}
}

// BenchmarkPlan10k plans 10,000 instances (200 services × 50) over 100
// nodes from empty.
func BenchmarkPlan10k(b *testing.B) {
	specs, nodes := benchCluster()
	var placed int
	for b.Loop() {
		res := Plan(specs, nodes, nil, t0, benchOptions())
		placed = len(res.Place)
	}
	if placed != 10000 {
		b.Fatalf("placed %d, want 10000", placed)
	}
}

// BenchmarkPlan10kSteady plans the same cluster once it runs everything:
// the cost of each plan when nothing changes.
func BenchmarkPlan10kSteady(b *testing.B) {
	specs, nodes := benchCluster()
	allocs := apply(nil, Plan(specs, nodes, nil, t0, benchOptions()))
	for b.Loop() {
		if res := Plan(specs, nodes, allocs, t0, benchOptions()); res.Changes() {
			b.Fatalf("steady state changes: %d placed, %d stopped", len(res.Place), len(res.Stop))
		}
	}
}

// BenchmarkPlan10kNodeLoss plans the cluster after one node died.
func BenchmarkPlan10kNodeLoss(b *testing.B) {
	specs, nodes := benchCluster()
	allocs := apply(nil, Plan(specs, nodes, nil, t0, benchOptions()))
	nodes[7] = dead(nodes[7], 0)
	var placed int
	for b.Loop() {
		placed = len(Plan(specs, nodes, allocs, t0, benchOptions()).Place)
	}
	if placed == 0 {
		b.Fatal("nothing replaced")
	}
	b.ReportMetric(float64(placed), "replaced")
}

// BenchmarkPlan10kRolling plans the cluster when every service has a new
// generation: each service places its first new instance.
func BenchmarkPlan10kRolling(b *testing.B) {
	specs, nodes := benchCluster()
	allocs := apply(nil, Plan(specs, nodes, nil, t0, benchOptions()))
	for name, w := range specs {
		w.Generation++
		specs[name] = w
	}
	var placed int
	for b.Loop() {
		placed = len(Plan(specs, nodes, allocs, t0, benchOptions()).Place)
	}
	if placed != len(specs) {
		b.Fatalf("placed %d, want one per service", placed)
	}
}
