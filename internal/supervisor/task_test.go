package supervisor

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTaskValidate(t *testing.T) {
	ok := Task{ID: "web-1.a_b", Command: []string{"srv"}, LogDir: "/var/log/t", Ports: []Port{{"http", 8080}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid task refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Task)
		want string
	}{
		{"empty id", func(t *Task) { t.ID = "" }, "id must be"},
		{"id with slash", func(t *Task) { t.ID = "../x" }, "id must be"},
		{"no command", func(t *Task) { t.Command = nil }, "command is empty"},
		{"empty program", func(t *Task) { t.Command = []string{""} }, "command is empty"},
		{"no log dir", func(t *Task) { t.LogDir = "" }, "log_dir"},
		{"relative log dir", func(t *Task) { t.LogDir = "logs" }, "log_dir"},
		{"relative dir", func(t *Task) { t.Dir = "work" }, "dir"},
		{"negative memory", func(t *Task) { t.MemoryMB = -1 }, "memory_mb"},
		{"negative cpu", func(t *Task) { t.CPUMillis = -1 }, "cpu_millis"},
		{"negative stop timeout", func(t *Task) { t.StopTimeout = -time.Second }, "stop_timeout"},
		{"env name with =", func(t *Task) { t.Env = map[string]string{"A=B": "c"} }, "env name"},
		{"bad port name", func(t *Task) { t.Ports = []Port{{"1http", 80}} }, "port name"},
		{"port out of range", func(t *Task) { t.Ports = []Port{{"http", 70000}} }, "outside 1-65535"},
		{"ports with one variable", func(t *Task) { t.Ports = []Port{{"a-b", 1}, {"a_b", 2}} }, "TANDEM_PORT_A_B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := ok
			tc.mod(&task)
			err := task.Validate()
			if !errors.Is(err, ErrInvalidTask) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want ErrInvalidTask mentioning %q", err, tc.want)
			}
		})
	}
}

func TestTaskEnviron(t *testing.T) {
	task := Task{
		ID:      "web-1",
		Service: "web",
		Env:     map[string]string{"A": "1", "PATH": "/mine", "PORT": "overridden", "TANDEM_INSTANCE_ID": "no"},
		Ports:   []Port{{"http", 8080}, {"admin-api", 9090}},
	}
	got := task.environ(map[string]string{"PATH": "/agent", "HOME": "/h"})
	want := []string{"A=1", "HOME=/h", "PATH=/mine", "PORT=8080", "TANDEM_INSTANCE_ID=web-1",
		"TANDEM_PORT_ADMIN_API=9090", "TANDEM_PORT_HTTP=8080", "TANDEM_SERVICE=web"}
	if !slices.Equal(got, want) {
		t.Errorf("environ = %q\nwant      %q", got, want)
	}
}

func TestTaskEqual(t *testing.T) {
	a := Task{ID: "a", Command: []string{"x"}}
	b := a
	b.Env, b.Ports = map[string]string{}, []Port{}
	if !a.Equal(b) {
		t.Error("nil and empty maps differ")
	}
	b.Ports = []Port{{"http", 1}}
	if a.Equal(b) {
		t.Error("different ports are equal")
	}
}

func TestExitString(t *testing.T) {
	for _, tc := range []struct {
		e    Exit
		want string
		ok   bool
	}{
		{Exit{Code: 0}, "exit status 0", true},
		{Exit{Code: 2}, "exit status 2", false},
		{Exit{Code: -1, Signal: "SIGKILL", Reason: "memory limit 5 MB exceeded (RSS 6 MB)"}, "killed by signal SIGKILL (memory limit 5 MB exceeded (RSS 6 MB))", false},
		{Exit{Code: -1, Unknown: true}, "exited, status unknown (adopted process)", false},
	} {
		if got := tc.e.String(); got != tc.want || tc.e.Success() != tc.ok {
			t.Errorf("%+v: String %q Success %v, want %q %v", tc.e, got, tc.e.Success(), tc.want, tc.ok)
		}
	}
}
