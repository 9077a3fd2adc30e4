package robustness

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
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
func cas(k, expect, v string) Input {
	return Input{Kind: CompareAndSet, Key: k, Expect: expect, Value: v}
}

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
		{"cas on the value read succeeds, a second on it conflicts", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, cas("a", "1", "2"), created},
			{2, 40, 50, cas("a", "1", "3"), exists},
			{1, 60, 70, get("a"), value("2")},
		}, porcupine.Ok},
		{"a replayed delete does not know its count", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, del("a"), Output{Replayed: true}},
			{1, 40, 50, get("a"), absent},
		}, porcupine.Ok},
		{"an idempotent put applied twice is caught", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 100, put("a", "2"), Output{Replayed: true}},
			{2, 30, 40, get("a"), value("2")},
			{0, 50, 60, put("a", "3"), ok},
			{2, 70, 80, get("a"), value("3")},
			{2, 110, 120, get("a"), value("2")},
		}, porcupine.Illegal},
		{"cas may not succeed on an overwritten value", []op{
			{0, 0, 10, put("a", "1"), ok},
			{0, 20, 30, put("a", "2"), ok},
			{1, 40, 50, cas("a", "1", "3"), created},
		}, porcupine.Illegal},
		{"cas may not conflict when the value is still there", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, cas("a", "1", "2"), exists},
		}, porcupine.Illegal},
		{"an unknown cas may have been applied", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, cas("a", "1", "2"), unknown},
			{2, 40, 50, get("a"), value("2")},
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

func TestLostWrites(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
		want int
	}{
		{"final read shows the last write", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, put("a", "2"), ok},
			{2, 100, 110, get("a"), value("2")},
		}, 0},
		{"an acknowledged write lost", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, put("a", "2"), ok},
			{2, 100, 110, get("a"), value("1")},
		}, 1},
		{"concurrent writes: either may win", []op{
			{0, 0, 30, put("a", "1"), ok},
			{1, 10, 20, put("a", "2"), ok},
			{2, 100, 110, get("a"), value("1")},
		}, 0},
		{"an unknown write may land last", []op{
			{0, 0, 10, put("a", "1"), unknown},
			{1, 20, 30, put("a", "2"), ok},
			{2, 100, 110, get("a"), value("1")},
		}, 0},
		{"a lost delete", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, del("a"), deleted(1)},
			{2, 100, 110, get("a"), value("1")},
		}, 1},
		{"a put lost after a delete", []op{
			{0, 0, 10, del("a"), deleted(0)},
			{1, 20, 30, put("a", "1"), ok},
			{2, 100, 110, get("a"), absent},
		}, 1},
		{"refusals and failed writes change nothing", []op{
			{0, 0, 10, put("a", "1"), ok},
			{1, 20, 30, putIfAbsent("a", "2"), exists},
			{1, 40, 50, get("a"), failed},
			{2, 100, 110, get("a"), value("1")},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var recs []Record
			for _, o := range tt.ops {
				recs = append(recs, Record{Client: o.client, Input: o.in, Output: o.out, Call: o.call, Return: o.ret, Failed: o.out == failed})
			}
			if got := LostWrites(recs, 100); got != tt.want {
				t.Errorf("got %d lost writes, want %d", got, tt.want)
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
