package robustness

import (
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kind names an operation of the workload.
type Kind string

// The operations the model knows. Every write carries a value no other write
// carries, so a read names the one write it observed.
const (
	Get         Kind = "get"
	Put         Kind = "put"
	Delete      Kind = "delete"
	PutIfAbsent Kind = "put-if-absent" // PUT with cas=0: create only if the key does not exist
	// CompareAndSet is PUT with cas=<mod revision>: write only if the key
	// is still at the revision the client read.
	CompareAndSet Kind = "cas"
)

// Input is what a client asked for.
type Input struct {
	Kind  Kind
	Key   string
	Value string // put, put-if-absent and cas
	// For cas: the mod revision the client read, and the value it read at
	// that revision. Every write has its own value and its own revision,
	// so "the key is still at revision Rev" is "the key still holds
	// Expect", which the model can decide per key.
	Rev    int64
	Expect string
}

// Output is what the client was told. When Unknown is set the write may or
// may not have been applied (a 503 or a transport error) and the other
// fields mean nothing; reads are never Unknown, a failed read is left out
// of the history.
type Output struct {
	Unknown bool
	Found   bool   // get: the key existed
	Value   string // get: its value
	OK      bool   // put-if-absent: the key was created (false: 409)
	Deleted int64  // delete: keys removed, 0 or 1
	// Revision is the key's mod_revision as a get saw it, or the revision
	// of an acknowledged put. The model ignores it; CheckRevisions uses it.
	Revision int64
	// Replayed: a write sent with an idempotency key was answered from the
	// record of an earlier attempt of the same operation (applied once,
	// its answer lost). The answer says it was applied, at Revision; a
	// replayed delete does not know how many keys it removed.
	Replayed bool
}

// state is the model's state of one key. It is comparable, so porcupine's
// default == compares states.
type state struct {
	Exists bool
	Value  string
}

// Model is a sequential specification of tandem's KV API for get, put,
// delete and put-if-absent, partitioned by key: a history is linearizable
// if and only if the history of each key is.
//
// Unknown-outcome writes are recorded with their return at the end of the
// history (see History), so the checker may place them anywhere after their
// call, including after every other operation, which is the same as never
// applied. Their Step applies the input deterministically: a put sets the
// value, a delete removes the key, a put-if-absent creates the key only if
// it is absent.
//
// Compare-and-set compares mod revisions, which are cluster-wide and not
// known to a sequential model of one key. But every write carries its own
// value and gets its own revision, so a key is at the revision a client
// read exactly when it still holds the value the client read there: the
// model decides a cas from Input.Expect. CheckRevisions checks revisions
// themselves outside the model.
var Model = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() interface{} { return state{} },
	Step:      step,
	Hash: func(s interface{}) uint64 {
		st := s.(state)
		h := fnv.New64a()
		if st.Exists {
			h.Write([]byte{1})
		}
		h.Write([]byte(st.Value))
		return h.Sum64()
	},
	DescribeOperation: describeOperation,
	DescribeState: func(s interface{}) string {
		st := s.(state)
		if !st.Exists {
			return "absent"
		}
		return fmt.Sprintf("%q", st.Value)
	},
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

func step(s, in, out interface{}) (bool, interface{}) {
	st, i, o := s.(state), in.(Input), out.(Output)
	switch i.Kind {
	case Get:
		if o.Found != st.Exists || (o.Found && o.Value != st.Value) {
			return false, st
		}
		return true, st
	case Put:
		return true, state{Exists: true, Value: i.Value}
	case Delete:
		if !o.Unknown && !o.Replayed && o.Deleted != boolCount(st.Exists) {
			return false, st
		}
		return true, state{}
	case PutIfAbsent, CompareAndSet:
		applies := !st.Exists
		if i.Kind == CompareAndSet {
			applies = st.Exists && st.Value == i.Expect
		}
		if !o.Unknown && o.OK != applies {
			return false, st
		}
		if applies {
			return true, state{Exists: true, Value: i.Value}
		}
		return true, st
	}
	panic(fmt.Sprintf("robustness: unknown operation %q", i.Kind))
}

func boolCount(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func describeOperation(in, out interface{}) string {
	i, o := in.(Input), out.(Output)
	call := fmt.Sprintf("%s(%s)", i.Kind, i.Key)
	switch i.Kind {
	case Put, PutIfAbsent:
		call = fmt.Sprintf("%s(%s, %q)", i.Kind, i.Key, i.Value)
	case CompareAndSet:
		call = fmt.Sprintf("%s(%s, @%d=%q, %q)", i.Kind, i.Key, i.Rev, i.Expect, i.Value)
	}
	if o.Unknown {
		return call + " -> unknown"
	}
	switch i.Kind {
	case Get:
		if !o.Found {
			return call + " -> absent"
		}
		return fmt.Sprintf("%s -> %q @%d", call, o.Value, o.Revision)
	case Delete:
		if o.Replayed {
			return fmt.Sprintf("%s -> replayed @%d", call, o.Revision)
		}
		return fmt.Sprintf("%s -> deleted %d", call, o.Deleted)
	case PutIfAbsent, CompareAndSet:
		if !o.OK {
			return call + " -> conflict"
		}
	}
	return fmt.Sprintf("%s -> ok @%d", call, o.Revision)
}
