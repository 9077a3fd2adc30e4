package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// UnmarshalYAML decodes YAML strictly (unknown keys are errors) into v,
// with errors that say which field, on which line, and what it expects
// instead of the decoder's internals ("error converting YAML to JSON", "Go
// struct field"). The decoder works on JSON and has no line numbers, so the
// line is found again in the YAML's node tree.
func UnmarshalYAML(data []byte, v any) error {
	err := yaml.UnmarshalStrict(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "the file"
		}
		return fmt.Errorf("%s%s: got %s, want %s", lineOf(data, te.Field, te.Value), field, article(te.Value), kindOf(te.Type))
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		msg = lineOfKey(data, strings.Trim(name, `"`)) + msg + " (check its spelling and indentation; keys are case-sensitive)"
	}
	return errors.New(msg)
}

// lineOf returns "line N: " for the first node at the dotted JSON path
// (sequences are looked through: json's paths carry no indexes) whose YAML
// kind is what the decoder was given (json's name for it, such as
// "string"), or "" if the path is not found.
func lineOf(data []byte, path, got string) string {
	var root yamlv3.Node
	if path == "" || yamlv3.Unmarshal(data, &root) != nil {
		return ""
	}
	nodes := []*yamlv3.Node{&root}
	for _, key := range strings.Split(path, ".") {
		var next []*yamlv3.Node
		for _, n := range nodes {
			next = append(next, child(n, key)...)
		}
		nodes = next
	}
	if len(nodes) == 0 {
		return ""
	}
	pick := nodes[0]
	for _, n := range nodes {
		if jsonKind(n) == got {
			pick = n
			break
		}
	}
	return fmt.Sprintf("line %d: ", pick.Line)
}

// child returns the values of key in n, looking through documents and
// sequences.
func child(n *yamlv3.Node, key string) []*yamlv3.Node {
	switch n.Kind {
	case yamlv3.DocumentNode, yamlv3.SequenceNode:
		var out []*yamlv3.Node
		for _, c := range n.Content {
			out = append(out, child(c, key)...)
		}
		return out
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return []*yamlv3.Node{n.Content[i+1]}
			}
		}
	}
	return nil
}

// jsonKind names n's kind the way encoding/json's errors do.
func jsonKind(n *yamlv3.Node) string {
	switch n.Kind {
	case yamlv3.MappingNode:
		return "object"
	case yamlv3.SequenceNode:
		return "array"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "number"
	case "!!bool":
		return "bool"
	case "!!null":
		return "null"
	}
	return "string"
}

// lineOfKey returns "line N: " for the first mapping key named key, or "".
func lineOfKey(data []byte, key string) string {
	var root yamlv3.Node
	if yamlv3.Unmarshal(data, &root) != nil {
		return ""
	}
	var find func(n *yamlv3.Node) int
	find = func(n *yamlv3.Node) int {
		if n.Kind == yamlv3.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					return n.Content[i].Line
				}
			}
		}
		for _, c := range n.Content {
			if l := find(c); l > 0 {
				return l
			}
		}
		return 0
	}
	if l := find(&root); l > 0 {
		return fmt.Sprintf("line %d: ", l)
	}
	return ""
}

func article(what string) string {
	switch what {
	case "string", "number", "bool", "array", "object":
		if what == "array" {
			return "a list"
		}
		if what == "object" {
			return "a mapping"
		}
		if what == "bool" {
			return "true/false"
		}
		return "a " + what
	}
	return what
}

func kindOf(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}
