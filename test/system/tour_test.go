package system

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// TestReadmeTour runs README.md's tour as written, block after block in
// one shell, against a real `tandem up` (its ports moved to free ones), and
// checks what the tour promises: the write after the leader kill lands,
// the killed node comes back, the service answers over DNS and the proxy.
// The tour's text is the script, so the README cannot drift from it.
func TestReadmeTour(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i, j := strings.Index(text, "## A short tour"), strings.Index(text, "## Running nodes")
	if i < 0 || j < i {
		t.Fatal("README.md has no '## A short tour' section before '## Running nodes'")
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(text[i:j], -1)
	if len(blocks) < 3 {
		t.Fatalf("the tour has %d sh blocks, want at least 3", len(blocks))
	}
	base := freeBase(t, 3)
	port := regexp.MustCompile(`\b74([0-4][0-9])\b`)
	var script strings.Builder
	script.WriteString("set -u\n")
	for _, b := range blocks {
		script.WriteString(port.ReplaceAllStringFunc(b[1], func(p string) string {
			n, _ := strconv.Atoi(p[2:])
			return strconv.Itoa(base + n)
		}))
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(clustertest.Binary(t), filepath.Join(dir, "bin", "tandem")); err != nil {
		t.Fatal(err)
	}
	up := exec.Command("./bin/tandem", "up", "--base-port", strconv.Itoa(base))
	up.Dir = dir
	upOut := &syncBuffer{}
	up.Stdout, up.Stderr = upOut, upOut
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = up.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = up.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = up.Process.Kill()
		}
	})
	if err := clustertest.Poll(2*time.Minute, func() error {
		if !strings.Contains(upOut.String(), "cluster started") {
			return errors.New("not started")
		}
		return nil
	}); err != nil {
		t.Fatalf("up: %v\n%s", err, upOut)
	}

	sh := exec.Command("bash", "-c", script.String())
	sh.Dir = dir
	sh.Env = append(os.Environ(), "TANDEM_ADDR=")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the tour's background watches die with it
	// A file, not a pipe: the tour's background watches keep their copy
	// of its output open after the tour ends.
	outf, err := os.Create(filepath.Join(dir, "tour.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	sh.Stdout, sh.Stderr = outf, outf
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sh.Wait() }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Errorf("the tour did not finish in 3 minutes")
	}
	_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
	b, _ := os.ReadFile(outf.Name())
	got := string(b)
	for _, want := range []string{
		"still here\n",   // the write after the leader kill landed
		"restarted (pid", // up restart brought the node back
		fmt.Sprintf("%d n1.node.tandem.", base+5), // dig: web's SRV record (its web server on n1's port 7405)
		`{"ok":true}`,   // the proxy reached the web server
		`"value":"v1"`,  // the HTTP KV examples
		"needs a token", // curl without a token: 401
		"has role read", // a read token writing: 403
		"revoked ",      // token revoke
		"demo instance", // the demo service answered through a proxy
		"demo: count 4", // tandem scale
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the tour's output lacks %q", want)
		}
	}
	if strings.Contains(got, "request FAILED") {
		t.Errorf("a request to the demo failed while its node died")
	}
	if t.Failed() || os.Getenv("TOUR_DEBUG") != "" {
		t.Logf("script:\n%s\noutput:\n%s\nup:\n%s", script.String(), got, upOut)
	}
}
