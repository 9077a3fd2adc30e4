package clustertest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/internal/supervisor"
)

// Instances are the processes of the service instances the node runs, as
// its agent last recorded them (<data-dir>/workloads/processes.json).
func (nd *Node) Instances() []supervisor.State {
	b, err := os.ReadFile(filepath.Join(nd.DataDir, "workloads", "processes.json"))
	if err != nil {
		return nil
	}
	var states []supervisor.State
	if json.Unmarshal(b, &states) != nil {
		return nil
	}
	return states
}

// KillInstances sends SIGKILL to the process group of every instance the
// node runs, and waits (up to 10 s) until they are gone: with Kill, it
// makes a whole machine die.
func (nd *Node) KillInstances() {
	var states []supervisor.State
	for _, st := range nd.Instances() {
		if st.Pgid > 0 && st.Alive() {
			_ = syscall.Kill(-st.Pgid, syscall.SIGKILL)
			states = append(states, st)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, st := range states {
		for st.Pgid > 0 && time.Now().Before(deadline) {
			if err := syscall.Kill(-st.Pgid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			// A killed group of the agent's children stays until reaped;
			// the agent may be gone, so reap what is ours to reap.
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(-st.Pgid, &ws, syscall.WNOHANG, nil)
			time.Sleep(10 * time.Millisecond)
		}
	}
}
