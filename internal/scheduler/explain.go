package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// How far a node got in the checks for one more instance.
const (
	stageDown = iota
	stageDraining
	stageConstraint
	stageResources
)

// maxDetails bounds how many nodes an explanation names.
const maxDetails = 5

// nodeWhy is why one node cannot take an instance.
type nodeWhy struct {
	ni    int
	stage int
	text  string
	free  Resources // for stageResources
}

// explain says why no node can take one more instance of w, in one line of
// bounded length: a headline for the furthest check any node reached, then
// the nodes, closest to fitting first.
func (p *planner) explain(w *Workload, cons []constraint) string {
	if len(p.nodes) == 0 {
		return "no nodes are known"
	}
	whys := make([]nodeWhy, 0, len(p.nodes))
	var failed []int // constraint indices that some node fails, in spec order
	var lowCPU, lowMem bool
	top := stageDown
	for ni := range p.nodes {
		n := &p.nodes[ni]
		y := nodeWhy{ni: ni}
		switch {
		case !n.Alive:
			y.stage, y.text = stageDown, n.Name+" down"
		case !n.Eligible:
			y.stage, y.text = stageDraining, n.Name+" draining"
		default:
			if ci := firstFailing(cons, n); ci >= 0 {
				c := &cons[ci]
				y.stage = stageConstraint
				y.text = fmt.Sprintf("%s fails %q (%s)", n.Name, c.String(), labelNote(n, c.key))
				if !slices.Contains(failed, ci) {
					failed = append(failed, ci)
				}
				break
			}
			y.stage = stageResources
			y.free = p.free(ni)
			cpu, mem := p.short(ni, w.Resources)
			lowCPU, lowMem = lowCPU || cpu, lowMem || mem
			y.text = n.Name + " " + freeText(y.free, cpu, mem)
		}
		top = max(top, y.stage)
		whys = append(whys, y)
	}

	var headline string
	switch top {
	case stageResources:
		headline = "no node has " + freeText(w.Resources, lowCPU, lowMem)
	case stageConstraint:
		slices.Sort(failed)
		var quoted []string
		for _, ci := range failed {
			quoted = append(quoted, fmt.Sprintf("%q", cons[ci].String()))
		}
		if len(quoted) == 1 {
			headline = "no node satisfies constraint " + quoted[0]
		} else {
			headline = "no node satisfies all of the constraints " + strings.Join(quoted, ", ")
		}
	default:
		headline = "no node is alive and eligible"
	}

	slices.SortStableFunc(whys, func(a, b nodeWhy) int {
		if a.stage != b.stage {
			return cmp.Compare(b.stage, a.stage)
		}
		if a.stage == stageResources {
			if c := cmp.Or(cmp.Compare(b.free.MemoryMB, a.free.MemoryMB), cmp.Compare(b.free.CPUMillis, a.free.CPUMillis)); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.ni, b.ni)
	})
	details := make([]string, 0, maxDetails+1)
	for _, y := range whys[:min(len(whys), maxDetails)] {
		details = append(details, y.text)
	}
	if len(whys) > maxDetails {
		details = append(details, fmt.Sprintf("and %d more", len(whys)-maxDetails))
	}
	checked := "nodes"
	if len(whys) == 1 {
		checked = "node"
	}
	return fmt.Sprintf("%s (%d %s checked: %s)", headline, len(whys), checked, strings.Join(details, ", "))
}

// free is what node ni has left; a dimension it does not limit reads 0.
func (p *planner) free(ni int) Resources {
	c, u := p.nodes[ni].Capacity, p.used[ni]
	return Resources{CPUMillis: max(0, c.CPUMillis-u.CPUMillis), MemoryMB: max(0, c.MemoryMB-u.MemoryMB)}
}

// short says which of req's dimensions node ni lacks.
func (p *planner) short(ni int, req Resources) (cpu, mem bool) {
	c, u := p.nodes[ni].Capacity, p.used[ni]
	cpu = req.CPUMillis > 0 && c.CPUMillis > 0 && u.CPUMillis+req.CPUMillis > c.CPUMillis
	mem = req.MemoryMB > 0 && c.MemoryMB > 0 && u.MemoryMB+req.MemoryMB > c.MemoryMB
	return cpu, mem
}

// freeText writes the chosen dimensions of r: "512 MB and 250 millicpu free".
func freeText(r Resources, cpu, mem bool) string {
	var parts []string
	if mem {
		parts = append(parts, fmt.Sprintf("%d MB", r.MemoryMB))
	}
	if cpu {
		parts = append(parts, fmt.Sprintf("%d millicpu", r.CPUMillis))
	}
	if len(parts) == 0 {
		return "room"
	}
	return strings.Join(parts, " and ") + " free"
}

// labelNote shows node n's label key for an explanation, shortened.
func labelNote(n *Node, key string) string {
	v, ok := labelOf(n, key)
	if !ok {
		return "no " + key
	}
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	return key + "=" + v
}
