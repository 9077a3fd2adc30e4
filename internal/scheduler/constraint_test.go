package scheduler

import (
	"strings"
	"testing"
)

func TestConstraint(t *testing.T) {
	a := &Node{Name: "n1", Labels: map[string]string{"zone": "a", "gpu": "nvidia"}}
	b := &Node{Name: "n2", Labels: map[string]string{"zone": "b"}}
	bare := &Node{Name: "n3"}
	tests := []struct {
		in         string
		canonical  string
		a, b, bare bool // match on each node
	}{
		{"zone=a", "zone=a", true, false, false},
		{" zone = a , b ", "zone=a,b", true, true, false},
		{"zone=a,a", "zone=a", true, false, false},
		{"zone!=a", "zone!=a", false, true, true},
		{"zone!=a,b", "zone!=a,b", false, false, true},
		{"gpu", "gpu", true, false, false},
		{"!gpu", "!gpu", false, true, true},
		{"! gpu", "!gpu", false, true, true},
		{"node=n2", "node=n2", false, true, false},
		{"node!=n3", "node!=n3", true, true, false},
		{"node", "node", true, true, true},
		{"topology.example.com/rack=r1", "topology.example.com/rack=r1", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := parseConstraint(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != tt.canonical {
				t.Errorf("canonical %q, want %q", c.String(), tt.canonical)
			}
			if got := [3]bool{c.match(a), c.match(b), c.match(bare)}; got != [3]bool{tt.a, tt.b, tt.bare} {
				t.Errorf("matches n1, n2, n3: %v, want %v", got, [3]bool{tt.a, tt.b, tt.bare})
			}
		})
	}
}

func TestConstraintErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "empty",
		"zone=":                        `label value ""`,
		"zone=a,":                      `label value ""`,
		"zone==a":                      `label value "=a"`,
		"=a":                           `label name ""`,
		"Zone=a":                       `label name "Zone"`,
		"!zone=a":                      "write label!=value",
		"!":                            `label name ""`,
		"zone=a b":                     `label value "a b"`,
		"zone=-a":                      `label value "-a"`,
		strings.Repeat("z", 300):       "at most 256",
		"a=" + strings.Repeat("v", 64): "label value",
	} {
		err := Constraint(in).Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

func TestValidateLabel(t *testing.T) {
	if err := ValidateLabel("zone", "eu-west-1a"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"node", "x"}, {"Zone", "a"}, {"zone", ""}, {"zone", "a=b"}} {
		if ValidateLabel(kv[0], kv[1]) == nil {
			t.Errorf("label %s=%s accepted", kv[0], kv[1])
		}
	}
}

// FuzzConstraint checks that parsing never panics, that the canonical form
// of a valid constraint parses back to the same constraint, and that a
// constraint and its negation never agree on a node.
func FuzzConstraint(f *testing.F) {
	for _, s := range []string{"zone=a", "zone!=a,b", "gpu", "!gpu", " node = n1 ", "a=b=c", "!x=y", "zone=,", "k=v,v"} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		c, err := parseConstraint(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		again, err := parseConstraint(c.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c.String(), s, err)
		}
		if again.String() != c.String() || again.op != c.op || again.key != c.key || strings.Join(again.values, ",") != strings.Join(c.values, ",") {
			t.Fatalf("%q -> %q -> %q", s, c.String(), again.String())
		}
		neg := c
		switch c.op {
		case opIn:
			neg.op = opNotIn
		case opNotIn:
			neg.op = opIn
		case opHas:
			neg.op = opHasNot
		case opHasNot:
			neg.op = opHas
		}
		for _, n := range []*Node{
			{Name: "n1"},
			{Name: value, Labels: map[string]string{c.key: value}},
		} {
			if c.match(n) == neg.match(n) {
				t.Fatalf("%q and its negation %q agree on node %+v", c.String(), neg.String(), n)
			}
		}
		if len(c.values) > 0 {
			n := &Node{Name: "x", Labels: map[string]string{c.key: c.values[0]}}
			if c.key == "node" {
				n.Name = c.values[0]
			}
			if (c.op == opIn) != c.match(n) {
				t.Fatalf("%q on a node with %s=%s", c.String(), c.key, c.values[0])
			}
		}
	})
}
