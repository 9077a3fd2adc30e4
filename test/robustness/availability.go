package robustness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Traffic is the availability workload: clients sending HTTP requests to
// one service through the nodes' proxies, a mix of idempotent GETs and
// non-idempotent POSTs, while faults are injected. Each client has one
// request outstanding and a home proxy; it sends every request to its home
// proxy first and moves on to the next proxies, in order, the way a real
// client given several addresses does:
//
//   - Connection refused (any dial error): the next proxy, at once. Nothing
//     was sent, so this is safe for a POST too. Counted as a failover.
//   - Any other transport error (reset, EOF, timeout): a GET goes to the
//     next proxy (counted as a failover); a POST is not sent again, since it
//     may have reached a backend: it failed.
//   - An HTTP answer is final: 200 is a success, anything else a failure.
//     The proxy has already retried what it could; a client does not retry
//     a 502 or 503 from a proxy that is up.
//
// A request looks for a proxy for at most Deadline; after a round in which
// every proxy refused, the client waits a moment before the next round. So
// a GET fails when a proxy answers anything but 200, or when no proxy
// answers within Deadline.
type Traffic struct {
	// Proxies are the nodes' proxy host:ports; client i's home is
	// Proxies[i mod n].
	Proxies []string
	// Service is sent as the Host header.
	Service string
	// Clients is the number of concurrent clients; default 8.
	Clients int
	// PostEvery makes every PostEvery-th request of a client a POST
	// (client i starts at offset i); default 4.
	PostEvery int
	// Interval is the pace of each client: at most one request per
	// Interval; default 10ms.
	Interval time.Duration
	// Deadline bounds one request, over every proxy it tries; default 2s.
	Deadline time.Duration
	// AttemptTimeout bounds one try through one proxy; default 1s.
	AttemptTimeout time.Duration
}

// TestIDHeader carries a request's unique id to the backend.
const TestIDHeader = "X-Test-Id"

func (tr Traffic) withDefaults() Traffic {
	if tr.Clients == 0 {
		tr.Clients = 8
	}
	if tr.PostEvery == 0 {
		tr.PostEvery = 4
	}
	if tr.Interval == 0 {
		tr.Interval = 10 * time.Millisecond
	}
	if tr.Deadline == 0 {
		tr.Deadline = 2 * time.Second
	}
	if tr.AttemptTimeout == 0 {
		tr.AttemptTimeout = time.Second
	}
	return tr
}

// Request is one request of a client, over every proxy it tried.
type Request struct {
	Client int
	Post   bool
	ID     string        // the X-Test-Id header
	Call   time.Duration // since the run's start, on the monotonic clock
	Return time.Duration
	Status int    // the final HTTP status; 0 when no proxy answered
	Proxy  string // the proxy that answered
	Body   string // the answer (a backend answers with its instance id)
	Err    string // the last error, when it failed
	// Failovers counts the proxies the client moved past (refused, or a GET
	// whose connection broke); FailoverErr is why it first moved on.
	Failovers   int
	FailoverErr string
	// Sent is false for a request that reached no proxy (every connection
	// was refused); a POST with Sent may have reached a backend.
	Sent bool
}

// OK reports whether the request got a 200.
func (r Request) OK() bool { return r.Status == http.StatusOK }

func (r Request) String() string {
	m := http.MethodGet
	if r.Post {
		m = http.MethodPost
	}
	out := fmt.Sprintf("%.3fs..%.3fs client %d %s %s", r.Call.Seconds(), r.Return.Seconds(), r.Client, m, r.ID)
	if r.Status != 0 {
		out += fmt.Sprintf(" -> %d via %s %q", r.Status, r.Proxy, r.Body)
	}
	if r.Err != "" {
		out += " error: " + r.Err
	}
	if r.Failovers > 0 {
		out += fmt.Sprintf(" (%d failovers, the first after %s)", r.Failovers, r.FailoverErr)
	}
	return out
}

// Run runs the clients until ctx ends and returns every request, sorted
// by call time. Times are measured from start. A request under way when
// ctx ends is given its whole time.
func (tr Traffic) Run(ctx context.Context, start time.Time) ([]Request, error) {
	tr = tr.withDefaults()
	if len(tr.Proxies) == 0 {
		return nil, errors.New("traffic: no proxy address")
	}
	var (
		mu  sync.Mutex
		all []Request
		wg  sync.WaitGroup
	)
	for i := range tr.Clients {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: tr.AttemptTimeout}).DialContext,
				MaxIdleConnsPerHost: 2,
				IdleConnTimeout:     30 * time.Second,
				DisableCompression:  true,
			}}
			defer hc.CloseIdleConnections()
			tick := time.NewTicker(tr.Interval)
			defer tick.Stop()
			var mine []Request
			for seq := 0; ctx.Err() == nil; seq++ {
				post := (seq+i)%tr.PostEvery == 0
				mine = append(mine, tr.send(hc, start, i, post, fmt.Sprintf("c%d-%d", i, seq)))
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b Request) int { return int(a.Call - b.Call) })
	return all, nil
}

// send makes one request, moving between proxies as Traffic describes.
func (tr Traffic) send(hc *http.Client, start time.Time, client int, post bool, id string) Request {
	r := Request{Client: client, Post: post, ID: id, Call: time.Since(start)}
	deadline := time.Now().Add(tr.Deadline)
	n := len(tr.Proxies)
	for try := 0; ; try++ {
		if try > 0 && try%n == 0 && !r.Sent {
			// Every proxy refused: the client waits a little, as one
			// would, rather than spin.
			time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
		}
		left := time.Until(deadline)
		if left <= 0 {
			r.Err = fmt.Sprintf("no proxy answered within %s; last: %s", tr.Deadline, r.Err)
			break
		}
		proxy := tr.Proxies[(client+try)%n]
		status, body, err := tr.attempt(hc, proxy, post, id, min(tr.AttemptTimeout, left))
		if err == nil {
			r.Status, r.Body, r.Proxy, r.Sent, r.Err = status, body, proxy, true, ""
			break
		}
		r.Err = fmt.Sprintf("%s: %v", proxy, err)
		if dialFailed(err) {
			r.failover()
			continue
		}
		r.Sent = true
		if post {
			break // it may have reached a backend: never send it twice
		}
		r.failover()
	}
	r.Return = time.Since(start)
	return r
}

func (r *Request) failover() {
	if r.Failovers == 0 {
		r.FailoverErr = r.Err
	}
	r.Failovers++
}

// attempt sends the request through one proxy and reads the answer.
func (tr Traffic) attempt(hc *http.Client, proxy string, post bool, id string, timeout time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	method, body := http.MethodGet, io.Reader(nil)
	if post {
		method, body = http.MethodPost, strings.NewReader("order "+id)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+proxy+"/", body)
	if err != nil {
		return 0, "", err
	}
	req.Host = tr.Service
	req.Header.Set(TestIDHeader, id)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil {
		return 0, "", fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// dialFailed reports whether err says no connection was made.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// ServeBackend serves one instance of the availability workload's service
// on ln until ctx ends: /healthz answers ok, and any other request answers
// 200 with the instance's name. A POST's X-Test-Id is first appended to the
// file at postLog, with one unbuffered O_APPEND write, so the record
// outlives a kill -9 that comes after it and every POST that got an answer
// is in the file.
func ServeBackend(ctx context.Context, ln net.Listener, name, postLog string) error {
	f, err := os.OpenFile(postLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open post log: %w", err)
	}
	defer f.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return // the body did not arrive whole: not delivered
			}
			if _, err := f.WriteString(r.Header.Get(TestIDHeader) + "\n"); err != nil {
				http.Error(w, "record post: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		io.WriteString(w, name+"\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Deliveries counts, by X-Test-Id, the POSTs the backends recorded in the
// post logs at paths.
func Deliveries(paths []string) (map[string]int, error) {
	n := map[string]int{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if id := sc.Text(); id != "" {
				n[id]++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
	}
	return n, nil
}

// Posts is what became of the POSTs: Twice and Lost must stay empty.
type Posts struct {
	Twice []Request // reached backends more than once
	Lost  []Request // acknowledged, yet in no backend's log
	// FailedDelivered failed at the client but reached a backend once (a
	// 504 from a frozen instance that answered later; a reset connection).
	// That is allowed: the client cannot tell, and must not send it again.
	FailedDelivered []Request
}

// CheckPosts compares the POSTs of reqs with what the backends recorded
// (see Deliveries).
func CheckPosts(reqs []Request, delivered map[string]int) Posts {
	var p Posts
	for _, r := range reqs {
		if !r.Post {
			continue
		}
		switch n := delivered[r.ID]; {
		case n > 1:
			p.Twice = append(p.Twice, r)
		case n == 0 && r.OK():
			p.Lost = append(p.Lost, r)
		case n == 1 && !r.OK():
			p.FailedDelivered = append(p.FailedDelivered, r)
		}
	}
	return p
}

// Event is a point of the fault timeline: a fault, or the end of one. It
// opens a window that the next event closes.
type Event struct {
	At   time.Duration // since the run's start
	What string
}

// Phase sums up the requests invoked between two events.
type Phase struct {
	Name           string
	From, To       time.Duration
	Gets, GetsOK   int
	Posts, PostsOK int
	Failovers      int
	GetP50, GetP99 time.Duration
	GetMax         time.Duration
	// The first failed GET, failed POST and failover, for the log.
	FirstFailedGet, FirstFailedPost, FirstFailover string
}

// Rate is the GET success rate of the phase, as text.
func (p Phase) Rate() string { return successRate(p.GetsOK, p.Gets) }

func successRate(ok, all int) string {
	if all == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d/%d (%.3f%%)", ok, all, 100*float64(ok)/float64(all))
}

// Availability is the figures of a run.
type Availability struct {
	Requests       int
	Gets, GetsOK   int
	Posts, PostsOK int
	PostsNotSent   int // reached no proxy: certainly not delivered
	Failovers      int
	// Failed counts the requests that did not succeed by method and cause:
	// "GET 404 tandem proxy: no service for host", "POST no answer: ...".
	Failed map[string]int
	Phases []Phase
	// Recovery, per event: the time from the event until GETs succeed
	// again, that is until the first successful GET invoked after the last
	// GET of the event's window that failed; 0 when none failed.
	Recovery []time.Duration
}

// GetRate is the GET success ratio of the whole run (1 with no GET).
func (a Availability) GetRate() float64 {
	if a.Gets == 0 {
		return 1
	}
	return float64(a.GetsOK) / float64(a.Gets)
}

// Summarize computes the figures of reqs, split at the events (in time
// order); the run ended at end. A request counts in the phase in which it
// was invoked.
func Summarize(reqs []Request, events []Event, end time.Duration) Availability {
	a := Availability{Failed: map[string]int{}}
	bounds := []Event{{At: 0, What: "before any fault"}}
	bounds = append(bounds, events...)
	for i, ev := range bounds {
		to := end
		if i+1 < len(bounds) {
			to = bounds[i+1].At
		}
		a.Phases = append(a.Phases, Phase{Name: ev.What, From: ev.At, To: to})
	}
	lat := make([][]time.Duration, len(a.Phases))
	for _, r := range reqs {
		a.Requests++
		a.Failovers += r.Failovers
		if !r.OK() {
			a.Failed[failureCause(r)]++
		}
		i := phaseOf(a.Phases, r.Call)
		p := &a.Phases[i]
		p.Failovers += r.Failovers
		if r.Failovers > 0 && p.FirstFailover == "" {
			p.FirstFailover = r.String()
		}
		if r.Post {
			a.Posts++
			p.Posts++
			if r.OK() {
				a.PostsOK++
				p.PostsOK++
			}
			if !r.Sent {
				a.PostsNotSent++
			}
			if !r.OK() && p.FirstFailedPost == "" {
				p.FirstFailedPost = r.String()
			}
			continue
		}
		a.Gets++
		p.Gets++
		lat[i] = append(lat[i], r.Return-r.Call)
		if r.OK() {
			a.GetsOK++
			p.GetsOK++
			continue
		}
		if p.FirstFailedGet == "" {
			p.FirstFailedGet = r.String()
		}
	}
	for i := range a.Phases {
		p := &a.Phases[i]
		slices.Sort(lat[i])
		if n := len(lat[i]); n > 0 {
			p.GetP50, p.GetP99, p.GetMax = lat[i][n/2], lat[i][n*99/100], lat[i][n-1]
		}
	}
	for i, ev := range events {
		a.Recovery = append(a.Recovery, recoveryTime(reqs, ev.At, a.Phases[i+1].To))
	}
	return a
}

var hostPort = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// failureCause says in a few words why r failed.
func failureCause(r Request) string {
	m := http.MethodGet
	if r.Post {
		m = http.MethodPost
	}
	if r.Status != 0 {
		msg, _, _ := strings.Cut(r.Body, "\"") // drop quoted names
		msg = hostPort.ReplaceAllString(msg, "ADDR")
		if len(msg) > 80 {
			msg = msg[:80]
		}
		return strings.TrimSpace(fmt.Sprintf("%s %d %s", m, r.Status, msg))
	}
	err := r.Err
	if i := strings.LastIndex(err, ": "); i >= 0 {
		err = err[i+2:]
	}
	return strings.TrimSpace(fmt.Sprintf("%s no answer: %s", m, err))
}

func phaseOf(phases []Phase, t time.Duration) int {
	for i := len(phases) - 1; i > 0; i-- {
		if t >= phases[i].From {
			return i
		}
	}
	return 0
}

// recoveryTime is the time from an event at `from` until GETs succeed again:
// the return of the first successful GET invoked after the last GET that
// failed while the event's window [from, to) lasted (invoked before to,
// answered after from). It is 0 when no GET failed, and to-from when none
// succeeded after the last failure.
func recoveryTime(reqs []Request, from, to time.Duration) time.Duration {
	lastFail := time.Duration(-1)
	for _, r := range reqs {
		if !r.Post && !r.OK() && r.Call < to && r.Return >= from {
			lastFail = max(lastFail, r.Call)
		}
	}
	if lastFail < 0 {
		return 0
	}
	for _, r := range reqs { // sorted by call time
		if !r.Post && r.OK() && r.Call > lastFail {
			return max(r.Return-from, 0)
		}
	}
	return to - from
}
