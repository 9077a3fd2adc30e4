package view

import (
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

// Instance is an instance as the view serves it: its registration and its
// effective health. Status is critical when the owner node is dead or has
// written no health yet (unless the instance was registered with an
// initial state).
type Instance struct {
	registry.Instance
	Status string                 `json:"status"`
	Output string                 `json:"output,omitempty"`
	Since  time.Time              `json:"since,omitzero"`
	Checks []registry.CheckHealth `json:"checks,omitempty"`
}

// Node is a node as the view serves it.
type Node struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"` // advertise IP
	Role  string `json:"role"`
	Alive bool   `json:"alive"`
}
