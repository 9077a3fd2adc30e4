package cluster

import "time"

// Roles a node can have.
const (
	RoleVoter  = "voter"  // runs a store member that votes
	RoleClient = "client" // runs no store replica; uses the voters' endpoints
)

// NodeRecord is a node's entry under keys.NodesPrefix. It outlives the node's
// lease, so dead nodes stay listed until removed.
type NodeRecord struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	API       string    `json:"api"`       // host:port
	PeerURL   string    `json:"peer_url"`  // store Raft peer URL
	StoreURL  string    `json:"store_url"` // store client URL
	DNS       string    `json:"dns"`       // host:port
	Proxy     string    `json:"proxy"`     // host:port
	External  bool      `json:"external,omitempty"`
	Started   time.Time `json:"started"`
	LastSeen  time.Time `json:"last_seen,omitzero"` // set when its lease expires
	Version   string    `json:"version,omitempty"`
	MemberID  uint64    `json:"member_id,omitempty"`
	LeftClean bool      `json:"left,omitempty"` // left with 'tandem leave'
	// Labels describe the node for placement (--label).
	Labels map[string]string `json:"labels,omitempty"`
	// CPUMillis and MemoryMB are what the node offers to instances (0:
	// not limited).
	CPUMillis int `json:"cpu_millis,omitempty"`
	MemoryMB  int `json:"memory_mb,omitempty"`
	// Workloads is true when the node runs instances the scheduler places.
	Workloads bool `json:"workloads,omitempty"`
}
