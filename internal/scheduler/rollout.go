package scheduler

import (
	"fmt"
	"strings"
	"time"
)

// rollout is the state of a service's rolling update: some of its
// instances run an older generation than its spec.
type rollout struct {
	gen         int64
	maxParallel int
	minHealthy  time.Duration
	deadline    time.Duration // Options.HealthyDeadline
	// failed are the new generation's instances that failed. They are
	// kept, not placed again, while old instances run: they are what says
	// the update is stuck.
	failed []Alloc
	// lateOnes are the new generation's instances that are not healthy
	// for min_healthy past the deadline.
	lateOnes []Alloc
}

// rollout returns the state of a rolling update of the service whose
// allocs are list, or nil when none of them runs an older generation.
func (p *planner) rollout(list []Alloc, w *Workload) *rollout {
	for i := range list {
		a := &list[i]
		if a.Generation < w.Generation && a.State != StateStopping && a.State != StateFailed {
			return &rollout{gen: w.Generation, maxParallel: w.Update.MaxParallel, minHealthy: w.Update.MinHealthy.D(),
				deadline: p.opts.HealthyDeadline}
		}
	}
	return nil
}

// stuck reports whether the update cannot progress. A nil rollout (no
// update) is not stuck.
func (r *rollout) stuck() bool { return r != nil && len(r.failed)+len(r.lateOnes) > 0 }

// healthy reports whether a has started and passed its checks for
// min_healthy at now.
func (r *rollout) healthy(a *Alloc, now time.Time) bool {
	return a.State != StatePending && !a.HealthySince.IsZero() && !now.Before(a.HealthySince.Add(r.minHealthy))
}

// late reports whether a, of the new generation, is not healthy for
// min_healthy past the deadline from its placement.
func (r *rollout) late(a *Alloc, now time.Time) bool {
	return r.deadline > 0 && !a.PlacedAt.IsZero() && !now.Before(a.PlacedAt.Add(r.deadline)) && !r.healthy(a, now)
}

// stuckReason says why the update is stuck, naming up to three of the
// failed and of the late instances.
func (r *rollout) stuckReason() string {
	var why []string
	if len(r.failed) > 0 {
		why = append(why, fmt.Sprintf("%s failed (%s)", plural(len(r.failed), "new instance"), someOf(r.failed)))
	}
	if len(r.lateOnes) > 0 {
		why = append(why, fmt.Sprintf("%s not healthy for %s within %s of placement (%s)",
			plural(len(r.lateOnes), "new instance"), r.minHealthy, r.deadline, someOf(r.lateOnes)))
	}
	return fmt.Sprintf("the update to generation %d is stuck: %s; the old instances keep running and nothing new is placed until the update is rolled back or a new spec is deployed",
		r.gen, strings.Join(why, ", and "))
}

// someOf names up to three of list, by ID and node.
func someOf(list []Alloc) string {
	var names []string
	for _, a := range list[:min(len(list), 3)] {
		names = append(names, a.ID+" on "+a.Node)
	}
	out := strings.Join(names, ", ")
	if len(list) > 3 {
		out += fmt.Sprintf(" and %d more", len(list)-3)
	}
	return out
}

// replaceOld stops the old instances that are no longer needed and
// returns the ones kept. Old instances past count go first: a scale down.
// Then, unless the update is stuck, one old instance for each new one
// healthy for min_healthy: the old ones kept never number more than count
// less the healthy new ones. (Held instances, on lost nodes, serve
// nothing: they never stand in for an old one.) The old
// instance stopped is one that does not serve, if any; else the one on the
// most crowded spread value and node, counting new instances only, so the
// old instance beside a new one goes first and the new generation ends up
// spread.
func (p *planner) replaceOld(w *Workload, r *rollout, live, old []placed, si *spreadIndex) []placed {
	if n := len(old) - w.Count; n > 0 {
		old = p.stopOld(old, n, si, fmt.Sprintf("scaled down to %d during the update to generation %d", w.Count, r.gen))
	}
	if r.stuck() {
		return old
	}
	healthy := 0
	for i := range live {
		a := &live[i].Alloc
		if r.healthy(a, p.now) {
			healthy++
			continue
		}
		if a.State != StatePending && !a.HealthySince.IsZero() {
			p.retryAt(a.HealthySince.Add(r.minHealthy))
		}
		if r.deadline > 0 && !a.PlacedAt.IsZero() {
			p.retryAt(a.PlacedAt.Add(r.deadline))
		}
	}
	if n := len(old) - max(0, w.Count-healthy); n > 0 {
		old = p.stopOld(old, n, si, fmt.Sprintf("replaced by generation %d (%d of %d new instances healthy for %s)",
			r.gen, healthy, w.Count, r.minHealthy))
	}
	return old
}

// stopOld stops n of the old instances, those not serving first (not
// started, then not passing their checks: see rank), and between equals
// as stopCrowded does. It returns the rest.
func (p *planner) stopOld(old []placed, n int, si *spreadIndex, reason string) []placed {
	var kept []placed
	for r := range 3 {
		var group []placed
		for _, a := range old {
			if rank(&a.Alloc) == r {
				group = append(group, a)
			}
		}
		k := min(n, len(group))
		kept = append(kept, p.stopCrowded(group, k, si, false, reason)...)
		n -= k
	}
	return kept
}

// stopInFlight stops up to n of the new instances in flight (not healthy
// for min_healthy) of live, as a scale down does, before any healthy one:
// an old instance may have been stopped for a healthy one in this plan.
// It returns the rest of live and how many of n are left to stop.
func (p *planner) stopInFlight(r *rollout, live []placed, n int, si *spreadIndex, count int) ([]placed, int) {
	var ok, flight []placed
	for _, a := range live {
		if r.healthy(&a.Alloc, p.now) {
			ok = append(ok, a)
		} else {
			flight = append(flight, a)
		}
	}
	k := min(n, len(flight))
	if k == 0 {
		return live, n
	}
	flight = p.stopCrowded(flight, k, si, true, fmt.Sprintf("scaled down to %d", count))
	return append(ok, flight...), n - k
}

// surge places the new instances that will replace old ones: no more than
// old, the old instances left to replace, no more new instances than
// count, and no more than keep max_parallel new instances in flight (not
// yet healthy for min_healthy; those held on lost nodes, and the fill
// instances just placed for missing ones, count). A surge that finds no
// room is reported unplaced; no old instance is stopped to make room.
func (p *planner) surge(name string, w *Workload, cons []constraint, si *spreadIndex, r *rollout, live []placed, old, heldNew, fill int) {
	if r.stuck() {
		return
	}
	inFlight := heldNew + fill
	for i := range live {
		if !r.healthy(&live[i].Alloc, p.now) {
			inFlight++
		}
	}
	n := min(r.maxParallel-inFlight, old, w.Count-len(live)-heldNew-fill)
	if n <= 0 {
		return
	}
	if done := p.placeN(name, w, cons, si, n); done < n {
		p.unplaced(name, n-done, fmt.Sprintf("the update to generation %d needs room for %s beside the old ones: %s",
			r.gen, plural(n-done, "more instance"), p.explain(w, cons)))
	}
}

// plural writes n and noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// heldNew counts the held instances of the new generation: in flight,
// as far as the update is concerned.
func (r *rollout) heldNew(held []heldAlloc) int {
	n := 0
	for _, a := range held {
		if a.Generation >= r.gen {
			n++
		}
	}
	return n
}
