package proxy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

var policies = []string{"", "least-request", "round-robin", "weighted", "hash", "local"}

// backends returns n backends b0..b(n-1) of weight 1, alternately on nodes
// n0 and n1.
func backends(n int) []*Backend {
	bs := make([]*Backend, n)
	for i := range bs {
		bs[i] = NewBackend(fmt.Sprintf("b%d", i), "svc", fmt.Sprintf("127.0.0.1:%d", 9000+i), fmt.Sprintf("n%d", i%2), 1)
	}
	return bs
}

func mustBalancer(t testing.TB, policy string) Balancer {
	t.Helper()
	bal, err := NewBalancer(policy)
	if err != nil {
		t.Fatal(err)
	}
	return bal
}

func TestNewBalancerUnknown(t *testing.T) {
	for _, p := range []string{"random", "Hash", "least_request"} {
		if _, err := NewBalancer(p); err == nil {
			t.Errorf("NewBalancer(%q) = nil error, want one", p)
		}
	}
}

// TestBalancerContract holds every policy to what the proxy relies on:
// picks come from the candidates, never from tried, every candidate is
// reached when the others are tried, nil comes when all are tried, and
// Pick is safe for concurrent use.
func TestBalancerContract(t *testing.T) {
	keys := []string{"", "user-42"}
	for _, policy := range policies {
		for _, key := range keys {
			t.Run(fmt.Sprintf("%s/key=%q", policy, key), func(t *testing.T) {
				bal := mustBalancer(t, policy)
				all := backends(10)
				cands := all[:7] // all[7:] must never be picked
				for range 200 {
					// Exhaust the candidates one pick at a time.
					var tried []*Backend
					for range len(cands) {
						b := bal.Pick(cands, tried, key, "n0")
						if b == nil {
							t.Fatalf("Pick with %d of %d tried = nil", len(tried), len(cands))
						}
						if !slices.Contains(cands, b) {
							t.Fatalf("Pick = %s, not a candidate", b.ID)
						}
						if slices.Contains(tried, b) {
							t.Fatalf("Pick = %s, already tried", b.ID)
						}
						tried = append(tried, b)
					}
					if b := bal.Pick(cands, tried, key, "n0"); b != nil {
						t.Fatalf("Pick with all tried = %s, want nil", b.ID)
					}
				}
				// tried may hold backends that are not candidates.
				if b := bal.Pick(cands[:1], all[5:], key, "n0"); b != cands[0] {
					t.Fatalf("Pick of one untried candidate = %v, want %s", b, cands[0].ID)
				}
				if b := bal.Pick(nil, nil, key, "n0"); b != nil {
					t.Fatalf("Pick(nil) = %s, want nil", b.ID)
				}

				var wg sync.WaitGroup
				for g := range 8 {
					wg.Go(func() {
						for i := range 500 {
							b := bal.Pick(cands, cands[:g%3], fmt.Sprint(key, i%7), "n1")
							if b == nil || slices.Contains(cands[:g%3], b) {
								t.Errorf("concurrent Pick = %v", b)
								return
							}
							b.Begin()
							b.End()
						}
					})
				}
				wg.Wait()
			})
		}
	}
}

// shares picks n times and returns each backend's share of the picks.
func shares(bal Balancer, cands, tried []*Backend, key, local string, n int) map[*Backend]float64 {
	count := map[*Backend]int{}
	for range n {
		count[bal.Pick(cands, tried, key, local)]++
	}
	out := map[*Backend]float64{}
	for b, c := range count {
		out[b] = float64(c) / float64(n)
	}
	return out
}

func near(got, want, tol float64) bool { return got >= want-tol && got <= want+tol }

func TestLeastRequest(t *testing.T) {
	bal := mustBalancer(t, "least-request")

	t.Run("pair picks the less loaded", func(t *testing.T) {
		bs := backends(2)
		bs[0].Begin()
		for range 1000 {
			if b := bal.Pick(bs, nil, "", ""); b != bs[1] {
				t.Fatalf("Pick = %s, want the idle b1", b.ID)
			}
		}
	})

	t.Run("ties are random", func(t *testing.T) {
		bs := backends(2)
		s := shares(bal, bs, nil, "", "", 20000)
		for _, b := range bs {
			if !near(s[b], 0.5, 0.03) {
				t.Errorf("%s share %.3f, want about 0.5", b.ID, s[b])
			}
		}
	})

	t.Run("power of two choices", func(t *testing.T) {
		// b_i has i requests in flight. b_i wins when the random pair is
		// b_i and a busier one: (n-1-i) of the n(n-1)/2 pairs.
		bs := backends(10)
		for i, b := range bs {
			for range i {
				b.Begin()
			}
		}
		s := shares(bal, bs, nil, "", "", 50000)
		for i, b := range bs {
			want := float64(9-i) / 45
			if !near(s[b], want, 0.015) {
				t.Errorf("%s (inflight %d) share %.3f, want %.3f", b.ID, i, s[b], want)
			}
		}
	})

	t.Run("tried are skipped", func(t *testing.T) {
		bs := backends(3)
		bs[1].Begin() // b0 is idle but tried: b2 beats b1
		for range 1000 {
			if b := bal.Pick(bs, bs[:1], "", ""); b != bs[2] {
				t.Fatalf("Pick = %s, want b2", b.ID)
			}
		}
	})
}

func TestRoundRobinCycles(t *testing.T) {
	bal := mustBalancer(t, "round-robin")
	bs := backends(4)
	first := bal.Pick(bs, nil, "", "")
	start := slices.Index(bs, first)
	for i := 1; i < 12; i++ {
		want := bs[(start+i)%len(bs)]
		if b := bal.Pick(bs, nil, "", ""); b != want {
			t.Fatalf("pick %d = %s, want %s", i, b.ID, want.ID)
		}
	}
	// With b1 tried, its turn goes to the next one.
	got := map[*Backend]int{}
	for range 8 {
		got[bal.Pick(bs, bs[1:2], "", "")]++
	}
	if got[bs[1]] != 0 || got[bs[0]]+got[bs[2]]+got[bs[3]] != 8 {
		t.Errorf("picks with b1 tried: %v", got)
	}
}

func TestWeightedDistribution(t *testing.T) {
	bal := mustBalancer(t, "weighted")
	var bs []*Backend
	for i, w := range []int{1, 2, 3, 4} {
		bs = append(bs, NewBackend(fmt.Sprint("w", i), "svc", "127.0.0.1:1", "n0", w))
	}
	tests := []struct {
		name  string
		tried []*Backend
		want  []float64
	}{
		{"all", nil, []float64{0.1, 0.2, 0.3, 0.4}},
		{"heaviest tried", bs[3:], []float64{1. / 6, 2. / 6, 3. / 6, 0}},
		{"two tried", []*Backend{bs[0], bs[2]}, []float64{0, 2. / 6, 0, 4. / 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := shares(bal, bs, tt.tried, "", "", 100000)
			for i, b := range bs {
				if !near(s[b], tt.want[i], 0.01) {
					t.Errorf("%s (weight %d) share %.3f, want %.3f", b.ID, b.Weight, s[b], tt.want[i])
				}
			}
		})
	}
}

// owners maps each key to the backend bal picks for it.
func owners(bal Balancer, bs []*Backend, keys []string) map[string]string {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = bal.Pick(bs, nil, k, "").ID
	}
	return m
}

func hashKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.1.%d.%d", i/256, i%256)
	}
	return keys
}

func TestHash(t *testing.T) {
	keys := hashKeys(10000)
	bs := backends(10)
	bal := mustBalancer(t, "hash")
	before := owners(bal, bs, keys)

	t.Run("spread", func(t *testing.T) {
		count := map[string]int{}
		for _, id := range before {
			count[id]++
		}
		for _, b := range bs {
			if share := float64(count[b.ID]) / float64(len(keys)); !near(share, 0.1, 0.015) {
				t.Errorf("%s holds %.3f of the keys, want about 0.1", b.ID, share)
			}
		}
	})

	t.Run("stable", func(t *testing.T) {
		if again := owners(bal, bs, keys); !mapsEqual(before, again) {
			t.Error("the same keys moved with nothing changed")
		}
	})

	t.Run("cluster-wide agreement", func(t *testing.T) {
		// Another node: its own balancer and Backends, in another order.
		other := backends(10)
		rand.Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
		if got := owners(mustBalancer(t, "hash"), other, keys); !mapsEqual(before, got) {
			t.Error("two separately built balancers disagree")
		}
	})

	t.Run("removing one moves only its keys", func(t *testing.T) {
		gone := bs[3]
		after := owners(bal, slices.Delete(slices.Clone(bs), 3, 4), keys)
		moved := 0
		for k, id := range before {
			if after[k] != id {
				moved++
				if id != gone.ID {
					t.Fatalf("key %s moved from %s, which stayed", k, id)
				}
			} else if id == gone.ID {
				t.Fatalf("key %s still on the removed %s", k, id)
			}
		}
		if share := float64(moved) / float64(len(keys)); !near(share, 0.1, 0.015) {
			t.Errorf("%.3f of the keys moved, want about 0.1", share)
		}
	})

	t.Run("adding one moves about 1/11 to it", func(t *testing.T) {
		added := NewBackend("b10", "svc", "127.0.0.1:9010", "n0", 1)
		after := owners(bal, append(slices.Clone(bs), added), keys)
		moved := 0
		for k, id := range before {
			if after[k] != id {
				moved++
				if after[k] != added.ID {
					t.Fatalf("key %s moved from %s to %s, not to the new one", k, id, after[k])
				}
			}
		}
		if share := float64(moved) / float64(len(keys)); !near(share, 1./11, 0.015) {
			t.Errorf("%.3f of the keys moved, want about %.3f", share, 1./11)
		}
	})

	t.Run("tried falls to the next highest", func(t *testing.T) {
		other := backends(10)
		slices.Reverse(other)
		bal2 := mustBalancer(t, "hash")
		for _, k := range keys[:200] {
			first := bal.Pick(bs, nil, k, "")
			second := bal.Pick(bs, []*Backend{first}, k, "")
			// The next-highest is where the key goes without the first.
			without := slices.DeleteFunc(slices.Clone(bs), func(b *Backend) bool { return b == first })
			if want := bal.Pick(without, nil, k, ""); second != want {
				t.Fatalf("key %s: second choice %s, want %s", k, second.ID, want.ID)
			}
			// And every node agrees on it.
			var first2 *Backend
			for _, b := range other {
				if b.ID == first.ID {
					first2 = b
				}
			}
			if got := bal2.Pick(other, []*Backend{first2}, k, ""); got.ID != second.ID {
				t.Fatalf("key %s: nodes disagree on the second choice: %s, %s", k, second.ID, got.ID)
			}
		}
	})

	t.Run("weighted", func(t *testing.T) {
		ws := []*Backend{
			NewBackend("light", "svc", "127.0.0.1:1", "n0", 1),
			NewBackend("heavy", "svc", "127.0.0.1:2", "n0", 3),
		}
		count := map[string]int{}
		for _, id := range owners(bal, ws, keys) {
			count[id]++
		}
		if share := float64(count["heavy"]) / float64(len(keys)); !near(share, 0.75, 0.02) {
			t.Errorf("weight 3 of 4 holds %.3f of the keys, want about 0.75", share)
		}
	})

	t.Run("empty key is spread", func(t *testing.T) {
		s := shares(bal, bs, nil, "", "", 10000)
		if len(s) != len(bs) {
			t.Errorf("empty key reached %d of %d backends", len(s), len(bs))
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestLocal(t *testing.T) {
	bal := mustBalancer(t, "local")
	bs := backends(6) // b0, b2, b4 on n0; b1, b3, b5 on n1
	tests := []struct {
		name  string
		local string
		tried []*Backend
		busy  []int // backends with a request in flight
		want  []string
	}{
		{"local ones only", "n0", nil, nil, []string{"b0", "b2", "b4"}},
		{"least-request among local", "n0", []*Backend{bs[0]}, []int{2}, []string{"b4"}},
		{"busy local still beats idle remote", "n1", nil, []int{1, 3, 5}, []string{"b1", "b3", "b5"}},
		{"untried local", "n0", []*Backend{bs[0], bs[4]}, nil, []string{"b2"}},
		{"all local tried: remote", "n0", []*Backend{bs[0], bs[2], bs[4], bs[3]}, []int{1}, []string{"b5"}},
		{"no local instance", "n9", nil, nil, []string{"b0", "b1", "b2", "b3", "b4", "b5"}},
		{"node unknown", "", nil, nil, []string{"b0", "b1", "b2", "b3", "b4", "b5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, i := range tt.busy {
				bs[i].Begin()
				defer bs[i].End()
			}
			s := shares(bal, bs, tt.tried, "", tt.local, 3000)
			var got []string
			for b := range s {
				got = append(got, b.ID)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("picked %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	bs := backends(10)
	for _, policy := range policies {
		bal := mustBalancer(t, policy)
		if n := testing.AllocsPerRun(1000, func() { bal.Pick(bs, bs[:2], "10.0.0.1", "n0") }); n != 0 {
			t.Errorf("%q: Pick allocates %.1f times", policy, n)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	bs := backends(10)
	for _, policy := range policies[1:] {
		bal := mustBalancer(b, policy)
		b.Run(policy, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bal.Pick(bs, nil, "10.0.0.1", "n0")
			}
		})
		b.Run(policy+"/tried=2", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bal.Pick(bs, bs[3:5], "10.0.0.1", "n0")
			}
		})
		b.Run(policy+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bal.Pick(bs, nil, "10.0.0.1", "n0")
				}
			})
		})
	}
}
