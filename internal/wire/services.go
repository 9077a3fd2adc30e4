package wire

import (
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
)

// ServiceSummary is one row of GET /v1/services.
type ServiceSummary struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	Passing   int    `json:"passing"`
	Warning   int    `json:"warning"`
	Critical  int    `json:"critical"`
	HasSpec   bool   `json:"has_spec"`
}

// Catalog answers GET /v1/services (and the long-poll /v1/catalog).
type Catalog struct {
	// Index is the store revision the answering node's view had applied.
	// Pass it back as ?index= to wait for the next change.
	Index    int64            `json:"index"`
	Services []ServiceSummary `json:"services"`
}

// ServiceDetail answers GET /v1/services/{svc}.
type ServiceDetail struct {
	Index     int64                     `json:"index"`
	Spec      registry.Service          `json:"spec"`
	HasSpec   bool                      `json:"has_spec"`
	Instances []registry.InstanceHealth `json:"instances"`
	// Allocations are the instances tandem runs for the service (when
	// its spec has a run command), with what their nodes report.
	Allocations []AllocationInfo `json:"allocations,omitempty"`
	// Unplaced are the instances the scheduler could not place, with why.
	Unplaced []scheduler.Unplaced `json:"unplaced,omitempty"`
	// Stuck are rolling updates of the service that cannot go on, with why.
	Stuck []scheduler.UpdateStuck `json:"stuck,omitempty"`
	// RolledBack is the automatic rollback that made the current
	// generation, if one did.
	RolledBack *Rollback `json:"rolled_back,omitempty"`
}
