package wire

import (
	"time"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
)

// Allocation desired states.
const (
	DesiredRun  = "run"
	DesiredStop = "stop"
)

// Allocation is one instance the scheduler placed on a node: what the
// node must run (a copy of the service's workload at Generation, so that
// the node needs nothing else) and whether it must still run it.
type Allocation struct {
	ID         string             `json:"id"`
	Service    string             `json:"service"`
	Node       string             `json:"node"`
	Generation int64              `json:"generation"`
	Desired    string             `json:"desired"`
	StopReason string             `json:"stop_reason,omitempty"`
	Created    time.Time          `json:"created"`
	Workload   scheduler.Workload `json:"workload"`
	// Checks are the service's checks when it was placed.
	Checks []registry.Check `json:"checks,omitempty"`
}

// Allocation states a node reports.
const (
	AllocStarting = "starting"
	AllocRunning  = "running"
	AllocBackoff  = "restarting"
	AllocFailed   = "failed"
	// AllocFenced: the node could not renew its liveness lease, so it
	// killed this at_most_one instance; it starts again once the lease
	// is renewed, if the allocation is still the node's.
	AllocFenced = "fenced"
)

// AllocStatus is what the node running an allocation reports of it.
type AllocStatus struct {
	State    string         `json:"state"`
	Pid      int            `json:"pid,omitempty"`
	Ports    map[string]int `json:"ports,omitempty"`
	Restarts int            `json:"restarts,omitempty"`
	// LastExit describes how the process last ended ("exit status 1",
	// "signal: killed", "memory limit 256 MB exceeded ...").
	LastExit string    `json:"last_exit,omitempty"`
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since"`
}

// AllocationInfo is an allocation with its status, as the API shows it.
type AllocationInfo struct {
	Allocation
	Status *AllocStatus `json:"status,omitempty"`
}

// ScaleRequest is the body of POST /v1/services/{svc}/scale.
type ScaleRequest struct {
	Count int `json:"count"`
}

// SchedStatus is what the scheduler could not place of a service, and why.
type SchedStatus struct {
	// RolledBack, when set, is the automatic rollback that made the
	// service's current generation.
	RolledBack *Rollback            `json:"rolled_back,omitempty"`
	Unplaced   []scheduler.Unplaced `json:"unplaced,omitempty"`
	// Stuck are rolling updates that cannot go on (new instances failed).
	Stuck []scheduler.UpdateStuck `json:"stuck,omitempty"`
}

// WorkloadHistory is the spec a service ran before its last update.
type WorkloadHistory struct {
	Generation int64              `json:"generation"`
	Workload   scheduler.Workload `json:"workload"`
}

// Rollback says that the update to generation From got stuck and the
// scheduler wrote the spec of generation Back again, as generation To.
type Rollback struct {
	From   int64  `json:"from"`
	Back   int64  `json:"back"`
	To     int64  `json:"to"`
	Reason string `json:"reason"`
}
