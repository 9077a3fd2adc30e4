package catalog

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/health"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/view"
)

// Runner runs the health checks of the instances this node owns, as its view
// shows them, and writes an instance's health to the store only when its
// state changes. Health keys are bound to the node's liveness lease, so they
// vanish, and the instances turn critical everywhere, when the node dies.
//
// The checks come from the store (the instance's own, or its service's), so
// they are whatever any writer put there; the runner builds every checker
// with this node's own settings (health.Node), and a check the node refuses
// (an exec check without --enable-exec-checks) is never run: it stays
// critical with the reason as its output, and is logged once.
type Runner struct {
	st    *store.Store
	v     *view.View
	self  health.Node
	lease func() (clientv3.LeaseID, <-chan struct{})
	log   *slog.Logger
}

// NewRunner returns the runner of node self, which runs checks as self
// allows. lease returns the node's current liveness lease and a channel
// closed when it next changes.
func NewRunner(st *store.Store, v *view.View, self health.Node, lease func() (clientv3.LeaseID, <-chan struct{}), log *slog.Logger) *Runner {
	return &Runner{st: st, v: v, self: self, lease: lease, log: log}
}

type running struct {
	cancel context.CancelFunc
	// instRev is the registration's revision and checks the checks it was
	// started with: a change of either restarts it. A change of the
	// service's spec that leaves the checks alone (a new count, a rolling
	// update's new generation) does not, so the instance keeps its health
	// instead of starting over from its initial state.
	instRev int64
	checks  []registry.Check
}

// Run starts and stops per-instance checkers as instances come and go.
func (r *Runner) Run(ctx context.Context) error {
	select {
	case <-r.v.Synced():
	case <-ctx.Done():
		return nil
	}
	active := map[string]*running{}
	// Every instance's goroutine is waited for before Run returns (deferred
	// first, so it runs after the cancels below).
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		for _, a := range active {
			a.cancel()
		}
	}()
	for {
		changed := r.v.Changed()
		want := map[string]view.Owned{}
		for _, o := range r.v.OwnedBy(r.self.Name) {
			want[o.Service+"/"+o.ID] = o
		}
		for key, a := range active {
			if o, ok := want[key]; !ok || o.Version[0] != a.instRev || !reflect.DeepEqual(registry.EffectiveChecks(o.Instance, o.Spec), a.checks) {
				a.cancel()
				delete(active, key)
			}
		}
		for key, o := range want {
			if _, ok := active[key]; ok {
				continue
			}
			ictx, cancel := context.WithCancel(ctx)
			in, checks := o.Instance, registry.EffectiveChecks(o.Instance, o.Spec)
			active[key] = &running{cancel: cancel, instRev: o.Version[0], checks: checks}
			wg.Go(func() { r.runInstance(ictx, in, checks) })
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// checkState is one check of an instance.
type checkState struct {
	check    registry.Check
	checker  health.Checker // nil for ttl
	tracker  *health.Tracker
	status   string
	output   string
	reported bool // a result has come in
}

type result struct {
	i int
	r health.Result
}

// runInstance runs every check of one instance until ctx ends.
func (r *Runner) runInstance(ctx context.Context, in registry.Instance, checks []registry.Check) {
	initial := in.InitialState
	if initial == "" {
		initial = registry.Critical
	}
	states := make([]*checkState, len(checks))
	results := make(chan result, len(checks))
	// The checks' goroutines end with ctx; the Wait deferred after the loop
	// runs before the checkers' Close.
	var wg sync.WaitGroup
	for i, c := range checks {
		st := &checkState{check: c, tracker: health.NewTracker(c, initial), status: initial, output: "no check result yet"}
		states[i] = st
		if c.Type == registry.CheckTTL {
			wg.Go(func() { r.runTTL(ctx, in, i, c, results) })
			continue
		}
		ch, err := health.New(c, in, r.self)
		if err != nil {
			// Never run: critical for as long as this registration stands,
			// whatever its initial state, and logged once, here.
			st.status, st.output = registry.Critical, err.Error()
			r.log.Warn("health check not run", "service", in.Service, "id", in.ID, "check", i+1, "type", c.Type, "err", err)
			continue
		}
		st.checker = ch
		if cl, ok := ch.(io.Closer); ok {
			defer cl.Close()
		}
		wg.Go(func() { runCheck(ctx, i, c, ch, results) })
	}
	// Deferred after the checkers' Close, so it runs before them.
	defer wg.Wait()

	written := ""
	var writtenLease clientv3.LeaseID
	var leaseChanged <-chan struct{} // closed when the lease write last saw changes
	// write stores the instance's health if it changed (or the lease did)
	// and reports whether the store now holds it.
	write := func() bool {
		h := registry.Health{Status: registry.Passing, Node: r.self.Name, Since: time.Now().UTC()}
		var statuses []string
		for _, st := range states {
			statuses = append(statuses, st.status)
			h.Checks = append(h.Checks, registry.CheckHealth{Type: st.check.Type, Status: st.status, Output: st.output})
		}
		h.Status = health.Aggregate(statuses)
		for _, st := range states {
			if st.status == h.Status {
				h.Output = st.output
				break
			}
		}
		// The signature is each check's state and whether it has reported
		// yet, so the first result replaces "no check result yet" even when
		// it does not change the state.
		sig := strings.Join(statuses, ",")
		for _, st := range states {
			if st.reported {
				sig += "+"
			}
		}
		lease, changed := r.lease()
		leaseChanged = changed
		if sig == written && lease == writtenLease {
			return true // write only on a change
		}
		if lease == 0 {
			return false // no lease yet
		}
		b, _ := json.Marshal(h)
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := r.st.Client().Put(wctx, keys.HealthKey(in.Service, in.ID), string(b), clientv3.WithLease(lease)); err != nil {
			r.log.Debug("write health", "service", in.Service, "id", in.ID, "err", err)
			return false
		}
		if sig != written {
			r.log.Info("instance health", "service", in.Service, "id", in.ID, "status", h.Status, "output", h.Output)
		}
		written, writtenLease = sig, lease
		return true
	}
	// A failed write is tried again after a jittered pause, so the
	// instances of a node cut off from the store do not retry in step.
	pauses := &backoff.ExponentialBackOff{InitialInterval: retryWrite, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: maxRetryWrite}
	pauses.Reset()
	var retry <-chan time.Time // set while the store lacks the current state
	if !write() {
		retry = time.After(pauses.NextBackOff())
	}
	for {
		ok := true
		select {
		case <-ctx.Done():
			return
		case res := <-results:
			st := states[res.i]
			st.status, _ = st.tracker.Observe(res.r)
			st.output, st.reported = res.r.Output, true
			ok = write()
		case <-leaseChanged:
			ok = write() // the health keys went with the old lease
		case <-retry:
			ok = write()
		}
		retry = nil
		if !ok {
			retry = time.After(pauses.NextBackOff())
		} else {
			pauses.Reset()
		}
	}
}

// retryWrite is about how soon a failed health write is tried again; the
// pause doubles while writes keep failing, up to maxRetryWrite (a lease
// change after a partition heals writes at once, without waiting for it).
const (
	retryWrite    = 250 * time.Millisecond
	maxRetryWrite = time.Second
)

// runCheck runs one checker on its interval, sending each result.
func runCheck(ctx context.Context, i int, c registry.Check, ch health.Checker, out chan<- result) {
	t := time.NewTicker(c.Interval.D())
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
		res := ch.Check(cctx)
		cancel()
		select {
		case out <- result{i, res}:
		case <-ctx.Done():
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runTTL turns TTL renewals seen in the view into results: the last
// renewal's status while it is younger than the TTL, critical after. Age is
// measured from when this node saw the renewal, so clocks need not agree.
func (r *Runner) runTTL(ctx context.Context, in registry.Instance, i int, c registry.Check, out chan<- result) {
	var last view.TTLRenewal
	var seen time.Time
	t := time.NewTicker(min(c.TTL.D()/4, 250*time.Millisecond))
	defer t.Stop()
	for {
		if ren, ok := r.v.TTL(in.Service, in.ID); ok && ren != last {
			last, seen = ren, time.Now()
		}
		res := health.Result{Status: registry.Critical, Output: "TTL never renewed"}
		if !seen.IsZero() {
			res = health.Result{Status: last.Status, Output: last.Output}
			if age := time.Since(seen); age > c.TTL.D() {
				res = health.Result{Status: registry.Critical, Output: "TTL expired: last renewed " + age.Round(time.Millisecond).String() + " ago"}
			}
		}
		select {
		case out <- result{i, res}:
		case <-ctx.Done():
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.v.Changed():
		}
	}
}
