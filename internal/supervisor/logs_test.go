package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotateLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.stdout.log")
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString(s)
	}
	rotate := func() bool {
		t.Helper()
		ok, err := rotateLog(path, 10, 2)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if rotate() {
		t.Error("rotated a missing file")
	}
	write("0123456789")
	if rotate() {
		t.Error("rotated a file at the limit")
	}
	for _, gen := range []string{"first-----!", "second----!", "third-----!"} {
		write(gen)
		if !rotate() {
			t.Fatalf("did not rotate at %q", gen)
		}
	}
	got := func(name string) string { b, _ := os.ReadFile(filepath.Join(dir, name)); return string(b) }
	if got("x.stdout.log") != "" || !strings.HasPrefix(got("x.stdout.log.1"), "third") || !strings.HasPrefix(got("x.stdout.log.2"), "second") {
		t.Errorf("files: %q %q %q", got("x.stdout.log"), got("x.stdout.log.1"), got("x.stdout.log.2"))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files, want the log and 2 backups", len(entries))
	}
	// No backups: the file is only truncated.
	write("0123456789abc")
	if ok, err := rotateLog(path, 10, -1); !ok || err != nil || got("x.stdout.log") != "" {
		t.Errorf("rotate without backups: %v %v", ok, err)
	}
}
