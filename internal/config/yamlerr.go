package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// UnmarshalYAML decodes YAML strictly (unknown keys are errors) into v,
// with errors that say which field and what it expects instead of the
// decoder's internals ("error converting YAML to JSON", "Go struct field").
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
		return fmt.Errorf("%s: got %s, want %s", field, article(te.Value), kindOf(te.Type))
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		msg += " (check its spelling and indentation; keys are case-sensitive)"
	}
	return errors.New(msg)
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
