package cluster

import "time"

// Roles a node can have.
const (
	RoleVoter  = "voter"  // runs a store member that votes
	RoleClient = "client" // runs no store replica; uses the voters' endpoints
)

// NodeRecord is a node's entry under store.NodesPrefix. It outlives the node's
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
}

// JoinRequest is what a new node sends to an existing node's API.
type JoinRequest struct {
	Name     string `json:"name"`
	PeerURL  string `json:"peer_url"`
	StoreURL string `json:"store_url"`
	API      string `json:"api"`
}

// JoinResponse tells a new node how to take part.
type JoinResponse struct {
	// Role is RoleVoter when the node was added as a store learner (it starts
	// a member and promotes itself once caught up), RoleClient otherwise.
	Role string `json:"role"`
	// InitialCluster is etcd's name=peerURL list to start the member with.
	InitialCluster string `json:"initial_cluster,omitempty"`
	// MemberID is the learner's etcd member ID.
	MemberID uint64 `json:"member_id,omitempty"`
	// Endpoints are the voters' client URLs.
	Endpoints []string `json:"endpoints"`
}

// Event is one entry of the cluster's event history.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Node    string    `json:"node,omitempty"`
	Message string    `json:"message"`
}

// Event types.
const (
	EventLeader        = "leader-change"
	EventNodeUp        = "node-up"
	EventNodeDown      = "node-down"
	EventLeaseRevoked  = "lease-revoked" // by the death watch
	EventJoined        = "node-joined"
	EventLeft          = "node-left"
	EventRemoved       = "node-removed"
	EventLearnerAdded  = "learner-added"
	EventPromoted      = "voter-promoted"
	EventVoterRemoved  = "voter-removed"
	EventAutopilot     = "autopilot"
	EventVoterReplaced = "voter-replaced"
)
