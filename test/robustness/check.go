package robustness

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Report is the outcome of checking a history.
type Report struct {
	Ops    int                   // operations checked (failed operations excluded)
	Result porcupine.CheckResult // Ok, Illegal, or Unknown when the checker timed out
	// Violations counts the keys whose history is not linearizable plus the
	// revision anomalies found by CheckRevisions.
	Violations int
	Problems   []string // one line per violation
	Dir        string   // where the evidence was written; empty when all is well
}

// OK reports whether the history was proved linearizable and showed no
// revision anomaly.
func (r Report) OK() bool { return r.Result == porcupine.Ok && r.Violations == 0 }

// Check checks ops against Model within timeout, and their revisions with
// CheckRevisions. When either fails it writes porcupine's visualisation
// (history.html), the history as text, the problems, and a copy of each
// file in logs into a new folder under $TANDEM_ROBUSTNESS_OUT (default: the
// system's temporary folder) and logs its path.
func Check(t testing.TB, ops []porcupine.Operation, logs []string, timeout time.Duration) Report {
	t.Helper()
	rep := Report{Ops: len(ops)}
	var info porcupine.LinearizationInfo
	rep.Result, info = porcupine.CheckOperationsVerbose(Model, ops, timeout)
	switch rep.Result {
	case porcupine.Illegal:
		for _, part := range partitionByKey(ops) {
			if porcupine.CheckOperationsTimeout(Model, part, timeout) == porcupine.Illegal {
				rep.Violations++
				rep.Problems = append(rep.Problems, fmt.Sprintf("history of key %s (%d operations) is not linearizable", part[0].Input.(Input).Key, len(part)))
			}
		}
	case porcupine.Unknown:
		rep.Problems = append(rep.Problems, fmt.Sprintf("checker gave up after %s: linearizability not proved", timeout))
	}
	revs := CheckRevisions(ops)
	rep.Violations += len(revs)
	rep.Problems = append(rep.Problems, revs...)
	if rep.OK() {
		return rep
	}
	dir, err := evidenceDir(t.Name())
	if err != nil {
		t.Errorf("robustness: keep evidence: %v", err)
		return rep
	}
	rep.Dir = dir
	if err := porcupine.VisualizePath(Model, info, filepath.Join(dir, "history.html")); err != nil {
		t.Errorf("robustness: write visualisation: %v", err)
	}
	writeFile(t, filepath.Join(dir, "history.txt"), describeHistory(ops))
	writeFile(t, filepath.Join(dir, "problems.txt"), strings.Join(rep.Problems, "\n")+"\n")
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Errorf("robustness: copy log: %v", err)
			continue
		}
		writeFile(t, filepath.Join(dir, filepath.Base(l)), string(b))
	}
	t.Logf("robustness: evidence (history.html, history.txt, problems.txt, node logs) in %s", dir)
	return rep
}

// CheckRevisions checks what the model leaves out: since every write has
// its own value, every acknowledged put and every read of a value must
// agree on the value's mod revision, and no two values share a revision.
// A write applied twice (say, retried after an attempt that did commit)
// shows up here as one value seen at two revisions.
func CheckRevisions(ops []porcupine.Operation) []string {
	revOf := map[string]int64{}   // value -> mod revision
	valueAt := map[int64]string{} // mod revision -> value
	var problems []string
	seen := map[string]bool{}
	note := func(p string) {
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		var value string
		switch {
		case out.Unknown:
			continue
		case in.Kind == Get && out.Found:
			value = out.Value
		case in.Kind == Put, (in.Kind == PutIfAbsent || in.Kind == CompareAndSet) && out.OK:
			value = in.Value
		default:
			continue
		}
		if r, ok := revOf[value]; ok && r != out.Revision {
			note(fmt.Sprintf("value %q seen at mod revisions %d and %d: applied twice?", value, min(r, out.Revision), max(r, out.Revision)))
			continue
		}
		revOf[value] = out.Revision
		if v, ok := valueAt[out.Revision]; ok && v != value {
			note(fmt.Sprintf("values %q and %q both at revision %d", v, value, out.Revision))
			continue
		}
		valueAt[out.Revision] = value
	}
	sort.Strings(problems)
	return problems
}

func evidenceDir(test string) (string, error) {
	root := os.Getenv("TANDEM_ROBUSTNESS_OUT")
	if root == "" {
		root = os.TempDir()
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	name := "tandem-robustness-" + strings.NewReplacer("/", "_", " ", "_").Replace(test) + "-"
	return os.MkdirTemp(root, name)
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Errorf("robustness: %v", err)
	}
}

// describeHistory lists the operations by call time, one a line.
func describeHistory(ops []porcupine.Operation) string {
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	var b strings.Builder
	for _, op := range sorted {
		ret := fmt.Sprintf("%.3fs", float64(op.Return)/1e9)
		if op.Output.(Output).Unknown {
			ret = "never"
		}
		fmt.Fprintf(&b, "%.3fs..%s client %d: %s\n", float64(op.Call)/1e9, ret, op.ClientId, describeOperation(op.Input, op.Output))
	}
	return b.String()
}

// LostWrites counts acknowledged writes the final state does not reflect.
// For each key, the final state (the last final read, invoked at or after
// end) was made by some write: the put that carried its value, or for an
// absent key the latest delete (or no write at all). Every acknowledged
// write invoked after that write had returned came later in any order the
// cluster could have chosen, so the final state should show it or a still
// later write: each such write counts as lost. A write whose outcome is
// unknown may have been applied at any time, so it never ends the window.
// Failed records and refused put-if-absent and cas writes changed nothing
// and count for nothing.
func LostWrites(recs []Record, end int64) int {
	type keyRecs struct {
		final  *Record
		writes []Record
	}
	keys := map[string]*keyRecs{}
	for i := range recs {
		r := &recs[i]
		if r.Failed {
			continue
		}
		k := keys[r.Input.Key]
		if k == nil {
			k = &keyRecs{}
			keys[r.Input.Key] = k
		}
		switch {
		case r.Input.Kind == Get:
			if r.Call >= end && (k.final == nil || r.Return > k.final.Return) {
				k.final = r
			}
		case (r.Input.Kind == PutIfAbsent || r.Input.Kind == CompareAndSet) && !r.Output.Unknown && !r.Output.OK:
		default:
			k.writes = append(k.writes, *r)
		}
	}
	const never = int64(1<<63 - 1)
	lost := 0
	for _, k := range keys {
		if k.final == nil {
			continue
		}
		// made is when the write that made the final state returned.
		made := int64(0)
		for _, w := range k.writes {
			ret := w.Return
			if w.Output.Unknown {
				ret = never
			}
			switch {
			case k.final.Output.Found && w.Input.Kind != Delete && w.Input.Value == k.final.Output.Value:
				made = ret
			case !k.final.Output.Found && w.Input.Kind == Delete:
				made = max(made, ret)
			}
		}
		for _, w := range k.writes {
			if !w.Output.Unknown && w.Call > made {
				lost++
			}
		}
	}
	return lost
}
