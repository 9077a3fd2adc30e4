package robustness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
)

// op is one hand-made record: client, call and return times, input, output.
type op struct {
	client    int
	call, ret int64
	in        Input
	out       Output
}

func put(k, v string) Input         { return Input{Kind: Put, Key: k, Value: v} }
func putIfAbsent(k, v string) Input { return Input{Kind: PutIfAbsent, Key: k, Value: v} }
func get(k string) Input            { return Input{Kind: Get, Key: k} }
func del(k string) Input            { return Input{Kind: Delete, Key: k} }

var (
	ok      = Output{}
	unknown = Output{Unknown: true}
	absent  = Output{}
	created = Output{OK: true}
	exists  = Output{}
	// failed marks a read that got no answer (Record.Failed).
	failed = Output{Value: "(read failed)", Revision: -1}
)

func value(v string) Output       { return Output{Found: true, Value: v} }
func deleted(n int64) Output      { return Output{Deleted: n} }
func at(o Output, r int64) Output { o.Revision = r; return o }

func history(ops []op) []porcupine.Operation {
	h := NewHistory()
	for _, o := range ops {
		h.Add(Record{Client: o.client, Input: o.in, Output: o.out, Call: o.call, Return: o.ret, Failed: o.out == failed})
	}
	return h.Operations()
}

func TestModel(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
		want porcupine.CheckResult
	}{
		{"concurrent reads see the old or the new value", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 40, put("a", "2"), ok},
			{2, 25, 30, get("a"), value("1")},
			{3, 26, 35, get("a"), value("2")},
			{2, 50, 60, get("a"), value("2")},
			{3, 0, 5, get("b"), absent},
		}, porcupine.Ok},
		{"stale read after an acknowledged put", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, get("a"), absent},
		}, porcupine.Illegal},
		{"read of an overwritten value", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, put("a", "2"), ok},
			{1, 40, 50, get("a"), value("1")},
		}, porcupine.Illegal},
		{"reads may not go back in time", []op{
			{0, 0, 100, put("a", "1"), ok},
			{1, 10, 20, get("a"), value("1")},
			{2, 30, 40, get("a"), absent},
		}, porcupine.Illegal},
		{"unknown put applied later", []op{
			{0, 0, 10, put("a", "1"), unknown},
			{1, 20, 30, get("a"), absent},
			{1, 40, 50, get("a"), value("1")},
		}, porcupine.Ok},
		{"unknown put never applied", []op{
			{0, 0, 10, put("a", "1"), unknown},
			{1, 20, 30, put("a", "2"), ok},
			{1, 40, 50, get("a"), value("2")},
		}, porcupine.Ok},
		{"unknown put seen before its call", []op{
			{1, 0, 5, get("a"), value("1")},
			{0, 10, 20, put("a", "1"), unknown},
		}, porcupine.Illegal},
		{"unknown put applied once only", []op{
			{0, 0, 10, put("a", "1"), unknown},
			{1, 20, 30, get("a"), value("1")},
			{1, 40, 50, put("a", "2"), ok},
			{1, 60, 70, get("a"), value("1")},
		}, porcupine.Illegal},
		{"failed reads are left out", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, get("a"), failed},
		}, porcupine.Ok},
		{"delete removes the key", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, del("a"), deleted(1)},
			{1, 40, 50, get("a"), absent},
			{1, 60, 70, del("a"), deleted(0)},
		}, porcupine.Ok},
		{"read after an acknowledged delete", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, del("a"), deleted(1)},
			{1, 40, 50, get("a"), value("1")},
		}, porcupine.Illegal},
		{"delete of an existing key reports 0", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, del("a"), deleted(0)},
		}, porcupine.Illegal},
		{"delete of a missing key reports 1", []op{
			{0, 0, 10, del("a"), deleted(1)},
		}, porcupine.Illegal},
		{"unknown delete applied later", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, del("a"), unknown},
			{1, 40, 50, get("a"), value("1")},
			{1, 60, 70, get("a"), absent},
		}, porcupine.Ok},
		{"put-if-absent creates once", []op{
			{0, 0, 10, putIfAbsent("a", "1"), created},
			{1, 20, 30, putIfAbsent("a", "2"), exists},
			{1, 40, 50, get("a"), value("1")},
			{0, 60, 70, del("a"), deleted(1)},
			{0, 80, 90, putIfAbsent("a", "3"), created},
		}, porcupine.Ok},
		{"concurrent put-if-absent: one wins", []op{
			{0, 0, 10, putIfAbsent("a", "1"), created},
			{1, 0, 10, putIfAbsent("a", "2"), exists},
			{2, 20, 30, get("a"), value("1")},
		}, porcupine.Ok},
		{"put-if-absent: both win", []op{
			{0, 0, 10, putIfAbsent("a", "1"), created},
			{1, 0, 10, putIfAbsent("a", "2"), created},
		}, porcupine.Illegal},
		{"put-if-absent refused on a missing key", []op{
			{0, 0, 10, putIfAbsent("a", "1"), exists},
		}, porcupine.Illegal},
		{"unknown put-if-absent on an existing key changes nothing", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, putIfAbsent("a", "2"), unknown},
			{0, 40, 50, get("a"), value("2")},
		}, porcupine.Illegal},
		{"unknown put-if-absent on a missing key may create it", []op{
			{1, 0, 10, putIfAbsent("a", "2"), unknown},
			{0, 20, 30, get("a"), absent},
			{0, 40, 50, get("a"), value("2")},
		}, porcupine.Ok},
		{"keys are independent", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, put("b", "2"), ok},
			{1, 40, 50, get("a"), value("1")},
			{1, 60, 70, get("b"), value("2")},
		}, porcupine.Ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(Model, history(tt.ops), 5*time.Second); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestUnknownOutcomeReturnsAtEnd(t *testing.T) {
	ops := history([]op{
		{0, 0, 10, put("a", "1"), unknown},
		{1, 20, 30, get("a"), absent},
	})
	if ops[0].Return <= 30 {
		t.Errorf("unknown put returns at %d, want after the history's end (30)", ops[0].Return)
	}
}

func TestCheckRevisions(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
		want int
	}{
		{"consistent", []op{
			{0, 0, 10, put("a", "1"), at(ok, 5)},
			{1, 20, 30, get("a"), at(value("1"), 5)},
			{0, 40, 50, putIfAbsent("b", "2"), at(created, 6)},
			{1, 60, 70, get("b"), at(value("2"), 6)},
		}, 0},
		{"value at two revisions", []op{
			{0, 0, 10, put("a", "1"), at(ok, 5)},
			{1, 20, 30, get("a"), at(value("1"), 7)},
		}, 1},
		{"two values at one revision", []op{
			{0, 0, 10, put("a", "1"), at(ok, 5)},
			{1, 20, 30, put("b", "2"), at(ok, 5)},
		}, 1},
		{"unknown writes and refusals carry no revision", []op{
			{0, 0, 10, put("a", "1"), at(unknown, 0)},
			{1, 20, 30, putIfAbsent("a", "2"), at(exists, 0)},
			{1, 40, 50, get("a"), at(value("1"), 9)},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckRevisions(history(tt.ops)); len(got) != tt.want {
				t.Errorf("got %d problems %q, want %d", len(got), got, tt.want)
			}
		})
	}
}

// TestCheckKeepsEvidence checks that a failed check leaves the
// visualisation, the history and the logs behind.
func TestCheckKeepsEvidence(t *testing.T) {
	out := t.TempDir()
	t.Setenv("TANDEM_ROBUSTNESS_OUT", out)
	log := filepath.Join(t.TempDir(), "n1.log")
	if err := os.WriteFile(log, []byte("node log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := Check(t, history([]op{
		{0, 0, 10, put("a", "1"), at(ok, 5)},
		{1, 20, 30, get("a"), absent},
	}), []string{log}, 5*time.Second)
	if rep.OK() || rep.Result != porcupine.Illegal || rep.Violations != 1 || rep.Ops != 2 {
		t.Fatalf("report %+v, want Illegal with 1 violation in 2 operations", rep)
	}
	if filepath.Dir(rep.Dir) != out {
		t.Fatalf("evidence in %q, want under %q", rep.Dir, out)
	}
	for _, f := range []string{"history.html", "history.txt", "problems.txt", "n1.log"} {
		if st, err := os.Stat(filepath.Join(rep.Dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestKillLeaderLinearizable runs six clients on three nodes for 8 s, kills
// -9 the store leader at 3 s and restarts it at 5 s, then reads every key
// once the cluster is healthy and checks the whole history, final reads
// included, for linearizability.
func TestKillLeaderLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	const (
		runFor    = 8 * time.Second
		killAt    = 3 * time.Second
		restartAt = 5 * time.Second
	)
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	var addrs, logs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.API)
		logs = append(logs, nd.Log)
	}
	w := Workload{Addrs: addrs, Clients: 6, Keys: 5, Timeout: time.Second}
	h := NewHistory()
	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h) }()

	// The fault schedule is a timeline, not a wait for some state: sleeping
	// until a point of it is what the schedule means.
	until := func(d time.Duration) { time.Sleep(d - time.Duration(h.Now())) }
	until(killAt)
	leader := c.Leader()
	killed := time.Duration(h.Now())
	leader.Kill()
	t.Logf("kill -9 leader %s at %.2fs", leader.Name, killed.Seconds())
	until(restartAt)
	leader.Restart()
	restarted := time.Duration(h.Now())
	t.Logf("%s restarted and serving at %.2fs", leader.Name, restarted.Seconds())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	end := time.Duration(h.Now())

	c.WaitHealthy()
	final := client.New(addrs)
	for _, key := range w.KeyNames() {
		id := h.NewClient()
		err := clustertest.Poll(20*time.Second, func() error {
			r := Record{Client: id, Input: get(key), Call: h.Now()}
			r.Output, r.Failed = Apply(final, r.Input, time.Second)
			r.Return = h.Now()
			if r.Failed {
				return fmt.Errorf("final read of %s failed", key)
			}
			h.Add(r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	rep := Check(t, h.Operations(), logs, 30*time.Second)
	f := figuresOf(h.Records(), killed, restarted, end)
	t.Logf("ops checked %d (%d failed reads left out), violations %d, result %s", rep.Ops, f.failedReads, rep.Violations, rep.Result)
	t.Logf("unknown-outcome writes %d of %d writes", f.unknown, f.writes)
	t.Logf("success rate: before the kill %s, leader down %s, after the restart %s", f.rate[0], f.rate[1], f.rate[2])
	if f.firstWrite >= 0 {
		t.Logf("first acknowledged write invoked after the kill returned %s after the kill", f.firstWrite.Round(time.Millisecond))
	} else {
		t.Errorf("no write invoked after the kill was acknowledged")
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
	if !rep.OK() {
		t.Fatalf("history not proved linearizable (%s); evidence in %s", rep.Result, rep.Dir)
	}
}

// figures summarise a run's availability. An operation counts in the window
// (before the kill, leader down, after the restart) in which it was invoked,
// so an operation invoked just before the kill that failed counts before it.
type figures struct {
	writes, unknown, failedReads int
	rate                         [3]string // before, during, after the fault
	firstWrite                   time.Duration
}

func figuresOf(recs []Record, killed, restarted, end time.Duration) figures {
	f := figures{firstWrite: -1}
	var okN, allN [3]int
	for _, r := range recs {
		call := time.Duration(r.Call)
		if call > end {
			continue // the final reads
		}
		isWrite := r.Input.Kind != Get
		if isWrite {
			f.writes++
		}
		if r.Output.Unknown {
			f.unknown++
		}
		if r.Failed {
			f.failedReads++
		}
		w := 0
		switch {
		case call >= restarted:
			w = 2
		case call >= killed:
			w = 1
		}
		allN[w]++
		success := !r.Failed && !r.Output.Unknown
		if success {
			okN[w]++
		}
		if isWrite && success && call >= killed {
			if d := time.Duration(r.Return) - killed; f.firstWrite < 0 || d < f.firstWrite {
				f.firstWrite = d
			}
		}
	}
	for i := range f.rate {
		f.rate[i] = "n/a"
		if allN[i] > 0 {
			f.rate[i] = fmt.Sprintf("%d/%d (%.1f%%)", okN[i], allN[i], 100*float64(okN[i])/float64(allN[i]))
		}
	}
	return f
}
