package scheduler

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Alloc states, as the node that runs an alloc (or the scheduler) sets them.
const (
	// StatePending: placed; its node has not started it yet.
	StatePending = "pending"
	// StateRunning: its node started it.
	StateRunning = "running"
	// StateFailed: its node gave up restarting it and hands it back to the
	// scheduler, which places it again (elsewhere if another node fits).
	StateFailed = "failed"
	// StateLost: its node was lost. An alloc on a node that is not alive
	// is treated as lost whatever its state says.
	StateLost = "lost"
	// StateStopping: being stopped. It no longer counts as an instance but
	// still holds its resources on its node.
	StateStopping = "stopping"
)

// Node is a node as the scheduler sees it.
type Node struct {
	Name string
	// Labels from tandem agent --label. The label "node" is always Name.
	Labels map[string]string
	// Capacity is what the node offers to instances. A zero field is not
	// limited (the node did not report it).
	Capacity Resources
	// Eligible is false while the node drains: it gets nothing new, and
	// its instances move away (add before remove).
	Eligible bool
	// Alive is true while the node's lease is live.
	Alive bool
	// LostAt is the latest time the node's lease can have been renewed
	// (for a node that is not alive); at_most_one instances wait for
	// LostAt + lease TTL + margin before they are replaced.
	LostAt time.Time
}

// Alloc is one placed instance of a service: what a node must run.
type Alloc struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Node    string `json:"node"`
	// Generation of the spec the instance runs.
	Generation int64 `json:"generation"`
	// State is one of the State constants. An unknown state counts as
	// running, so a newer node's state never causes a duplicate.
	State string `json:"state"`
	// Resources the instance reserves on its node.
	Resources Resources `json:"resources,omitzero"`
	// HealthySince is since when the instance has passed its checks
	// without a break; zero while it does not pass (or is not known to).
	// The loop around Plan fills it from the catalog before each plan.
	// A rolling update waits for it; otherwise it only chooses, between
	// equals, which instance stops first.
	HealthySince time.Time `json:"healthy_since,omitzero"`
	// PlacedAt is when Plan placed the instance (the now of that plan).
	// A rolling update gives a new instance Options.HealthyDeadline from
	// then to become healthy.
	PlacedAt time.Time `json:"placed_at,omitzero"`
}

// Stop is an alloc to stop, and why.
type Stop struct {
	Alloc
	Reason string `json:"reason"`
}

// Unplaced is a number of a service's instances that are not running where
// they should, and why (no node fits, or a wait for a lost node).
type Unplaced struct {
	Service string `json:"service"`
	Count   int    `json:"count"`
	Reason  string `json:"reason"`
}

// Result is what Plan decides: allocs to add (state pending) and allocs to
// stop. Applying all of it, then planning again on the same nodes, gives
// no changes.
type Result struct {
	Place    []Alloc    `json:"place,omitempty"`
	Stop     []Stop     `json:"stop,omitempty"`
	Unplaced []Unplaced `json:"unplaced,omitempty"`
	// RetryAt, when not zero, is when a wait ends (an at_most_one
	// instance of a lost node may be replaced then, or a new instance of
	// a rolling update will have been healthy for min_healthy, or reaches
	// Options.HealthyDeadline): plan again at that time even if nothing
	// else changes.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Stuck lists the rolling updates that cannot progress: instances of
	// the new generation failed (or were late: Options.HealthyDeadline).
	// Plan stops no more old instances of such a service and places none
	// of the new generation; the loop around it rolls back (writes the
	// previous spec as a new generation) when the spec's
	// update.auto_rollback is on.
	Stuck []UpdateStuck `json:"stuck,omitempty"`
}

// UpdateStuck says that the rolling update of a service to a generation
// cannot progress, and why.
type UpdateStuck struct {
	Service    string `json:"service"`
	Generation int64  `json:"generation"`
	// Failed is how many instances of the generation failed (were handed
	// back by their node after crashing too often).
	Failed int `json:"failed"`
	// Late is how many were not healthy for update.min_healthy within
	// Options.HealthyDeadline of their placement.
	Late   int    `json:"late,omitempty"`
	Reason string `json:"reason"`
}

// Changes reports whether the result adds or stops anything.
func (r *Result) Changes() bool { return len(r.Place) > 0 || len(r.Stop) > 0 }

// Options are the settings of Plan.
type Options struct {
	// LeaseTTL is the node lease's TTL.
	LeaseTTL time.Duration
	// LossMargin is added to LeaseTTL past a lost node's last renewal
	// before its at_most_one instances are replaced: time for the node
	// to notice it lost its lease and stop them, and for clock skew.
	LossMargin time.Duration
	// NewID returns the ID of a new alloc of service; it must never
	// repeat. The default is "<service>-" and 16 random hex digits.
	NewID func(service string) string
	// HealthyDeadline is how long a new instance of a rolling update has,
	// from its placement, to pass its checks for update.min_healthy; one
	// that has not by then makes the update stuck, as a failed one does.
	// Zero gives no deadline: the update waits as long as it takes.
	HealthyDeadline time.Duration
}

func randomID(service string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return service + "-" + hex.EncodeToString(b[:])
}

// Plan decides, from the services' workloads (by service name), the nodes
// and the current allocs, which allocs to add and which to stop. It is a
// pure function: the same input gives the same result (given a
// deterministic NewID). See the package doc for the rules.
//
// Nodes must include the nodes that are not alive but still hold allocs,
// with their LostAt; an alloc on a node Plan does not know is treated as
// lost long ago.
func Plan(specs map[string]Workload, nodes []Node, allocs []Alloc, now time.Time, opts Options) Result {
	p := newPlanner(nodes, allocs, now, opts)
	byService := map[string][]Alloc{}
	for _, a := range allocs {
		byService[a.Service] = append(byService[a.Service], a)
	}
	names := slices.Collect(maps.Keys(byService))
	for name := range specs {
		if _, ok := byService[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		list := byService[name]
		slices.SortFunc(list, func(a, b Alloc) int { return strings.Compare(a.ID, b.ID) })
		w, ok := specs[name]
		switch {
		case !ok:
			p.stopAll(list, "the service was removed")
		case w.IsZero():
			p.stopAll(list, "the service is no longer run by tandem")
		default:
			p.service(name, w, list)
		}
	}
	slices.SortStableFunc(p.res.Stop, func(a, b Stop) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.ID, b.ID))
	})
	return p.res
}

// planner holds the state of one Plan call. Nodes are addressed by their
// index in the name-sorted node list.
type planner struct {
	opts   Options
	now    time.Time
	nodes  []Node
	index  map[string]int
	used   []Resources // reserved on each node by all its allocs
	allocs []int       // allocs on each node, all services
	spread map[string]*spreadIndex
	res    Result

	// Scratch for the service being planned.
	svc      []int  // its instances on each node
	spreadN  []int  // its instances on each spread value
	failedOn []bool // nodes where one of its instances failed
}

// spreadIndex maps nodes to the values of one label. Nodes without the
// label share the value "".
type spreadIndex struct {
	of     []int    // node index -> value index
	values []string // value index -> value
}

// placed is a live alloc with its node's index.
type placed struct {
	Alloc
	ni int
}

func newPlanner(nodes []Node, allocs []Alloc, now time.Time, opts Options) *planner {
	if opts.NewID == nil {
		opts.NewID = randomID
	}
	sorted := slices.Clone(nodes)
	slices.SortStableFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	sorted = slices.CompactFunc(sorted, func(a, b Node) bool { return a.Name == b.Name })
	p := &planner{
		opts:     opts,
		now:      now,
		nodes:    sorted,
		index:    make(map[string]int, len(sorted)),
		used:     make([]Resources, len(sorted)),
		allocs:   make([]int, len(sorted)),
		spread:   map[string]*spreadIndex{},
		svc:      make([]int, len(sorted)),
		failedOn: make([]bool, len(sorted)),
	}
	for i, n := range sorted {
		p.index[n.Name] = i
	}
	for _, a := range allocs {
		ni, ok := p.index[a.Node]
		if !ok || a.State == StateFailed {
			continue
		}
		p.used[ni].CPUMillis += a.Resources.CPUMillis
		p.used[ni].MemoryMB += a.Resources.MemoryMB
		p.allocs[ni]++
	}
	return p
}

func (p *planner) spreadOf(key string) *spreadIndex {
	if s, ok := p.spread[key]; ok {
		return s
	}
	s := &spreadIndex{of: make([]int, len(p.nodes))}
	ids := map[string]int{}
	for ni := range p.nodes {
		v, _ := labelOf(&p.nodes[ni], key)
		id, ok := ids[v]
		if !ok {
			id = len(s.values)
			ids[v] = id
			s.values = append(s.values, v)
		}
		s.of[ni] = id
	}
	p.spread[key] = s
	return s
}

func (p *planner) stop(a Alloc, reason string) {
	p.res.Stop = append(p.res.Stop, Stop{Alloc: a, Reason: reason})
}

func (p *planner) stopAll(list []Alloc, reason string) {
	for _, a := range list {
		if a.State != StateStopping {
			p.stop(a, reason)
		}
	}
}

func (p *planner) unplaced(service string, n int, reason string) {
	p.res.Unplaced = append(p.res.Unplaced, Unplaced{Service: service, Count: n, Reason: reason})
}

// service plans one service.
func (p *planner) service(name string, w Workload, list []Alloc) {
	w.Normalize()
	if err := w.Validate(); err != nil {
		live := 0
		for _, a := range list {
			if a.State == StatePending || a.State == StateRunning {
				live++
			}
		}
		p.unplaced(name, max(0, w.Count-live), "the spec is invalid, so nothing is changed: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	cons := make([]constraint, 0, len(w.Constraints))
	for _, c := range w.Constraints {
		pc, _ := parseConstraint(string(c)) // valid: checked above
		cons = append(cons, pc)
	}
	si := p.spreadOf(w.Spread)
	clear(p.svc)
	clear(p.failedOn)
	p.spreadN = slices.Grow(p.spreadN[:0], len(si.values))[:len(si.values)]
	clear(p.spreadN)

	roll := p.rollout(list, &w)
	g := p.classify(list, &w, si, roll)
	live, draining, lost, held := g.live, g.draining, g.lost, g.held
	old, allowance := g.old, 0
	if roll.stuck() {
		p.res.Stuck = append(p.res.Stuck, UpdateStuck{Service: name, Generation: roll.gen,
			Failed: len(roll.failed), Late: len(roll.lateOnes), Reason: roll.stuckReason()})
	}
	if roll != nil {
		old = p.replaceOld(&w, roll, live, old, si)
		allowance = min(len(live)+roll.heldNew(held), roll.maxParallel, len(old))
	}
	need := w.Count - len(live) - len(old) - len(held)
	if excess := -need - allowance; excess > 0 {
		for len(held) > 0 && excess > 0 {
			p.stop(held[0].Alloc, fmt.Sprintf("scaled down to %d, and its node %s is lost", w.Count, held[0].Node))
			held, excess = held[1:], excess-1
		}
		if roll != nil {
			live, excess = p.stopInFlight(roll, live, excess, si, w.Count)
		}
		live = p.stopExcess(live, excess, si, w.Count)
	}
	if len(held) > 0 {
		until := slices.MinFunc(held, func(a, b heldAlloc) int { return a.until.Compare(b.until) }).until
		p.unplaced(name, len(held), heldReason(held, until))
		p.retryAt(until)
	}

	need = max(0, need)
	done := 0
	if !roll.stuck() {
		done = p.placeN(name, &w, cons, si, need)
	}
	unmet := need - done
	if roll != nil && unmet == 0 {
		p.surge(name, &w, cons, si, roll, live, len(old), roll.heldNew(held), need)
	}

	// Lost allocs stand in for instances that could not be placed: a
	// node that comes back resumes them. The others are replaced.
	keep := min(len(lost), unmet)
	for _, a := range lost[keep:] {
		p.stop(a.Alloc, lostReason(a.Alloc, w.OnNodeLoss, p.index))
	}
	// A draining node's instance stops only once enough others run.
	running := 0
	for _, list := range [][]placed{live, old} {
		for _, a := range list {
			if a.State != StatePending {
				running++
			}
		}
	}
	slices.SortStableFunc(draining, func(a, b placed) int { return cmp.Compare(rank(&a.Alloc), rank(&b.Alloc)) })
	move := min(len(draining), max(0, running+len(draining)-w.Count))
	for _, a := range draining[:move] {
		p.stop(a.Alloc, fmt.Sprintf("node %s is draining and %d instances run elsewhere", a.Node, running))
	}

	if unmet > 0 {
		reason := p.explain(&w, cons)
		if roll.stuck() {
			reason = roll.stuckReason()
		}
		switch n := keep + len(draining) - move; {
		case n == 1:
			reason += "; meanwhile 1 still runs on a lost or draining node"
		case n > 1:
			reason += fmt.Sprintf("; meanwhile %d still run on lost or draining nodes", n)
		}
		p.unplaced(name, unmet, reason)
	}
}

// placeN places up to n instances of a service, one at a time on the best
// node, and returns how many it placed.
func (p *planner) placeN(name string, w *Workload, cons []constraint, si *spreadIndex, n int) int {
	if n <= 0 {
		return 0
	}
	cands := p.candidates(cons)
	for done := 0; done < n; done++ {
		best := p.best(cands, w.Resources, si)
		if best < 0 {
			return done
		}
		p.place(name, w, best, si)
	}
	return n
}

// retryAt makes the result ask to be planned again at t, if no earlier
// time is asked already.
func (p *planner) retryAt(t time.Time) {
	if p.res.RetryAt.IsZero() || t.Before(p.res.RetryAt) {
		p.res.RetryAt = t
	}
}

// groups are a service's allocs sorted by what Plan does with them.
type groups struct {
	live     []placed    // pending or running on live, eligible nodes (during a rolling update: of the new generation)
	old      []placed    // during a rolling update: like live, of an older generation
	draining []placed    // pending or running on draining nodes
	lost     []placed    // on lost nodes, to replace
	held     []heldAlloc // on lost nodes, waited for (at_most_one)
}

// heldAlloc is an at_most_one alloc on a lost node, and when the wait for
// it ends.
type heldAlloc struct {
	Alloc
	until time.Time
}

// classify sorts a service's allocs into groups, stops the failed ones
// (but keeps those of a rolling update's new generation, in roll), and
// counts the live ones per node and spread value (during a rolling update,
// only those of the new generation: the old ones are going away).
func (p *planner) classify(list []Alloc, w *Workload, si *spreadIndex, roll *rollout) groups {
	var g groups
	for _, a := range list {
		ni, known := p.index[a.Node]
		switch {
		case a.State == StateStopping:
		case a.State == StateFailed:
			if roll != nil && a.Generation >= roll.gen {
				roll.failed = append(roll.failed, a)
				if known {
					p.failedOn[ni] = true
				}
				break
			}
			p.stop(a, fmt.Sprintf("it failed on node %s and was handed back to be placed again", a.Node))
			if known {
				p.failedOn[ni] = true
			}
		case !known || !p.nodes[ni].Alive || a.State == StateLost:
			if w.OnNodeLoss == AtMostOne {
				var lostAt time.Time
				if known {
					lostAt = p.nodes[ni].LostAt
				}
				if until := lostAt.Add(p.opts.LeaseTTL + p.opts.LossMargin); p.now.Before(until) {
					g.held = append(g.held, heldAlloc{a, until})
					continue
				}
			}
			g.lost = append(g.lost, placed{a, ni})
		case !p.nodes[ni].Eligible:
			g.draining = append(g.draining, placed{a, ni})
		case roll != nil && a.Generation < roll.gen:
			g.old = append(g.old, placed{a, ni})
		default:
			if roll != nil && roll.late(&a, p.now) {
				roll.lateOnes = append(roll.lateOnes, a)
			}
			g.live = append(g.live, placed{a, ni})
			p.svc[ni]++
			p.spreadN[si.of[ni]]++
		}
	}
	return g
}

// rank orders allocs for stopping: the ones not serving go first (not
// started yet, then not passing their checks).
func rank(a *Alloc) int {
	switch {
	case a.State == StatePending:
		return 0
	case a.HealthySince.IsZero():
		return 1
	}
	return 2
}

func heldReason(held []heldAlloc, until time.Time) string {
	var nodes []string
	for _, a := range held {
		if !slices.Contains(nodes, a.Node) {
			nodes = append(nodes, a.Node)
		}
	}
	list := strings.Join(nodes[:min(len(nodes), 3)], ", ")
	if len(nodes) > 3 {
		list += fmt.Sprintf(" and %d more", len(nodes)-3)
	}
	return fmt.Sprintf("on_node_loss is at_most_one: waiting until %s, when lost node %s has surely stopped it, before placing a replacement",
		until.UTC().Format("15:04:05.000Z"), list)
}

func lostReason(a Alloc, policy string, index map[string]int) string {
	what := fmt.Sprintf("node %s is lost", a.Node)
	if _, known := index[a.Node]; !known {
		what = fmt.Sprintf("node %s is gone", a.Node)
	}
	if policy == AtMostOne {
		return what + " and has surely stopped it by now (on_node_loss: at_most_one)"
	}
	return what + " (on_node_loss: overlap)"
}

// candidates lists the nodes that may take an instance, resources aside.
func (p *planner) candidates(cons []constraint) []int {
	var out []int
	for ni := range p.nodes {
		n := &p.nodes[ni]
		if n.Alive && n.Eligible && firstFailing(cons, n) < 0 {
			out = append(out, ni)
		}
	}
	return out
}

// firstFailing returns the index of the first constraint node n does not
// meet, or -1.
func firstFailing(cons []constraint, n *Node) int {
	for i := range cons {
		if !cons[i].match(n) {
			return i
		}
	}
	return -1
}

// fits reports whether node ni has room for req. A request of 0 always fits.
func (p *planner) fits(ni int, req Resources) bool {
	c, u := p.nodes[ni].Capacity, p.used[ni]
	if req.CPUMillis > 0 && c.CPUMillis > 0 && u.CPUMillis+req.CPUMillis > c.CPUMillis {
		return false
	}
	return !(req.MemoryMB > 0 && c.MemoryMB > 0 && u.MemoryMB+req.MemoryMB > c.MemoryMB)
}

// load is node ni's most used resource, in thousandths of its capacity.
func (p *planner) load(ni int) int {
	c, u := p.nodes[ni].Capacity, p.used[ni]
	l := 0
	if c.CPUMillis > 0 {
		l = u.CPUMillis * 1000 / c.CPUMillis
	}
	if c.MemoryMB > 0 {
		l = max(l, u.MemoryMB*1000/c.MemoryMB)
	}
	return l
}

// best returns the candidate node that fits req and is best for the next
// instance, or -1: fewest of the service's instances on its spread value,
// then on the node, then not where one just failed, then least loaded,
// then fewest allocs, then first by name.
func (p *planner) best(cands []int, req Resources, si *spreadIndex) int {
	best := -1
	for _, ni := range cands {
		if p.fits(ni, req) && (best < 0 || p.better(ni, best, si)) {
			best = ni
		}
	}
	return best
}

func (p *planner) better(a, b int, si *spreadIndex) bool {
	if x, y := p.spreadN[si.of[a]], p.spreadN[si.of[b]]; x != y {
		return x < y
	}
	if x, y := p.svc[a], p.svc[b]; x != y {
		return x < y
	}
	if x, y := p.failedOn[a], p.failedOn[b]; x != y {
		return y
	}
	if x, y := p.load(a), p.load(b); x != y {
		return x < y
	}
	if x, y := p.allocs[a], p.allocs[b]; x != y {
		return x < y
	}
	return a < b
}

func (p *planner) place(service string, w *Workload, ni int, si *spreadIndex) {
	p.res.Place = append(p.res.Place, Alloc{
		ID:         p.opts.NewID(service),
		Service:    service,
		Node:       p.nodes[ni].Name,
		Generation: w.Generation,
		State:      StatePending,
		Resources:  w.Resources,
		PlacedAt:   p.now,
	})
	p.used[ni].CPUMillis += w.Resources.CPUMillis
	p.used[ni].MemoryMB += w.Resources.MemoryMB
	p.allocs[ni]++
	p.svc[ni]++
	p.spreadN[si.of[ni]]++
}

// stopExcess stops excess of the live allocs (see stopCrowded), all of
// them if excess covers them. It returns the rest.
func (p *planner) stopExcess(live []placed, excess int, si *spreadIndex, count int) []placed {
	reason := fmt.Sprintf("scaled down to %d", count)
	if excess >= len(live) {
		for _, a := range live {
			p.stop(a.Alloc, reason)
		}
		return nil
	}
	return p.stopCrowded(live, excess, si, true, reason)
}

// stopCrowded stops n of list, one at a time from the most crowded spread
// value, then the node with most of the service, then the most loaded
// node; between equals, those not serving first (see rank). Counted says whether list is
// counted in p.svc and p.spreadN (and so must be taken out as it stops).
// It returns the rest.
func (p *planner) stopCrowded(list []placed, n int, si *spreadIndex, counted bool, reason string) []placed {
	for ; n > 0 && len(list) > 0; n-- {
		bi := 0
		for i := 1; i < len(list); i++ {
			if p.crowdedFirst(list[i], list[bi], si) {
				bi = i
			}
		}
		a := list[bi]
		p.stop(a.Alloc, reason)
		if counted {
			p.svc[a.ni]--
			p.spreadN[si.of[a.ni]]--
		}
		list = slices.Delete(list, bi, bi+1)
	}
	return list
}

func (p *planner) crowdedFirst(a, b placed, si *spreadIndex) bool {
	if x, y := p.spreadN[si.of[a.ni]], p.spreadN[si.of[b.ni]]; x != y {
		return x > y
	}
	if x, y := p.svc[a.ni], p.svc[b.ni]; x != y {
		return x > y
	}
	if x, y := p.load(a.ni), p.load(b.ni); x != y {
		return x > y
	}
	if x, y := p.allocs[a.ni], p.allocs[b.ni]; x != y {
		return x > y
	}
	if x, y := rank(&a.Alloc), rank(&b.Alloc); x != y {
		return x < y
	}
	return a.ID > b.ID
}
