package dns

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/view"
)

// BenchmarkQuery measures A queries over UDP against a running server whose
// catalog holds 10 services of 10 passing instances. It reports queries per
// second and the p50 and p99 round trip. Run it with
//
//	go test -run '^$' -bench BenchmarkQuery ./internal/dns
func BenchmarkQuery(b *testing.B) {
	cat := &fakeCatalog{services: map[string][]registry.InstanceHealth{}}
	for n := range 3 {
		cat.nodes = append(cat.nodes, view.Node{Name: fmt.Sprintf("n%d", n), Addr: fmt.Sprintf("10.0.0.%d", n+1), Alive: true})
	}
	var names []string
	for i := range 10 {
		svc := fmt.Sprintf("svc%d", i)
		names = append(names, svc+".service.tandem.")
		for j := range 10 {
			addr := fmt.Sprintf("10.1.%d.%d", i, j)
			cat.services[svc] = append(cat.services[svc], inst(svc, fmt.Sprint(j), addr, 8080, fmt.Sprintf("n%d", j%3), registry.Passing))
		}
	}
	s := start(b, Config{}, cat)

	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		conn, err := c.Dial(s.Addr())
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		var lat []time.Duration
		m := new(mdns.Msg)
		for i := 0; pb.Next(); i++ {
			m.SetQuestion(names[i%len(names)], mdns.TypeA)
			t0 := time.Now()
			r, _, err := c.ExchangeWithConn(m, conn)
			lat = append(lat, time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
			if len(r.Answer) != 10 {
				b.Errorf("%d answers, want 10", len(r.Answer))
				return
			}
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(begin)
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "queries/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
