package scheduler

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	testTTL    = 2 * time.Second
	testMargin = time.Second
)

// testOptions numbers new allocs per service: web-1, web-2, ...
func testOptions() Options {
	seq := map[string]int{}
	return Options{LeaseTTL: testTTL, LossMargin: testMargin, NewID: func(svc string) string {
		seq[svc]++
		return fmt.Sprintf("%s-%d", svc, seq[svc])
	}}
}

// node is a live, eligible node with 4 CPUs and 4 GiB, and labels "k=v".
func node(name string, labels ...string) Node {
	n := Node{Name: name, Alive: true, Eligible: true, Capacity: Resources{CPUMillis: 4000, MemoryMB: 4096}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
	return n
}

func dead(n Node, lostAgo time.Duration) Node {
	n.Alive, n.LostAt = false, t0.Add(-lostAgo)
	return n
}

func draining(n Node) Node { n.Eligible = false; return n }

func withMem(n Node, mb int) Node { n.Capacity.MemoryMB = mb; return n }

func alloc(id, node, state string) Alloc {
	svc, _, _ := strings.Cut(id, "-")
	return Alloc{ID: id, Service: svc, Node: node, State: state, Generation: 1}
}

func running(id, node string) Alloc { return alloc(id, node, StateRunning) }

func sized(a Alloc, cpu, mb int) Alloc {
	a.Resources = Resources{CPUMillis: cpu, MemoryMB: mb}
	return a
}

func spec(count int, change ...func(*Workload)) Workload {
	w := Workload{Run: RunSpec{Command: []string{"/bin/app"}}, Count: count, Generation: 1}
	for _, c := range change {
		c(&w)
	}
	return w
}

func mem(mb int) func(*Workload) { return func(w *Workload) { w.Resources.MemoryMB = mb } }
func spreadBy(label string) func(*Workload) {
	return func(w *Workload) { w.Spread = label }
}
func constrained(cs ...Constraint) func(*Workload) {
	return func(w *Workload) { w.Constraints = cs }
}
func atMostOne(w *Workload) { w.OnNodeLoss = AtMostOne }

func web(count int, change ...func(*Workload)) map[string]Workload {
	return map[string]Workload{"web": spec(count, change...)}
}

func threeNodes() []Node { return []Node{node("n1"), node("n2"), node("n3")} }

func threeRunning() []Alloc {
	return []Alloc{running("web-a", "n1"), running("web-b", "n2"), running("web-c", "n3")}
}

type planCase struct {
	name   string
	specs  map[string]Workload
	nodes  []Node
	allocs []Alloc
	now    time.Time // t0 when zero

	place    []string // "svc@node", in order
	stop     []string // alloc IDs, sorted
	unplaced []string // "svc×N: reason" (reason: a prefix, or the whole text when exact)
	exact    bool     // unplaced reasons are whole texts
	retryAt  time.Time
	rounds   int // rounds of apply+plan until nothing changes (default 1)
}

func TestPlan(t *testing.T) {
	tests := []planCase{
		{
			name:  "from empty: one instance per node",
			specs: web(3), nodes: threeNodes(),
			place: []string{"web@n1", "web@n2", "web@n3"},
		},
		{
			name:  "more instances than nodes: a second on a node only once every node has one",
			specs: web(5), nodes: threeNodes(),
			place: []string{"web@n1", "web@n2", "web@n3", "web@n1", "web@n2"},
		},
		{
			name:   "already balanced: no changes",
			specs:  map[string]Workload{"web": spec(3), "api": spec(2)},
			nodes:  threeNodes(),
			allocs: append(threeRunning(), running("api-a", "n1"), alloc("api-b", "n2", StatePending)),
		},
		{
			name:  "scale up fills the emptiest nodes",
			specs: web(4), nodes: append(threeNodes(), node("n4")),
			allocs: threeRunning(),
			place:  []string{"web@n4"},
		},
		{
			name:  "spread over zones: one per zone before a second in any",
			specs: web(4, spreadBy("zone")),
			nodes: []Node{node("n1", "zone=a"), node("n2", "zone=a"), node("n3", "zone=b"), node("n4", "zone=c")},
			// a, b, c, then zone a again on its empty node n2
			place: []string{"web@n1", "web@n3", "web@n4", "web@n2"},
		},
		{
			name:   "spread over zones with instances already in zone a",
			specs:  web(3, spreadBy("zone")),
			nodes:  []Node{node("n1", "zone=a"), node("n2", "zone=a"), node("n3", "zone=b"), node("n4", "zone=b")},
			allocs: []Alloc{running("web-a", "n1"), running("web-b", "n2")},
			place:  []string{"web@n3"},
		},
		{
			name:  "nodes without the spread label are one group",
			specs: web(3, spreadBy("zone")),
			nodes: []Node{node("n1"), node("n2"), node("n3", "zone=a")},
			place: []string{"web@n1", "web@n3", "web@n2"},
		},
		{
			name:  "ties go to the least loaded node",
			specs: map[string]Workload{"web": spec(1, mem(100)), "db": spec(1, mem(1000), constrained("node=n1"))},
			nodes: []Node{node("n1"), node("n2")},
			allocs: []Alloc{
				sized(running("db-a", "n1"), 0, 1000),
			},
			place: []string{"web@n2"},
		},
		{
			name: "a node without enough memory is skipped; two share a node when no other fits",
			specs: map[string]Workload{
				"web": spec(2, mem(512)),
				"db":  spec(1, mem(900), constrained("node=n1")),
			},
			nodes:  []Node{withMem(node("n1"), 1024), withMem(node("n2"), 256), withMem(node("n3"), 2048)},
			allocs: []Alloc{sized(running("db-a", "n1"), 0, 900)},
			place:  []string{"web@n3", "web@n3"},
		},
		{
			name: "not enough memory anywhere: unplaced with each node's free memory",
			specs: map[string]Workload{
				"web": spec(5, mem(512)),
				"db":  spec(1, mem(900), constrained("node=n1")),
			},
			nodes:    []Node{withMem(node("n1"), 1024), withMem(node("n2"), 256), withMem(node("n3"), 2048)},
			allocs:   []Alloc{sized(running("db-a", "n1"), 0, 900)},
			place:    []string{"web@n3", "web@n3", "web@n3", "web@n3"},
			unplaced: []string{"web×1: no node has 512 MB free (3 nodes checked: n2 256 MB free, n1 124 MB free, n3 0 MB free)"},
			exact:    true,
		},
		{
			name:  "not enough CPU",
			specs: web(2, func(w *Workload) { w.Resources.CPUMillis = 3000 }),
			nodes: []Node{node("n1"), draining(node("n2"))},
			place: []string{"web@n1"},
			unplaced: []string{
				"web×1: no node has 3000 millicpu free (2 nodes checked: n1 1000 millicpu free, n2 draining)",
			},
			exact: true,
		},
		{
			name:  "a node that does not report capacity is not limited",
			specs: web(2, mem(1<<20)),
			nodes: []Node{{Name: "n1", Alive: true, Eligible: true}},
			place: []string{"web@n1", "web@n1"},
		},
		{
			name:   "a stopping instance still holds its memory",
			specs:  web(1, mem(512)),
			nodes:  []Node{withMem(node("n1"), 1024), withMem(node("n2"), 1024)},
			allocs: []Alloc{sized(alloc("old-a", "n1", StateStopping), 0, 800)},
			place:  []string{"web@n2"},
		},
		{
			name:  "constraint narrows the nodes",
			specs: web(2, constrained("zone!=a")),
			nodes: []Node{node("n1", "zone=a"), node("n2", "zone=b"), node("n3")},
			place: []string{"web@n2", "web@n3"},
		},
		{
			name:  "constraint excludes all nodes: the reason names it",
			specs: web(3, constrained("gpu", "zone=c")),
			nodes: []Node{node("n1", "zone=a", "gpu=t4"), node("n2", "zone=b", "gpu=t4"), draining(node("n3", "zone=c", "gpu=t4"))},
			unplaced: []string{
				`web×3: no node satisfies constraint "zone=c" (3 nodes checked: n1 fails "zone=c" (zone=a), n2 fails "zone=c" (zone=b), n3 draining)`,
			},
			exact: true,
		},
		{
			name:  "different nodes fail different constraints",
			specs: web(1, constrained("gpu", "zone=c")),
			nodes: []Node{node("n1", "zone=c"), node("n2", "gpu=t4")},
			unplaced: []string{
				`web×1: no node satisfies all of the constraints "gpu", "zone=c" (2 nodes checked: n1 fails "gpu" (no gpu), n2 fails "zone=c" (no zone))`,
			},
			exact: true,
		},
		{
			name:     "no nodes",
			specs:    web(2),
			unplaced: []string{"web×2: no nodes are known"},
			exact:    true,
		},
		{
			name:     "every node down or draining",
			specs:    web(1),
			nodes:    []Node{dead(node("n1"), time.Minute), draining(node("n2"))},
			unplaced: []string{"web×1: no node is alive and eligible (2 nodes checked: n2 draining, n1 down)"},
			exact:    true,
		},
		{
			name:   "scale down: stop on the most crowded node first",
			specs:  web(3),
			nodes:  threeNodes(),
			allocs: []Alloc{running("web-1", "n1"), running("web-2", "n1"), running("web-3", "n2"), running("web-4", "n2"), running("web-5", "n3")},
			stop:   []string{"web-2", "web-4"},
		},
		{
			name:  "scale down over zones: the crowded zone, then its most loaded node",
			specs: map[string]Workload{"web": spec(2, spreadBy("zone")), "db": spec(1, mem(2000), constrained("node=n2"))},
			nodes: []Node{node("n1", "zone=a"), node("n2", "zone=a"), node("n3", "zone=b")},
			allocs: []Alloc{
				running("web-1", "n1"), running("web-2", "n2"), running("web-3", "n3"),
				sized(running("db-1", "n2"), 0, 2000),
			},
			stop: []string{"web-2"},
		},
		{
			name:   "scale down prefers instances not started yet",
			specs:  web(1),
			nodes:  []Node{node("n1")},
			allocs: []Alloc{running("web-1", "n1"), alloc("web-2", "n1", StatePending), running("web-3", "n1")},
			stop:   []string{"web-2", "web-3"},
		},
		{
			name:   "scale to zero stops everything",
			specs:  web(0),
			nodes:  threeNodes(),
			allocs: threeRunning(),
			stop:   []string{"web-a", "web-b", "web-c"},
		},
		{
			name:   "service removed: its instances stop; stopping ones are left alone",
			specs:  map[string]Workload{},
			nodes:  threeNodes(),
			allocs: []Alloc{running("web-a", "n1"), alloc("web-b", "n2", StateStopping)},
			stop:   []string{"web-a"},
		},
		{
			name:   "node death, overlap: replaced at once",
			specs:  web(3),
			nodes:  []Node{node("n1"), dead(node("n2"), 100*time.Millisecond), node("n3"), node("n4")},
			allocs: threeRunning(),
			place:  []string{"web@n4"},
			stop:   []string{"web-b"},
		},
		{
			name:   "node death, overlap, no spare node: a second instance on a live node",
			specs:  web(3),
			nodes:  []Node{node("n1"), dead(node("n2"), 100*time.Millisecond), node("n3")},
			allocs: threeRunning(),
			place:  []string{"web@n1"},
			stop:   []string{"web-b"},
		},
		{
			name:   "node gone from the node list: lost",
			specs:  web(3),
			nodes:  []Node{node("n1"), node("n3"), node("n4")},
			allocs: threeRunning(),
			place:  []string{"web@n4"},
			stop:   []string{"web-b"},
		},
		{
			name:   "alloc marked lost on a live node is replaced",
			specs:  web(2),
			nodes:  []Node{node("n1"), node("n2"), node("n3")},
			allocs: []Alloc{running("web-a", "n1"), alloc("web-b", "n2", StateLost)},
			place:  []string{"web@n3"}, // n2 may still hold the lost one
			stop:   []string{"web-b"},
		},
		{
			name:     "node death, at_most_one, before the wait: held, nothing placed",
			specs:    web(3, atMostOne),
			nodes:    []Node{node("n1"), dead(node("n2"), testTTL+testMargin-time.Millisecond), node("n3"), node("n4")},
			allocs:   threeRunning(),
			unplaced: []string{"web×1: on_node_loss is at_most_one: waiting until 12:00:00.001Z, when lost node n2 has surely stopped it"},
			retryAt:  t0.Add(time.Millisecond),
		},
		{
			name:   "node death, at_most_one, after the wait: replaced",
			specs:  web(3, atMostOne),
			nodes:  []Node{node("n1"), dead(node("n2"), testTTL+testMargin), node("n3"), node("n4")},
			allocs: threeRunning(),
			place:  []string{"web@n4"},
			stop:   []string{"web-b"},
		},
		{
			name:   "at_most_one held instances go first on scale down",
			specs:  web(2, atMostOne),
			nodes:  []Node{node("n1"), dead(node("n2"), time.Millisecond), node("n3")},
			allocs: threeRunning(),
			stop:   []string{"web-b"},
		},
		{
			name:   "lost instance with no room for a replacement is kept for its node's return",
			specs:  web(2, mem(3000)),
			nodes:  []Node{node("n1"), dead(node("n2"), time.Minute)},
			allocs: []Alloc{sized(running("web-a", "n1"), 0, 3000), sized(running("web-b", "n2"), 0, 3000)},
			unplaced: []string{
				"web×1: no node has 3000 MB free (2 nodes checked: n1 1096 MB free, n2 down); meanwhile 1 still runs on a lost or draining node",
			},
			exact: true,
		},
		{
			name:   "draining node: nothing new, its instance replaced before it stops",
			specs:  web(3),
			nodes:  []Node{draining(node("n1")), node("n2"), node("n3"), node("n4")},
			allocs: threeRunning(),
			place:  []string{"web@n4"},
			rounds: 2, // the replacement runs, then web-a stops
		},
		{
			name:   "draining node: the replacement is still pending, keep the old one",
			specs:  web(3),
			nodes:  []Node{draining(node("n1")), node("n2"), node("n3"), node("n4")},
			allocs: append(threeRunning(), alloc("web-d", "n4", StatePending)),
			rounds: 2,
		},
		{
			name:   "draining node: the replacement runs, the old one stops",
			specs:  web(3),
			nodes:  []Node{draining(node("n1")), node("n2"), node("n3"), node("n4")},
			allocs: append(threeRunning(), running("web-d", "n4")),
			stop:   []string{"web-a"},
		},
		{
			name:   "draining node: the replacement shares a node when no other may take it",
			specs:  web(2, constrained("zone=a")),
			nodes:  []Node{draining(node("n1", "zone=a")), node("n2", "zone=a"), node("n3", "zone=b")},
			allocs: []Alloc{running("web-a", "n1"), running("web-b", "n2")},
			place:  []string{"web@n2"},
			rounds: 2,
		},
		{
			name:   "draining node: no room elsewhere, the instance stays",
			specs:  web(2, mem(3000)),
			nodes:  []Node{draining(node("n1")), node("n2")},
			allocs: []Alloc{sized(running("web-a", "n1"), 0, 3000), sized(running("web-b", "n2"), 0, 3000)},
			unplaced: []string{
				"web×1: no node has 3000 MB free (2 nodes checked: n2 1096 MB free, n1 draining); meanwhile 1 still runs on a lost or draining node",
			},
			exact: true,
		},
		{
			name:   "a failed instance is placed again, away from its node when another fits",
			specs:  web(3),
			nodes:  []Node{node("n1"), node("n2"), node("n3"), node("n4")},
			allocs: []Alloc{alloc("web-a", "n1", StateFailed), running("web-b", "n2"), running("web-c", "n3")},
			place:  []string{"web@n4"},
			stop:   []string{"web-a"},
		},
		{
			name:   "a failed instance goes back to its node when spreading wants it there",
			specs:  web(3),
			nodes:  threeNodes(),
			allocs: []Alloc{alloc("web-a", "n1", StateFailed), running("web-b", "n2"), running("web-c", "n3")},
			place:  []string{"web@n1"},
			stop:   []string{"web-a"},
		},
		{
			name:   "an unknown state counts as running",
			specs:  web(3),
			nodes:  threeNodes(),
			allocs: []Alloc{running("web-a", "n1"), running("web-b", "n2"), alloc("web-c", "n3", "restarting")},
		},
		{
			name:     "invalid spec: nothing changes, and it says why",
			specs:    web(3, func(w *Workload) { w.Ports = []PortSpec{{Name: "HTTP"}} }),
			nodes:    threeNodes(),
			allocs:   []Alloc{running("web-a", "n1")},
			unplaced: []string{`web×2: the spec is invalid, so nothing is changed: ports[0].name: "HTTP"`},
		},
		{
			name:   "a zero workload is not run by tandem",
			specs:  map[string]Workload{"web": {}},
			nodes:  threeNodes(),
			allocs: []Alloc{running("web-a", "n1")},
			stop:   []string{"web-a"},
		},
		{
			name:  "duplicate node records count once",
			specs: web(2),
			nodes: []Node{node("n1"), node("n1"), node("n2")},
			place: []string{"web@n1", "web@n2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runPlanCase(t, tt) })
	}
}

func runPlanCase(t *testing.T, tt planCase) {
	t.Helper()
	now := tt.now
	if now.IsZero() {
		now = t0
	}
	res := Plan(tt.specs, tt.nodes, tt.allocs, now, testOptions())

	var place []string
	for _, a := range res.Place {
		place = append(place, a.Service+"@"+a.Node)
		if a.State != StatePending || a.Generation != tt.specs[a.Service].Generation {
			t.Errorf("new alloc %+v: want state pending and the spec's generation", a)
		}
	}
	var stop []string
	for _, s := range res.Stop {
		stop = append(stop, s.ID)
		if s.Reason == "" {
			t.Errorf("stop %s without a reason", s.ID)
		}
	}
	if !slices.Equal(place, tt.place) {
		t.Errorf("place %v, want %v", place, tt.place)
	}
	if !slices.Equal(stop, tt.stop) {
		t.Errorf("stop %v, want %v (%+v)", stop, tt.stop, res.Stop)
	}
	if len(res.Unplaced) != len(tt.unplaced) {
		t.Errorf("unplaced %+v, want %v", res.Unplaced, tt.unplaced)
	} else {
		for i, u := range res.Unplaced {
			got := fmt.Sprintf("%s×%d: %s", u.Service, u.Count, u.Reason)
			if tt.exact && got != tt.unplaced[i] || !tt.exact && !strings.HasPrefix(got, tt.unplaced[i]) {
				t.Errorf("unplaced\n%s\nwant\n%s", got, tt.unplaced[i])
			}
		}
	}
	if !res.RetryAt.Equal(tt.retryAt) {
		t.Errorf("retry at %v, want %v", res.RetryAt, tt.retryAt)
	}
	if again := Plan(tt.specs, tt.nodes, tt.allocs, now, testOptions()); !reflect.DeepEqual(again, res) {
		t.Errorf("not deterministic:\n%+v\n%+v", res, again)
	}

	// Applying the result (new allocs start running) converges: after
	// tt.rounds rounds, planning again changes nothing.
	rounds := max(tt.rounds, 1)
	allocs := tt.allocs
	for r := 0; ; r++ {
		allocs = apply(allocs, res)
		checkCapacity(t, tt.nodes, allocs, res)
		res = Plan(tt.specs, tt.nodes, allocs, now, testOptions())
		if !res.Changes() {
			if r+1 != rounds {
				t.Errorf("settled after %d rounds, want %d", r+1, rounds)
			}
			return
		}
		if r+1 >= rounds {
			t.Fatalf("round %d still changes: place %+v, stop %+v", r+2, res.Place, res.Stop)
		}
	}
}

// apply carries out a plan the way the store loop would: stopped allocs
// go away, new ones are started.
func apply(allocs []Alloc, res Result) []Alloc {
	stopped := map[string]bool{}
	for _, s := range res.Stop {
		stopped[s.ID] = true
	}
	var out []Alloc
	for _, a := range allocs {
		if !stopped[a.ID] {
			if a.State == StatePending {
				a.State = StateRunning
			}
			out = append(out, a)
		}
	}
	for _, a := range res.Place {
		a.State = StateRunning
		out = append(out, a)
	}
	return out
}

// checkCapacity fails if a node that got a new alloc holds more than its
// capacity in a resource the new alloc asks for.
func checkCapacity(t *testing.T, nodes []Node, allocs []Alloc, res Result) {
	t.Helper()
	for _, n := range nodes {
		var used, asked Resources
		for _, a := range res.Place {
			if a.Node == n.Name {
				asked.CPUMillis += a.Resources.CPUMillis
				asked.MemoryMB += a.Resources.MemoryMB
			}
		}
		for _, a := range allocs {
			if a.Node == n.Name && a.State != StateFailed {
				used.CPUMillis += a.Resources.CPUMillis
				used.MemoryMB += a.Resources.MemoryMB
			}
		}
		c := n.Capacity
		if asked.CPUMillis > 0 && c.CPUMillis > 0 && used.CPUMillis > c.CPUMillis ||
			asked.MemoryMB > 0 && c.MemoryMB > 0 && used.MemoryMB > c.MemoryMB {
			t.Errorf("node %s holds %+v, capacity %+v", n.Name, used, c)
		}
	}
}

func TestPlanExplanationIsBounded(t *testing.T) {
	var nodes []Node
	for i := range 100 {
		nodes = append(nodes, withMem(node(fmt.Sprintf("node-%03d", i)), 100+i))
	}
	res := Plan(web(1, mem(512)), nodes, nil, t0, testOptions())
	if len(res.Unplaced) != 1 {
		t.Fatalf("unplaced %+v", res.Unplaced)
	}
	r := res.Unplaced[0].Reason
	want := "no node has 512 MB free (100 nodes checked: node-099 199 MB free, node-098 198 MB free, node-097 197 MB free, node-096 196 MB free, node-095 195 MB free, and 95 more)"
	if r != want {
		t.Fatalf("reason\n%s\nwant\n%s", r, want)
	}
}

func TestPlanDefaultIDs(t *testing.T) {
	res := Plan(web(2), threeNodes(), nil, t0, Options{})
	if len(res.Place) != 2 || res.Place[0].ID == res.Place[1].ID || !strings.HasPrefix(res.Place[0].ID, "web-") {
		t.Fatalf("placed %+v", res.Place)
	}
}

// TestPlanRandom plans random clusters to a fixed point and checks the
// rules that hold whatever the input.
func TestPlanRandom(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		nodes := randomNodes(rng)
		specs := randomSpecs(rng)
		allocs := randomAllocs(rng, nodes, specs)
		byName := map[string]Node{}
		for _, n := range nodes {
			if _, dup := byName[n.Name]; !dup {
				byName[n.Name] = n
			}
		}
		var res Result
		for round := 0; ; round++ {
			res = Plan(specs, nodes, allocs, t0, testOptions())
			for _, a := range res.Place {
				n := byName[a.Node]
				w := specs[a.Service]
				if !n.Alive || !n.Eligible {
					t.Fatalf("seed %d: placed on node %+v", seed, n)
				}
				for _, c := range w.Constraints {
					pc, _ := parseConstraint(string(c))
					if !pc.match(&n) {
						t.Fatalf("seed %d: placed %s on %s against %s", seed, a.Service, n.Name, c)
					}
				}
			}
			if !res.Changes() {
				break
			}
			if round == 3 {
				t.Fatalf("seed %d: no fixed point after 4 rounds: %+v", seed, res)
			}
			allocs = apply(allocs, res)
			checkCapacity(t, nodes, allocs, res)
		}
		// At the fixed point, a service with nothing unplaced runs count
		// instances on live, eligible nodes.
		unplaced := map[string]bool{}
		for _, u := range res.Unplaced {
			unplaced[u.Service] = true
		}
		for name, w := range specs {
			if unplaced[name] {
				continue
			}
			live := 0
			for _, a := range allocs {
				n := byName[a.Node]
				switch a.State {
				case StatePending, StateRunning:
					if a.Service == name && n.Alive && n.Eligible {
						live++
					}
				}
			}
			if live != w.Count {
				t.Fatalf("seed %d: %s runs %d of %d with nothing unplaced", seed, name, live, w.Count)
			}
		}
	}
}

func randomNodes(rng *rand.Rand) []Node {
	var nodes []Node
	for i := range 1 + rng.IntN(8) {
		n := node(fmt.Sprintf("n%d", i), "zone="+string(rune('a'+rng.IntN(3))))
		n.Capacity.MemoryMB = 512 * (1 + rng.IntN(8))
		switch rng.IntN(8) {
		case 0:
			n = dead(n, time.Duration(rng.IntN(5))*time.Second)
		case 1:
			n = draining(n)
		}
		if rng.IntN(4) == 0 {
			n.Labels["gpu"] = "t4"
		}
		nodes = append(nodes, n)
	}
	return nodes
}

func randomSpecs(rng *rand.Rand) map[string]Workload {
	specs := map[string]Workload{}
	for i := range 1 + rng.IntN(4) {
		w := spec(rng.IntN(6), mem(128*rng.IntN(4)))
		if rng.IntN(2) == 0 {
			w.Spread = "zone"
		}
		if rng.IntN(4) == 0 {
			w.Constraints = []Constraint{"gpu"}
		}
		if rng.IntN(3) == 0 {
			w.OnNodeLoss = AtMostOne
		}
		specs[fmt.Sprintf("s%d", i)] = w
	}
	return specs
}

func randomAllocs(rng *rand.Rand, nodes []Node, specs map[string]Workload) []Alloc {
	var allocs []Alloc
	states := []string{StatePending, StateRunning, StateRunning, StateFailed, StateLost, StateStopping}
	for i := range rng.IntN(12) {
		svc := fmt.Sprintf("s%d", rng.IntN(5)) // s4 may have no spec
		a := Alloc{ID: fmt.Sprintf("%s-x%d", svc, i), Service: svc, Node: fmt.Sprintf("n%d", rng.IntN(len(nodes)+1)), Generation: 1,
			State: states[rng.IntN(len(states))], Resources: specs[svc].Resources}
		allocs = append(allocs, a)
	}
	return allocs
}

// TestPlanNodeLossAndReturn follows one service through a node's death and
// return under each on_node_loss policy: the instance count never exceeds
// count on live nodes, and nothing moves when the node comes back.
func TestPlanNodeLossAndReturn(t *testing.T) {
	for _, policy := range []string{Overlap, AtMostOne} {
		t.Run(policy, func(t *testing.T) {
			specs := web(3, func(w *Workload) { w.OnNodeLoss = policy })
			nodes := []Node{node("n1"), node("n2"), node("n3"), node("n4")}
			opts := testOptions()
			step := func(now time.Time, allocs []Alloc) (Result, []Alloc) {
				t.Helper()
				res := Plan(specs, nodes, allocs, now, opts)
				return res, apply(allocs, res)
			}
			liveOn := func(allocs []Alloc) []string {
				var out []string
				for _, a := range allocs {
					out = append(out, a.Node)
				}
				slices.Sort(out)
				return out
			}

			_, allocs := step(t0, nil)
			if got := liveOn(allocs); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
				t.Fatalf("placed on %v", got)
			}

			// n2 stops renewing its lease at t0+10s; the store sees it lost at t0+12s.
			lostAt := t0.Add(10 * time.Second)
			nodes[1] = Node{Name: "n2", Capacity: nodes[1].Capacity, Eligible: true, LostAt: lostAt}
			seen := lostAt.Add(testTTL)
			res, allocs := step(seen, allocs)
			if policy == AtMostOne {
				if res.Changes() || res.RetryAt != lostAt.Add(testTTL+testMargin) || len(res.Unplaced) != 1 {
					t.Fatalf("at_most_one acted before the wait ended: %+v", res)
				}
				res, allocs = step(res.RetryAt, allocs)
			}
			if len(res.Place) != 1 || res.Place[0].Node != "n4" || len(res.Stop) != 1 || res.Stop[0].Node != "n2" {
				t.Fatalf("replacement: %+v", res)
			}
			if got := liveOn(allocs); !slices.Equal(got, []string{"n1", "n3", "n4"}) {
				t.Fatalf("after the loss, instances on %v", got)
			}

			// n2 comes back: it holds no alloc any more, and nothing moves.
			nodes[1] = node("n2")
			if res, _ := step(seen.Add(time.Minute), allocs); res.Changes() || len(res.Unplaced) > 0 {
				t.Fatalf("after the return: %+v", res)
			}
		})
	}
}
