package scheduler

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Constraint is a rule on node labels, written as one of:
//
//	zone=a       the node's label zone is a
//	zone=a,b     the node's label zone is a or b
//	zone!=a      the node has no label zone, or it is not a
//	zone!=a,b    the node has no label zone, or it is neither a nor b
//	gpu          the node has a label gpu (any value)
//	!gpu         the node has no label gpu
//
// The label "node" is built in: it is the node's name (node!=n3 keeps
// instances off n3). Spaces around names and values are ignored.
type Constraint string

// Validate checks the constraint's syntax.
func (c Constraint) Validate() error {
	_, err := parseConstraint(string(c))
	return err
}

type constraintOp uint8

const (
	opIn     constraintOp = iota // key=v1,v2
	opNotIn                      // key!=v1,v2
	opHas                        // key
	opHasNot                     // !key
)

// constraint is a parsed Constraint.
type constraint struct {
	key    string
	op     constraintOp
	values []string // for opIn and opNotIn, in the order written, without repeats
}

const constraintSyntax = "write label=value, label=v1,v2, label!=value, label or !label"

func parseConstraint(s string) (constraint, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return constraint{}, errors.New("empty: " + constraintSyntax)
	}
	if len(s) > maxConstraintLen {
		return constraint{}, fmt.Errorf("%d characters: at most %d", len(s), maxConstraintLen)
	}
	var c constraint
	var values string
	if rest, ok := strings.CutPrefix(s, "!"); ok {
		if strings.Contains(rest, "=") {
			return constraint{}, fmt.Errorf("%q: a leading ! means the label is absent; to exclude a value, write label!=value", s)
		}
		c.op, c.key = opHasNot, strings.TrimSpace(rest)
	} else if k, v, ok := strings.Cut(s, "!="); ok {
		c.op, c.key, values = opNotIn, strings.TrimSpace(k), v
	} else if k, v, ok := strings.Cut(s, "="); ok {
		c.op, c.key, values = opIn, strings.TrimSpace(k), v
	} else {
		c.op, c.key = opHas, s
	}
	if err := validateLabelKey(c.key); err != nil {
		return constraint{}, fmt.Errorf("%q: %w (%s)", s, err, constraintSyntax)
	}
	if c.op == opIn || c.op == opNotIn {
		for v := range strings.SplitSeq(values, ",") {
			v = strings.TrimSpace(v)
			if err := validateLabelValue(v); err != nil {
				return constraint{}, fmt.Errorf("%q: %w", s, err)
			}
			if !slices.Contains(c.values, v) {
				c.values = append(c.values, v)
			}
		}
	}
	return c, nil
}

// String writes c in its canonical form (no spaces), which parses back to c.
func (c constraint) String() string {
	switch c.op {
	case opIn:
		return c.key + "=" + strings.Join(c.values, ",")
	case opNotIn:
		return c.key + "!=" + strings.Join(c.values, ",")
	case opHasNot:
		return "!" + c.key
	default:
		return c.key
	}
}

// match reports whether node n meets c.
func (c constraint) match(n *Node) bool {
	v, ok := labelOf(n, c.key)
	switch c.op {
	case opIn:
		return ok && slices.Contains(c.values, v)
	case opNotIn:
		return !ok || !slices.Contains(c.values, v)
	case opHasNot:
		return !ok
	default:
		return ok
	}
}

// labelOf returns node n's label key; "node" is the node's name.
func labelOf(n *Node, key string) (string, bool) {
	if key == DefaultSpread {
		return n.Name, true
	}
	v, ok := n.Labels[key]
	return v, ok
}

var (
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
)

func validateLabelKey(k string) error {
	if !labelKeyRE.MatchString(k) {
		return fmt.Errorf("label name %q: use 1-63 lowercase letters, digits, dots, dashes, underscores or slashes, starting and ending with a letter or digit", k)
	}
	return nil
}

func validateLabelValue(v string) error {
	if !labelValueRE.MatchString(v) {
		return fmt.Errorf("label value %q: use 1-63 letters, digits, dots, dashes or underscores, starting and ending with a letter or digit", v)
	}
	return nil
}

// ValidateLabel checks a node label (tandem agent --label key=value). The
// name "node" is refused: it is built in and always the node's name.
func ValidateLabel(key, value string) error {
	if err := validateLabelKey(key); err != nil {
		return err
	}
	if key == DefaultSpread {
		return errors.New(`label name "node" is built in (it is the node's name): choose another name`)
	}
	return validateLabelValue(value)
}
