package scheduler

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rollSim runs Plan step by step as the loop around it would: plan at now,
// apply the result (stopped allocs go away; new and pending ones start
// and, unless start says otherwise, pass their checks from then on).
type rollSim struct {
	t      *testing.T
	specs  map[string]Workload
	nodes  []Node
	allocs []Alloc
	now    time.Time
	opts   Options
	// start turns a newly placed alloc into what its node makes of it.
	start func(s *rollSim, a *Alloc)
}

func newRollSim(t *testing.T, specs map[string]Workload, nodes []Node, allocs []Alloc) *rollSim {
	return &rollSim{t: t, specs: specs, nodes: nodes, allocs: allocs, now: t0, opts: testOptions(),
		start: func(s *rollSim, a *Alloc) { a.State, a.HealthySince = StateRunning, s.now }}
}

// step plans at now + after, applies the result and returns it.
func (s *rollSim) step(after time.Duration) Result {
	s.t.Helper()
	s.now = s.now.Add(after)
	res := Plan(s.specs, s.nodes, s.allocs, s.now, s.opts)
	stopped := map[string]bool{}
	for _, st := range res.Stop {
		stopped[st.ID] = true
	}
	s.allocs = slices.DeleteFunc(s.allocs, func(a Alloc) bool { return stopped[a.ID] })
	for i := range s.allocs {
		if s.allocs[i].State == StatePending {
			s.start(s, &s.allocs[i])
		}
	}
	for _, a := range res.Place {
		s.start(s, &a)
		s.allocs = append(s.allocs, a)
	}
	checkCapacity(s.t, s.nodes, s.allocs, res)
	return res
}

// gen returns the allocs of service svc by generation: "1:web-a@n1".
func (s *rollSim) gens(svc string) []string {
	var out []string
	for _, a := range s.allocs {
		if a.Service == svc {
			out = append(out, fmt.Sprintf("%d:%s@%s", a.Generation, a.ID, a.Node))
		}
	}
	slices.Sort(out)
	return out
}

// healthyOld is a running instance of generation 1 that passes its checks
// since long ago.
func healthyOld(id, node string) Alloc {
	a := running(id, node)
	a.HealthySince = t0.Add(-time.Hour)
	return a
}

func threeOld() []Alloc {
	return []Alloc{healthyOld("web-a", "n1"), healthyOld("web-b", "n2"), healthyOld("web-c", "n3")}
}

// gen2 is the spec changed to generation 2.
func gen2(w *Workload) { w.Generation = 2; w.Run.Env = map[string]string{"V": "2"} }

func parallel(n int) func(*Workload) { return func(w *Workload) { w.Update.MaxParallel = n } }

// rollStep is one plan of a rolling update, after some time.
type rollStep struct {
	do       func(s *rollSim) // a change before the plan
	after    time.Duration
	place    []string // "svc@node", in order
	stop     []string // "ID: reason prefix", sorted by ID
	stuck    string   // "svc g2: reason prefix"
	unplaced []string // "svc×N: reason prefix"
	retry    time.Duration
}

func (s *rollSim) expect(i int, want rollStep) {
	s.t.Helper()
	if want.do != nil {
		want.do(s)
	}
	res := s.step(want.after)
	var place, stop, stuck, unplaced []string
	for _, a := range res.Place {
		place = append(place, a.Service+"@"+a.Node)
		if a.Generation != s.specs[a.Service].Generation || a.State != StatePending {
			s.t.Errorf("step %d: placed %+v, want the spec's generation and state pending", i, a)
		}
	}
	for _, st := range res.Stop {
		stop = append(stop, st.ID+": "+st.Reason)
	}
	for _, x := range res.Stuck {
		stuck = append(stuck, fmt.Sprintf("%s g%d: %s", x.Service, x.Generation, x.Reason))
	}
	for _, u := range res.Unplaced {
		unplaced = append(unplaced, fmt.Sprintf("%s×%d: %s", u.Service, u.Count, u.Reason))
	}
	if !slices.Equal(place, want.place) {
		s.t.Errorf("step %d: place %v, want %v", i, place, want.place)
	}
	if !prefixes(stop, want.stop) {
		s.t.Errorf("step %d: stop\n%s\nwant\n%s", i, strings.Join(stop, "\n"), strings.Join(want.stop, "\n"))
	}
	var wantStuck []string
	if want.stuck != "" {
		wantStuck = []string{want.stuck}
	}
	if !prefixes(stuck, wantStuck) {
		s.t.Errorf("step %d: stuck %q, want %q", i, stuck, wantStuck)
	}
	if !prefixes(unplaced, want.unplaced) {
		s.t.Errorf("step %d: unplaced %q, want %q", i, unplaced, want.unplaced)
	}
	var retry time.Duration
	if !res.RetryAt.IsZero() {
		retry = res.RetryAt.Sub(s.now)
	}
	if retry != want.retry {
		s.t.Errorf("step %d: retry in %v, want %v", i, retry, want.retry)
	}
}

func prefixes(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

const minH = DefaultMinHealthy

func TestRollingUpdate(t *testing.T) {
	type rollCase struct {
		name   string
		specs  map[string]Workload
		nodes  []Node
		allocs []Alloc
		start  func(s *rollSim, a *Alloc)
		limit  time.Duration // Options.HealthyDeadline
		steps  []rollStep
		final  []string // the service web's allocs at the end, as rollSim.gens
	}
	neverHealthy := func(s *rollSim, a *Alloc) { a.State = StateRunning }
	tests := []rollCase{
		{
			name:  "3 old replaced one at a time, add before remove; api, all new, left alone",
			specs: map[string]Workload{"web": spec(3, gen2), "api": spec(2)},
			nodes: threeNodes(),
			allocs: append(threeOld(), running("api-a", "n1"), running("api-b", "n2"),
				alloc("api-c", "n3", StateStopping)),
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{after: minH / 2, retry: minH / 2},
				{after: minH / 2, place: []string{"web@n2"}, stop: []string{"web-a: replaced by generation 2 (1 of 3 new instances healthy for 2s)"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced by generation 2 (2 of 3"}},
				{after: minH, stop: []string{"web-c: replaced by generation 2 (3 of 3"}},
				{after: time.Hour},
			},
			final: []string{"2:web-1@n1", "2:web-2@n2", "2:web-3@n3"},
		},
		{
			name:  "max_parallel 2",
			specs: web(3, gen2, parallel(2)), nodes: threeNodes(), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n1", "web@n2"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-a: replaced", "web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: time.Hour},
			},
			final: []string{"2:web-1@n1", "2:web-2@n2", "2:web-3@n3"},
		},
		{
			name:  "the new instance's node becomes healthy late: the wait starts then",
			specs: web(2, gen2), nodes: threeNodes(), allocs: threeOld()[:2],
			start: neverHealthy,
			steps: []rollStep{
				{place: []string{"web@n3"}},
				{after: time.Minute},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "2:web-1@n3"},
		},
		{
			name:  "a new instance that never becomes healthy: no old one is stopped, ever",
			specs: web(3, gen2), nodes: threeNodes(), allocs: threeOld(),
			start: neverHealthy,
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{after: minH},
				{after: time.Minute},
				{after: time.Hour},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "1:web-c@n3", "2:web-1@n1"},
		},
		{
			name:  "with a deadline, a new instance that never becomes healthy makes the update stuck",
			specs: web(3, gen2), nodes: threeNodes(), allocs: threeOld(),
			start: neverHealthy, limit: time.Minute,
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{after: minH, retry: time.Minute - minH},
				{after: time.Minute - minH, stuck: "web g2: the update to generation 2 is stuck: 1 new instance not healthy for 2s within 1m0s of placement (web-1 on n1); the old"},
				// Generation 2 is old now: one too many, and the first to go.
				{do: rollBack, place: []string{"web@n2"}, stop: []string{"web-1: scaled down to 3 during the update to generation 3"}},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "1:web-c@n3", "3:web-2@n2"},
		},
		{
			name:  "with a deadline, an update that makes it in time is not stuck",
			specs: web(2, gen2), nodes: threeNodes(), allocs: threeOld()[:2],
			limit: minH,
			steps: []rollStep{
				{place: []string{"web@n3"}},
				{after: minH, place: []string{"web@n1"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-a: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-1@n3", "2:web-2@n1"},
		},
		{
			name:  "new instances fail: stuck, no old one stopped, nothing placed",
			specs: web(3, gen2, parallel(2)), nodes: threeNodes(), allocs: threeOld(),
			start: func(s *rollSim, a *Alloc) { a.State = StateFailed },
			steps: []rollStep{
				{place: []string{"web@n1", "web@n2"}},
				{after: minH, stuck: "web g2: the update to generation 2 is stuck: 2 new instances failed (web-1 on n1, web-2 on n2); the old instances keep running"},
				{after: time.Hour, stuck: "web g2: the update to generation 2 is stuck"},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "1:web-c@n3", "2:web-1@n1", "2:web-2@n2"},
		},
		{
			name:  "no room beside the old instances: unplaced, nothing stopped",
			specs: web(2, gen2, mem(3000)), nodes: []Node{node("n1"), node("n2")},
			allocs: []Alloc{sized(healthyOld("web-a", "n1"), 0, 3000), sized(healthyOld("web-b", "n2"), 0, 3000)},
			steps: []rollStep{
				{unplaced: []string{"web×1: the update to generation 2 needs room for 1 more instance beside the old ones: no node has 3000 MB free (2 nodes checked: n1 1096 MB free, n2 1096 MB free)"}},
				{after: time.Minute, unplaced: []string{"web×1: the update to generation 2 needs room"}},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2"},
		},
		{
			name:   "spread over zones: the new generation ends up spread",
			specs:  web(3, gen2, spreadBy("zone")),
			nodes:  []Node{node("n1", "zone=a"), node("n2", "zone=a"), node("n3", "zone=b"), node("n4", "zone=c")},
			allocs: []Alloc{healthyOld("web-a", "n1"), healthyOld("web-b", "n3"), healthyOld("web-c", "n4")},
			steps: []rollStep{
				{place: []string{"web@n2"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-a: replaced"}},
				{after: minH, place: []string{"web@n4"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-1@n2", "2:web-2@n3", "2:web-3@n4"},
		},
		{
			name:  "max_parallel 2, one new instance fails: stuck, the healthy one replaces nothing",
			specs: web(3, gen2, parallel(2)), nodes: threeNodes(), allocs: threeOld(),
			start: failFirst(),
			steps: []rollStep{
				{place: []string{"web@n1", "web@n2"}},
				{after: minH, stuck: "web g2: the update to generation 2 is stuck: 1 new instance failed (web-1 on n1)"},
				{after: time.Hour, stuck: "web g2: "},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "1:web-c@n3", "2:web-1@n1", "2:web-2@n2"},
		},
		{
			name:  "stuck, then rolled back as generation 3: the failed ones go, every instance is replaced",
			specs: web(3, gen2), nodes: threeNodes(), allocs: threeOld(),
			start: failFirst(),
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{after: minH, stuck: "web g2: "},
				// Away from n1, where generation 2 failed.
				{do: rollBack, place: []string{"web@n2"}, stop: []string{"web-1: it failed on node n1"}},
				{after: minH, place: []string{"web@n1"}, stop: []string{"web-b: replaced by generation 3"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-a: replaced by generation 3"}},
				{after: minH, stop: []string{"web-c: replaced by generation 3"}},
				{after: minH},
			},
			final: []string{"3:web-2@n2", "3:web-3@n1", "3:web-4@n3"},
		},
		{
			name:  "the node of an old instance dies mid-update: replaced at once by the new generation",
			specs: web(3, gen2), nodes: append(threeNodes(), node("n4")), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				{after: minH, place: []string{"web@n1"}, stop: []string{"web-c: replaced"}},
				// web-2, placed to replace an old one, stands in for web-b.
				{do: kill("n2"), stop: []string{"web-b: node n2 is lost"}, retry: minH},
				{after: minH, place: []string{"web@n3"}},
				{after: minH, stop: []string{"web-a: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-1@n4", "2:web-2@n1", "2:web-3@n3"},
		},
		{
			name:  "at_most_one: the new instance's node dies: it is held, the old ones keep running",
			specs: web(3, gen2, atMostOne), nodes: append(threeNodes(), node("n4")), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				// n4 is lost at t0; its instance is held until t0 + TTL + margin.
				{do: kill("n4"), after: minH, unplaced: []string{"web×1: on_node_loss is at_most_one: waiting until 12:00:03.000Z"}, retry: testTTL + testMargin - minH},
				{after: testTTL + testMargin - minH, place: []string{"web@n1"}, stop: []string{"web-1: node n4 is lost and has surely stopped it"}},
				{after: minH, place: []string{"web@n2"}, stop: []string{"web-a: replaced"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-2@n1", "2:web-3@n2", "2:web-4@n3"},
		},
		{
			name:  "the node of the new instance dies mid-update: placed again, no old one stopped",
			specs: web(3, gen2), nodes: append(threeNodes(), node("n4")), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				{do: kill("n4"), after: minH / 2, place: []string{"web@n1"}, stop: []string{"web-1: node n4 is lost"}},
				{after: minH, place: []string{"web@n2"}, stop: []string{"web-a: replaced"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-2@n1", "2:web-3@n2", "2:web-4@n3"},
		},
		{
			name:  "scaled up mid-update: the new instances are placed at once, of the new generation",
			specs: web(3, gen2), nodes: append(threeNodes(), node("n4"), node("n5")), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				// 3 old and 2 new make 5.
				{do: scale(5), place: []string{"web@n5"}, retry: minH},
				{after: minH, place: []string{"web@n1"}},
				{after: minH, place: []string{"web@n2"}, stop: []string{"web-a: replaced by generation 2 (3 of 5"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced by generation 2 (4 of 5"}},
				{after: minH, stop: []string{"web-c: replaced by generation 2 (5 of 5"}},
				{after: minH},
			},
			final: []string{"2:web-1@n4", "2:web-2@n5", "2:web-3@n1", "2:web-4@n2", "2:web-5@n3"},
		},
		{
			name:  "scaled down mid-update: old instances past count stop at once",
			specs: web(3, gen2), nodes: threeNodes(), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{do: scale(1), stop: []string{"web-a: scaled down to 1 during the update to generation 2", "web-c: scaled down"}, retry: minH},
				{after: minH, stop: []string{"web-b: replaced by generation 2 (1 of 1"}},
				{after: minH},
			},
			final: []string{"2:web-1@n1"},
		},
		{
			name:  "stuck, and an old instance's node dies: not replaced by the failing generation",
			specs: web(3, gen2), nodes: append(threeNodes(), node("n4")), allocs: threeOld(),
			start: failFirst(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				{do: kill("n2"), stuck: "web g2: ", unplaced: []string{
					"web×1: the update to generation 2 is stuck: 1 new instance failed (web-1 on n4); the old instances keep running and nothing new is placed until the update is rolled back or a new spec is deployed; meanwhile 1 still runs on a lost or draining node",
				}},
			},
			final: []string{"1:web-a@n1", "1:web-b@n2", "1:web-c@n3", "2:web-1@n4"},
		},
		{
			name:  "a new instance stops passing its checks: no more old ones stop until it passes again for min_healthy",
			specs: web(3, gen2), nodes: threeNodes(), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n1"}},
				{after: minH, place: []string{"web@n2"}, stop: []string{"web-a: replaced"}},
				{do: sick("web-1"), after: minH},
				{do: cured("web-1"), retry: minH},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-1@n1", "2:web-2@n2", "2:web-3@n3"},
		},
		{
			name:  "a node drains mid-update: its old instance is replaced by the new generation once that runs",
			specs: web(3, gen2), nodes: append(threeNodes(), node("n4")), allocs: threeOld(),
			steps: []rollStep{
				{place: []string{"web@n4"}},
				// web-1, placed to replace an old one, stands in for web-a.
				{do: drain("n1"), stop: []string{"web-a: node n1 is draining and 3 instances run elsewhere"}, retry: minH},
				{after: minH, place: []string{"web@n2"}},
				{after: minH, place: []string{"web@n3"}, stop: []string{"web-b: replaced"}},
				{after: minH, stop: []string{"web-c: replaced"}},
				{after: minH},
			},
			final: []string{"2:web-1@n4", "2:web-2@n2", "2:web-3@n3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRollSim(t, tt.specs, tt.nodes, tt.allocs)
			if tt.start != nil {
				s.start = tt.start
			}
			s.opts.HealthyDeadline = tt.limit
			for i, st := range tt.steps {
				s.expect(i, st)
			}
			if got := s.gens("web"); !slices.Equal(got, tt.final) {
				t.Errorf("at the end: %v, want %v", got, tt.final)
			}
			others := func(list []Alloc) []Alloc {
				return slices.DeleteFunc(slices.Clone(list), func(a Alloc) bool { return a.Service == "web" })
			}
			if got, want := others(s.allocs), others(tt.allocs); !slices.Equal(got, want) {
				t.Errorf("other services changed: %+v, want %+v", got, want)
			}
		})
	}
}

// failFirst starts new allocs healthy, except the first, which fails.
func failFirst() func(s *rollSim, a *Alloc) {
	n := 0
	return func(s *rollSim, a *Alloc) {
		n++
		if n == 1 {
			a.State = StateFailed
			return
		}
		a.State, a.HealthySince = StateRunning, s.now
	}
}

// rollBack writes the spec of generation 1 again, as generation 3.
func rollBack(s *rollSim) {
	w := s.specs["web"]
	w.Generation, w.Run.Env = 3, nil
	s.specs = map[string]Workload{"web": w}
}

// onNode changes node name.
func onNode(name string, change func(s *rollSim, n *Node)) func(s *rollSim) {
	return func(s *rollSim) {
		for i := range s.nodes {
			if s.nodes[i].Name == name {
				change(s, &s.nodes[i])
			}
		}
	}
}

func kill(name string) func(s *rollSim) {
	return onNode(name, func(s *rollSim, n *Node) { n.Alive, n.LostAt = false, s.now })
}

func drain(name string) func(s *rollSim) {
	return onNode(name, func(_ *rollSim, n *Node) { n.Eligible = false })
}

func scale(n int) func(s *rollSim) {
	return func(s *rollSim) {
		w := s.specs["web"]
		w.Count = n
		s.specs = map[string]Workload{"web": w}
	}
}

// TestRollingUpdateRandom rolls random clusters from generation 1 to 2 and
// checks what holds whatever the input: no plan that replaces an old
// instance leaves fewer than count instances serving (running and passing
// their checks, for min_healthy if new) if count served before; no more
// than count + max_parallel instances run once that many ran; and the
// update ends with count instances of generation 2 (and old ones beside
// them only while a new one does not pass its checks). Most new instances
// pass their checks once started, some never do, some fail; a node may
// die and a service may be scaled on the way.
func TestRollingUpdateRandom(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 2))
		var nodes []Node
		for _, n := range randomNodes(rng) {
			n.Eligible = true // a drain stops instances that run, healthy or not
			nodes = append(nodes, n)
		}
		specs := randomSpecs(rng)
		for _, name := range slices.Sorted(maps.Keys(specs)) {
			w := specs[name]
			w.Generation = 2
			w.Update.MaxParallel = 1 + rng.IntN(3)
			specs[name] = w
		}
		allocs := randomAllocs(rng, nodes, specs)
		for i := range allocs {
			allocs[i].Generation = 1 + rng.Int64N(2)
			if rng.IntN(2) == 0 {
				allocs[i].HealthySince = t0.Add(-time.Duration(rng.IntN(4)) * time.Second)
			}
		}
		s := newRollSim(t, specs, nodes, allocs)
		if rng.IntN(2) == 0 {
			s.opts.HealthyDeadline = 5 * DefaultMinHealthy
		}
		// Most new instances pass their checks once started; some never
		// do, some fail.
		s.start = func(s *rollSim, a *Alloc) {
			a.State = StateRunning
			switch rng.IntN(20) {
			case 0:
			case 1:
				a.State = StateFailed
			default:
				a.HealthySince = s.now
			}
		}
		alive := map[string]bool{}
		for _, n := range nodes {
			alive[n.Name] = alive[n.Name] || n.Alive
		}
		victim, killAt := nodes[rng.IntN(len(nodes))].Name, rng.IntN(8)
		rescaled, scaleAt := "s"+strconv.Itoa(rng.IntN(4)), rng.IntN(8)
		serves := func(a Alloc) bool {
			w := specs[a.Service]
			if !alive[a.Node] || a.State != StateRunning || a.HealthySince.IsZero() {
				return false
			}
			return a.Generation < w.Generation || !s.now.Before(a.HealthySince.Add(DefaultMinHealthy))
		}
		count := func(list []Alloc, svc string, f func(Alloc) bool) int {
			n := 0
			for _, a := range list {
				if a.Service == svc && f(a) {
					n++
				}
			}
			return n
		}
		runs := func(a Alloc) bool { return alive[a.Node] && (a.State == StatePending || a.State == StateRunning) }
		capped := map[string]bool{}
		var res Result
		for round := 0; ; round++ {
			if round == killAt {
				kill(victim)(s)
				alive[victim] = false
			}
			if w, ok := specs[rescaled]; ok && round == scaleAt {
				w.Count = rng.IntN(6)
				specs[rescaled] = w
			}
			before := slices.Clone(s.allocs)
			res = s.step(DefaultMinHealthy)
			for name, w := range specs {
				stopped := map[string]bool{}
				for _, st := range res.Stop {
					stopped[st.ID] = true
				}
				was := count(before, name, serves)
				still := count(before, name, func(a Alloc) bool { return serves(a) && !stopped[a.ID] })
				replaced := slices.ContainsFunc(res.Stop, func(st Stop) bool {
					return st.Service == name && strings.HasPrefix(st.Reason, "replaced by generation")
				})
				if replaced && still < min(was, w.Count) {
					t.Fatalf("seed %d round %d: %s: %d instances served, %d still do after stops %+v", seed, round, name, was, still, res.Stop)
				}
				n := count(s.allocs, name, runs)
				if n <= w.Count+w.Update.MaxParallel {
					capped[name] = true
				} else if capped[name] {
					t.Fatalf("seed %d round %d: %s runs %d instances, count %d, max_parallel %d", seed, round, name, n, w.Count, w.Update.MaxParallel)
				}
			}
			if !res.Changes() && res.RetryAt.IsZero() && slices.Equal(before, s.allocs) {
				break
			}
			if round == 40 {
				t.Fatalf("seed %d: no fixed point after 40 rounds: %+v", seed, res)
			}
		}
		unplaced := map[string]bool{}
		for _, u := range res.Unplaced {
			unplaced[u.Service] = true
		}
		for _, x := range res.Stuck {
			unplaced[x.Service] = true
		}
		for name, w := range specs {
			if unplaced[name] {
				continue
			}
			n := count(s.allocs, name, func(a Alloc) bool { return runs(a) && a.Generation == 2 })
			old := count(s.allocs, name, func(a Alloc) bool { return runs(a) && a.Generation != 2 })
			// A new instance that never passes its checks holds the update.
			sick := count(s.allocs, name, func(a Alloc) bool { return runs(a) && a.Generation == 2 && !serves(a) })
			if n+old < w.Count || sick == 0 && (n != w.Count || old > 0) {
				t.Fatalf("seed %d: %s runs %d new (%d not healthy) and %d old instances, count %d, with nothing unplaced or stuck: %v",
					seed, name, n, sick, old, w.Count, s.gens(name))
			}
		}
	}
}

// sick makes alloc id fail its checks; cured makes it pass them from now.
func sick(id string) func(s *rollSim) {
	return func(s *rollSim) { s.setHealthy(id, time.Time{}) }
}

func cured(id string) func(s *rollSim) {
	return func(s *rollSim) { s.setHealthy(id, s.now) }
}

func (s *rollSim) setHealthy(id string, since time.Time) {
	for i := range s.allocs {
		if s.allocs[i].ID == id {
			s.allocs[i].HealthySince = since
		}
	}
}
