package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/config"
)

func TestInstanceValidate(t *testing.T) {
	good := Instance{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080}
	if err := good.Validate(Rules{}); err != nil {
		t.Fatalf("good instance: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*Instance)
		rules Rules
		want  string
	}{
		{"port 0", func(in *Instance) { in.Port = 0 }, Rules{}, "port 0"},
		{"port too big", func(in *Instance) { in.Port = 65536 }, Rules{}, "port 65536"},
		{"empty service", func(in *Instance) { in.Service = "" }, Rules{}, "service name is empty"},
		{"uppercase service", func(in *Instance) { in.Service = "Web" }, Rules{}, "service name \"Web\""},
		{"empty id", func(in *Instance) { in.ID = "" }, Rules{}, "instance id is empty"},
		{"address with port", func(in *Instance) { in.Address = "10.0.0.1:80" }, Rules{}, "without a port"},
		{"localhost", func(in *Instance) { in.Address = "localhost" }, Rules{}, "give an IP such as 127.0.0.1"},
		{"bad tag", func(in *Instance) { in.Tags = []string{"Has Space"} }, Rules{}, "tag \"Has Space\""},
		{"bad initial state", func(in *Instance) { in.InitialState = "ok" }, Rules{}, "initial_state"},
		{"unknown check", func(in *Instance) { in.Checks = []Check{{Type: "icmp"}} }, Rules{}, "unknown check type"},
		{"interval too short", func(in *Instance) {
			in.Checks = []Check{{Type: CheckTCP, Interval: config.Duration(10 * time.Millisecond)}}
		}, Rules{}, "below the minimum of 100ms"},
		{"http check without target", func(in *Instance) { in.Checks = []Check{{Type: CheckHTTP}} }, Rules{}, "needs http"},
		{"ttl too short", func(in *Instance) { in.Checks = []Check{{Type: CheckTTL}} }, Rules{}, "ttl of at least 100ms"},
		{"exec not allowed", func(in *Instance) { in.Checks = []Check{{Type: CheckExec, Command: []string{"true"}}} }, Rules{}, "--enable-exec-checks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good
			tt.edit(&in)
			err := in.Validate(tt.rules)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error saying %q, got %v", tt.want, err)
			}
		})
	}
	in := good
	in.Checks = []Check{{Type: CheckExec, Command: []string{"true"}}}
	if err := in.Validate(Rules{AllowExec: true}); err != nil {
		t.Fatalf("exec with AllowExec: %v", err)
	}
}

func TestEffectiveChecksAndDefaults(t *testing.T) {
	spec := &Service{Name: "web", Checks: []Check{{Type: CheckTCP}}}
	got := EffectiveChecks(Instance{Service: "web"}, spec)
	if len(got) != 1 || got[0].Interval.D() != time.Second || got[0].FailuresBeforeCritical != 2 || got[0].SuccessesBeforePassing != 1 || got[0].Timeout.D() != time.Second {
		t.Fatalf("service checks with defaults: %+v", got)
	}
	own := EffectiveChecks(Instance{Service: "web", Checks: []Check{{Type: CheckHTTP, HTTP: "/h"}}}, spec)
	if len(own) != 1 || own[0].Type != CheckHTTP {
		t.Fatalf("an instance's own checks win: %+v", own)
	}
	if spec.Checks[0].Interval != 0 {
		t.Fatal("EffectiveChecks changed the spec")
	}
}

func TestServiceValidate(t *testing.T) {
	for _, tt := range []struct {
		s    Service
		want string
	}{
		{Service{Name: "web", Balance: "random"}, "balance \"random\""},
		{Service{Name: "web", HashOn: "query:x"}, "hash_on"},
		{Service{Name: "web", LBPort: 70000}, "lb_port"},
		{Service{Name: "web", PathPrefixes: []string{"api"}}, "must start with /"},
		{Service{Name: "web", Hosts: []string{"a.com:80"}}, "without port"},
	} {
		if err := tt.s.Validate(Rules{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: want %q, got %v", tt.s, tt.want, err)
		}
	}
}
