package scheduler

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/config"
	"sigs.k8s.io/yaml"
)

func validWorkload() Workload {
	return Workload{Run: RunSpec{Command: []string{"/bin/web", "--flag"}}, Count: 3}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(w *Workload)
		want   string // substring of the error; "" for valid
	}{
		{"minimal", func(w *Workload) {}, ""},
		{"everything set", func(w *Workload) {
			w.Run = RunSpec{Command: []string{"web"}, Env: map[string]string{"MODE": "prod", "_X1": ""}, Dir: "/srv/web", User: "www-data"}
			w.Ports = []PortSpec{{Name: "http"}, {Name: "admin-2"}}
			w.Resources = Resources{CPUMillis: 500, MemoryMB: 256}
			w.Constraints = []Constraint{"zone=a,b", "gpu", "!spot", "node!=n3"}
			w.Spread = "zone"
			w.Restart = RestartPolicy{Delay: config.Duration(time.Second), MaxDelay: config.Duration(time.Minute)}
			w.Update = UpdatePolicy{MaxParallel: 2, MinHealthy: config.Duration(5 * time.Second)}
			w.StopTimeout = config.Duration(time.Second)
			w.OnNodeLoss = AtMostOne
		}, ""},
		{"count zero is a stopped service", func(w *Workload) { w.Count = 0 }, ""},
		{"numeric user", func(w *Workload) { w.Run.User = "1000" }, ""},
		{"restart delay alone above the default max", func(w *Workload) { w.Restart.Delay = config.Duration(time.Minute) }, ""},

		{"negative count", func(w *Workload) { w.Count = -1 }, "count: -1 is negative"},
		{"huge count", func(w *Workload) { w.Count = MaxCount + 1 }, "count: 10001 is more than 10000"},
		{"no command", func(w *Workload) { w.Run.Command = nil }, "run.command: empty"},
		{"empty program", func(w *Workload) { w.Run.Command = []string{""} }, "run.command[0]: the program is empty"},
		{"NUL in an argument", func(w *Workload) { w.Run.Command = []string{"a", "b\x00"} }, "run.command[1]: contains a NUL byte"},
		{"bad env name", func(w *Workload) { w.Run.Env = map[string]string{"1X": "v"} }, "run.env.1X: not a variable name"},
		{"env PORT reserved", func(w *Workload) { w.Run.Env = map[string]string{"PORT": "80"} }, "run.env.PORT: set by tandem"},
		{"env TANDEM_ reserved", func(w *Workload) { w.Run.Env = map[string]string{"TANDEM_PORT_HTTP": "80"} }, "run.env.TANDEM_PORT_HTTP: set by tandem"},
		{"NUL in env value", func(w *Workload) { w.Run.Env = map[string]string{"A": "\x00"} }, "run.env.A: the value contains a NUL byte"},
		{"relative dir", func(w *Workload) { w.Run.Dir = "srv" }, `run.dir: "srv" is not an absolute path`},
		{"bad user", func(w *Workload) { w.Run.User = "web user" }, `run.user: "web user" is neither`},
		{"upper-case port name", func(w *Workload) { w.Ports = []PortSpec{{Name: "http"}, {Name: "HTTP"}} }, `ports[1].name: "HTTP" is not a lower-case name`},
		{"empty port name", func(w *Workload) { w.Ports = []PortSpec{{}} }, "ports[0].name: empty"},
		{"long port name", func(w *Workload) { w.Ports = []PortSpec{{Name: "abcdefghijklmnop"}} }, "ports[0].name"},
		{"duplicate port names", func(w *Workload) { w.Ports = []PortSpec{{Name: "http"}, {Name: "grpc"}, {Name: "http"}} }, `ports[2].name: "http" is also the name of ports[0]`},
		{"too many ports", func(w *Workload) { w.Ports = make([]PortSpec, maxPorts+1) }, "ports: 17 ports"},
		{"negative cpu", func(w *Workload) { w.Resources.CPUMillis = -5 }, "resources.cpu_millis: -5 is negative"},
		{"negative memory", func(w *Workload) { w.Resources.MemoryMB = -1 }, "resources.memory_mb: -1 is negative"},
		{"huge memory", func(w *Workload) { w.Resources.MemoryMB = maxResource + 1 }, "resources.memory_mb: 1073741825 is more than"},
		{"bad constraint", func(w *Workload) { w.Constraints = []Constraint{"zone=a", "zone=="} }, `constraints[1]: "zone==": label value "=":`},
		{"empty constraint", func(w *Workload) { w.Constraints = []Constraint{" "} }, "constraints[0]: empty"},
		{"bad spread", func(w *Workload) { w.Spread = "Zone" }, `spread: label name "Zone"`},
		{"negative restart delay", func(w *Workload) { w.Restart.Delay = config.Duration(-time.Second) }, "restart.delay: -1s is negative"},
		{"delay above max", func(w *Workload) {
			w.Restart = RestartPolicy{Delay: config.Duration(time.Minute), MaxDelay: config.Duration(time.Second)}
		}, "restart.delay: 1m0s is more than restart.max_delay 1s"},
		{"negative max parallel", func(w *Workload) { w.Update.MaxParallel = -1 }, "update.max_parallel: -1 is negative"},
		{"negative min healthy", func(w *Workload) { w.Update.MinHealthy = config.Duration(-1) }, "update.min_healthy: -1ns is negative"},
		{"negative stop timeout", func(w *Workload) { w.StopTimeout = config.Duration(-time.Second) }, "stop_timeout: -1s is negative"},
		{"negative drain timeout", func(w *Workload) { w.DrainTimeout = config.Duration(-time.Second) }, "drain_timeout: -1s is negative"},
		{"unknown on_node_loss", func(w *Workload) { w.OnNodeLoss = "at-most-one" }, `on_node_loss: unknown policy "at-most-one"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := validWorkload()
			tt.change(&w)
			err := w.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid workload refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("want error %q, got none", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateListsEveryProblemInOrder(t *testing.T) {
	w := Workload{Count: -1, Ports: []PortSpec{{Name: "X"}}, OnNodeLoss: "never", Resources: Resources{CPUMillis: -1, MemoryMB: -1}}
	err := w.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for i := 0; i < 20; i++ { // map iteration inside must not change the order
		if again := w.Validate(); again.Error() != err.Error() {
			t.Fatalf("errors differ between calls:\n%v\n---\n%v", err, again)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 6 {
		t.Fatalf("want 6 problems, got %d:\n%v", n, err)
	}
}

func TestNormalize(t *testing.T) {
	var zero Workload
	zero.Normalize()
	if !zero.IsZero() {
		t.Fatalf("a zero workload (a service tandem does not run) got defaults: %+v", zero)
	}

	w := validWorkload()
	w.Normalize()
	yes := true
	want := validWorkload()
	want.Spread = "node"
	want.OnNodeLoss = Overlap
	want.Restart = RestartPolicy{Delay: config.Duration(500 * time.Millisecond), MaxDelay: config.Duration(30 * time.Second)}
	want.Update = UpdatePolicy{MaxParallel: 1, MinHealthy: config.Duration(2 * time.Second), AutoRollback: &yes}
	want.StopTimeout = config.Duration(10 * time.Second)
	want.DrainTimeout = config.Duration(30 * time.Second)
	if !reflect.DeepEqual(w, want) {
		t.Fatalf("normalized:\n%+v\nwant\n%+v", w, want)
	}
	if !w.Update.Rollback() {
		t.Fatal("auto rollback is off by default")
	}
	no := false
	w.Update.AutoRollback = &no
	w.Normalize()
	if w.Update.Rollback() {
		t.Fatal("Normalize turned auto_rollback: false back on")
	}
	again := w
	again.Normalize()
	if !reflect.DeepEqual(again, w) {
		t.Fatal("Normalize is not idempotent")
	}
}

func TestWorkloadYAML(t *testing.T) {
	src := `
run:
  command: [/usr/local/bin/web, --verbose]
  env: {MODE: prod}
  dir: /srv/web
  user: web
count: 3
ports: [{name: http}]
resources: {cpu_millis: 250, memory_mb: 128}
constraints: ["zone!=c", gpu]
spread: zone
restart: {delay: 1s, max_delay: 1m}
update: {max_parallel: 2, min_healthy: 5s, auto_rollback: false}
stop_timeout: 20s
drain_timeout: 5s
on_node_loss: at_most_one
`
	var w Workload
	if err := config.UnmarshalYAML([]byte(src), &w); err != nil {
		t.Fatal(err)
	}
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	if w.Count != 3 || w.Run.Env["MODE"] != "prod" || w.Resources.MemoryMB != 128 || w.Constraints[0] != "zone!=c" ||
		w.Restart.MaxDelay.D() != time.Minute || w.Update.Rollback() || w.StopTimeout.D() != 20*time.Second || w.DrainTimeout.D() != 5*time.Second || w.OnNodeLoss != AtMostOne {
		t.Fatalf("decoded %+v", w)
	}
	checkRoundTrip(t, w)
	// An empty workload writes nothing (it is embedded in every service spec).
	if b, _ := json.Marshal(Workload{}); string(b) != "{}" {
		t.Fatalf("zero workload marshals to %s", b)
	}
	if err := config.UnmarshalYAML([]byte("count: 1\nrun: {cmd: [x]}\n"), &w); err == nil || !strings.Contains(err.Error(), "cmd") {
		t.Fatalf("misspelt key: %v", err)
	}
}

// FuzzWorkloadYAML decodes arbitrary spec files: decoding and validation
// never panic, and a valid workload, normalized, writes back to a file that
// reads back the same and valid.
func FuzzWorkloadYAML(f *testing.F) {
	f.Add([]byte("run: {command: [web]}\ncount: 3\nports: [{name: http}]\nconstraints: [zone=a]\n"))
	f.Add([]byte("run: {command: [web], env: {A: b}}\nrestart: {delay: 1s}\nupdate: {auto_rollback: false}\non_node_loss: at_most_one\n"))
	f.Add([]byte("count: -1\nspread: Zone\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Workload
		if config.UnmarshalYAML(data, &w) != nil {
			return
		}
		if w.Validate() != nil {
			return
		}
		w.Normalize()
		if err := w.Validate(); err != nil {
			t.Fatalf("valid before Normalize, not after: %v", err)
		}
		checkRoundTrip(t, w)
	})
}

// checkRoundTrip checks that w writes to YAML that reads back the same
// (compared as JSON: an empty list or map reads back as nil) and valid.
func checkRoundTrip(t *testing.T, w Workload) {
	t.Helper()
	out, err := yaml.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var back Workload
	if err := config.UnmarshalYAML(out, &back); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	again, _ := json.Marshal(back)
	if want, _ := json.Marshal(w); back.Validate() != nil || string(again) != string(want) {
		t.Fatalf("round trip of\n%s\ngave %s\nwant %s", out, again, want)
	}
}
