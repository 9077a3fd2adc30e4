package proxy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
)

// Balancer chooses the backend for one attempt of a request.
//
// Pick is called from every request goroutine at once, so implementations
// are safe for concurrent use; they take no lock and allocate nothing. Pick
// neither keeps nor modifies candidates or tried.
type Balancer interface {
	// Pick chooses among candidates (already filtered for health and
	// ejection, see Eligible), excluding those in tried: the backends this
	// request was already sent to, compared by identity (may be nil). key
	// is the request's hash key for balance "hash" ("" otherwise); local is
	// this node's name. Pick returns nil when no candidate is left.
	Pick(candidates []*Backend, tried []*Backend, key string, local string) *Backend
}

// NewBalancer returns the balancer of a policy, as registry.Service.Balance
// spells it:
//
//   - "least-request" (or ""): of two untried candidates chosen at random,
//     the one with fewer requests in flight ("power of two choices"). Ties
//     go to either with equal chance. Weight is not used.
//   - "round-robin": each candidate in turn, from a shared atomic counter
//     that starts at a random position (so the nodes' proxies do not all
//     start on the same instance). Weight is not used.
//   - "weighted": weighted random, each untried candidate with probability
//     Weight / (sum of the untried candidates' weights). It keeps no state
//     and so needs no lock, unlike smooth weighted round robin; over many
//     requests the shares match the weights.
//   - "hash": rendezvous (highest random weight) hashing of key over the
//     backends' IDs, weighted by Weight: a key goes to the same instance on
//     every node, and adding or removing an instance moves only the keys
//     that must move. When the first choice was tried, the next-highest
//     score wins. The hash is FNV-1a, fixed, so all nodes agree. An empty
//     key (the header or cookie is missing) is balanced as least-request
//     rather than sending every such request to one instance.
//   - "local": least-request among the untried candidates on this node
//     (Node == local), or, when there is none, among all untried ones.
//
// The returned balancer may be shared by any number of goroutines; keep
// it across table rebuilds to keep round-robin's position.
func NewBalancer(policy string) (Balancer, error) {
	switch policy {
	case "", "least-request":
		return leastRequest{}, nil
	case "round-robin":
		rr := &roundRobin{}
		rr.next.Store(rand.Uint64())
		return rr, nil
	case "weighted":
		return weighted{}, nil
	case "hash":
		return rendezvous{}, nil
	case "local":
		return localFirst{}, nil
	}
	return nil, fmt.Errorf("balance %q: use least-request, round-robin, weighted, hash or local", policy)
}

// wasTried reports whether b is one of tried.
func wasTried(b *Backend, tried []*Backend) bool {
	for _, t := range tried {
		if t == b {
			return true
		}
	}
	return false
}

type leastRequest struct{}

func (leastRequest) Pick(candidates, tried []*Backend, _, _ string) *Backend {
	return leastOfTwo(candidates, tried, "", false)
}

// leastOfTwo draws two distinct backends at random among the candidates
// that are not tried (and, when onNode, whose Node is node), and returns
// the one with fewer requests in flight; with one such candidate it
// returns that one, with none nil. The pair's order is random, so a tie
// goes to either with equal chance.
func leastOfTwo(candidates, tried []*Backend, node string, onNode bool) *Backend {
	if len(tried) == 0 && !onNode { // the common case: index directly
		n := len(candidates)
		switch n {
		case 0:
			return nil
		case 1:
			return candidates[0]
		}
		i, j := randomPair(n)
		return lesser(candidates[i], candidates[j])
	}
	if len(candidates) == 0 {
		return nil
	}
	// Most of the time a few random draws find two open candidates. The
	// chance of falling back to the scan below does not depend on which
	// candidate was drawn first, so the pair stays uniform.
	if a := drawOpen(candidates, tried, node, onNode, nil); a != nil {
		if c := drawOpen(candidates, tried, node, onNode, a); c != nil {
			return lesser(a, c)
		}
	}
	n := 0
	var only *Backend
	for _, b := range candidates {
		if open(b, tried, node, onNode) {
			n++
			only = b
		}
	}
	if n <= 1 {
		return only
	}
	i, j := randomPair(n)
	var a, c *Backend
	k := 0
	for _, b := range candidates {
		if !open(b, tried, node, onNode) {
			continue
		}
		switch k {
		case i:
			a = b
		case j:
			c = b
		}
		k++
	}
	return lesser(a, c)
}

// drawOpen draws a few candidates at random and returns the first that is
// open and not not, or nil.
func drawOpen(candidates, tried []*Backend, node string, onNode bool, not *Backend) *Backend {
	n := len(candidates)
	for range 3 {
		r := rand.Uint64()
		if b := candidates[scale(uint32(r), n)]; b != not && open(b, tried, node, onNode) {
			return b
		}
		if b := candidates[scale(uint32(r>>32), n)]; b != not && open(b, tried, node, onNode) {
			return b
		}
	}
	return nil
}

// randomPair returns two distinct random numbers in [0, n), n >= 2, from
// one call to the random source.
func randomPair(n int) (i, j int) {
	r := rand.Uint64()
	i = scale(uint32(r), n)
	j = scale(uint32(r>>32), n-1)
	if j >= i {
		j++
	}
	return i, j
}

// scale maps a uniform 32-bit number onto [0, n) by multiplying and
// shifting: cheaper than rand.IntN, and biased by at most n/2³², which is
// nothing next to the load differences that decide a pick.
func scale(r uint32, n int) int { return int(uint64(r) * uint64(n) >> 32) }

// open reports whether b may be picked: not tried, and on node when
// onNode.
func open(b *Backend, tried []*Backend, node string, onNode bool) bool {
	if onNode && b.Node != node {
		return false
	}
	for _, t := range tried {
		if t == b {
			return false
		}
	}
	return true
}

// lesser returns whichever of a and b has fewer requests in flight, a on a
// tie.
func lesser(a, b *Backend) *Backend {
	if b.Inflight() < a.Inflight() {
		return b
	}
	return a
}

type roundRobin struct {
	next atomic.Uint64
}

func (rr *roundRobin) Pick(candidates, tried []*Backend, _, _ string) *Backend {
	n := len(candidates)
	if n == 0 {
		return nil
	}
	start := int((rr.next.Add(1) - 1) % uint64(n))
	for k := range n {
		b := candidates[(start+k)%n]
		if !wasTried(b, tried) {
			return b
		}
	}
	return nil
}

type weighted struct{}

func (weighted) Pick(candidates, tried []*Backend, _, _ string) *Backend {
	total := 0
	for _, b := range candidates {
		if !wasTried(b, tried) {
			total += weightOf(b)
		}
	}
	if total == 0 {
		return nil
	}
	r := rand.IntN(total)
	for _, b := range candidates {
		if wasTried(b, tried) {
			continue
		}
		if r -= weightOf(b); r < 0 {
			return b
		}
	}
	return nil // not reached
}

// weightOf is b's weight, at least 1 even for a Backend not made by
// NewBackend.
func weightOf(b *Backend) int { return max(b.Weight, 1) }

type rendezvous struct{}

func (rendezvous) Pick(candidates, tried []*Backend, key, _ string) *Backend {
	if key == "" {
		return leastOfTwo(candidates, tried, "", false)
	}
	kh := fnv1a(key)
	// With equal weights, the score is the hash itself; otherwise it is
	// weight / -ln(hash as a uniform number in (0,1)), whose maximum falls
	// on each backend with probability proportional to its weight.
	equal := true
	for _, b := range candidates {
		if weightOf(b) != weightOf(candidates[0]) {
			equal = false
			break
		}
	}
	var best *Backend
	var bestHash uint64
	var bestScore float64
	for _, b := range candidates {
		if wasTried(b, tried) {
			continue
		}
		h := mix64(kh ^ b.idHash)
		var score float64
		if !equal {
			u := (float64(h>>11) + 0.5) / (1 << 53)
			score = float64(weightOf(b)) / -math.Log(u)
		}
		if best == nil || (equal && h > bestHash) || (!equal && score > bestScore) ||
			(h == bestHash && score == bestScore && b.ID < best.ID) { // same ID hash: stay deterministic
			best, bestHash, bestScore = b, h, score
		}
	}
	return best
}

type localFirst struct{}

func (localFirst) Pick(candidates, tried []*Backend, _, local string) *Backend {
	if local != "" {
		if b := leastOfTwo(candidates, tried, local, true); b != nil {
			return b
		}
	}
	return leastOfTwo(candidates, tried, "", false)
}
