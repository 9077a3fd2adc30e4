package config

import (
	"strings"
	"testing"
)

func TestUnmarshalYAMLErrors(t *testing.T) {
	type inst struct {
		Port int `json:"port"`
	}
	type file struct {
		Items []inst `json:"items"`
	}
	tests := []struct{ in, want, not string }{
		{"items:\n  - {port: abc}\n", "line 2: items.port: got a string, want a whole number", "Go struct"},
		{"items:\n  - port: 1\n  - port: 2\n  - port: x\n", "line 4: items.port: got a string", "Go struct"},
		{"items:\n  - port: 1\n\n  - prot: 1\n", `line 4: unknown field "prot"`, "json:"},
		{"items:\n - a\n  b: [\n", "line ", "converting YAML"},
	}
	for _, tt := range tests {
		var f file
		err := UnmarshalYAML([]byte(tt.in), &f)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), tt.not) {
			t.Errorf("%q: want an error saying %q (without %q), got %v", tt.in, tt.want, tt.not, err)
		}
	}
}
