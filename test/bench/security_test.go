package bench

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// BenchmarkTokenRevocation measures how long a revoked token keeps working:
// from the moment the revocation is acknowledged by one node until every
// node of a 3-node cluster refuses it (each polled every millisecond, over
// kept-alive TLS connections). Goal: within a second.
func BenchmarkTokenRevocation(b *testing.B) {
	c := startCluster(b)
	if !c.Secure() {
		b.Skip("an insecure cluster has no tokens")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig(), MaxIdleConnsPerHost: 4}, Timeout: 5 * time.Second}
	status := func(nd *clustertest.Node, token string) int {
		req, _ := http.NewRequest(http.MethodGet, nd.URL("/v1/health"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var all []time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tok, err := c.Client().CreateToken(ctx, wire.TokenRequest{Role: "read"})
		if err != nil {
			b.Fatal(err)
		}
		for _, nd := range c.Nodes {
			if err := clustertest.Poll(5*time.Second, func() error {
				if status(nd, tok.Token) != 200 {
					return context.DeadlineExceeded
				}
				return nil
			}); err != nil {
				b.Fatalf("%s never took the new token", nd.Name)
			}
		}
		if err := c.ClientFor(c.Nodes[0].API).RevokeToken(ctx, tok.Info.ID); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		var wg sync.WaitGroup
		worst := make([]time.Duration, len(c.Nodes))
		for i, nd := range c.Nodes {
			wg.Go(func() {
				for time.Since(acked) < 5*time.Second && status(nd, tok.Token) != 401 {
					time.Sleep(time.Millisecond)
				}
				worst[i] = time.Since(acked)
			})
		}
		wg.Wait()
		cancel()
		all = append(all, slices.Max(worst))
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
}
