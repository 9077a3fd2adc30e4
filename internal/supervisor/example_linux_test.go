package supervisor_test

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"time"

	"github.com/tandemhq/tandem/internal/supervisor"
)

// An agent wires the supervisor: it becomes the subreaper, adopts what its
// previous run left (kept in a state file), then applies its allocations
// as they change.
func Example() {
	if err := supervisor.BecomeSubreaper(); err != nil {
		log.Fatal(err)
	}
	drv, err := supervisor.NewExec(supervisor.ExecConfig{})
	if err != nil {
		log.Fatal(err)
	}
	var sup *supervisor.Supervisor
	sup, err = supervisor.New(supervisor.Config{
		Driver: drv,
		OnEvent: func(e supervisor.Event) {
			// Keep what a restarted agent needs to adopt the processes
			// (written atomically in real code).
			b, _ := json.Marshal(sup.States())
			_ = os.WriteFile("/var/lib/tandem/processes.json", b, 0o600)
			if e.Kind == supervisor.EventFailed {
				log.Printf("give %s back to the scheduler: %v", e.Task.ID, e.Err)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sup.Run(ctx)

	var left []supervisor.State
	if b, err := os.ReadFile("/var/lib/tandem/processes.json"); err == nil {
		_ = json.Unmarshal(b, &left)
	}
	web := supervisor.Task{
		ID:          "web-7f3a",
		Service:     "web",
		Command:     []string{"/usr/local/bin/web"}, // reads $PORT; no shell expands the arguments
		Ports:       []supervisor.Port{{Name: "http", Number: 31002}},
		MemoryMB:    256,
		LogDir:      "/var/lib/tandem/logs",
		StopTimeout: 10 * time.Second,
	}
	// Processes no longer allocated are stopped; the others are watched
	// again instead of started twice.
	if err := sup.Adopt(ctx, left, []supervisor.Task{web}); err != nil {
		log.Print(err)
	}
	// Later, whenever the allocations change:
	_ = sup.Apply([]supervisor.Task{web})
	// On a shutdown that should take the instances down too:
	_ = sup.StopAll(ctx)
}
