package wire

import "time"

// MemberInfo is one row of GET /v1/members.
type MemberInfo struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"` // voter, learner or client
	Leader   bool      `json:"leader"`
	Alive    bool      `json:"alive"`
	LastSeen time.Time `json:"last_seen,omitzero"` // zero while alive
	API      string    `json:"api"`
	PeerURL  string    `json:"peer_url,omitempty"`
	StoreURL string    `json:"store_url,omitempty"`
	DNS      string    `json:"dns"`
	Proxy    string    `json:"proxy"`
	MemberID string    `json:"member_id,omitempty"`
	// Reach is set in stale answers only, where Alive is true just for
	// what the answering node confirmed itself: ReachSelf, ReachReachable
	// or ReachUnreachable for a voter, ReachUnknown for a node it cannot
	// ask (a client node, a learner).
	Reach string `json:"reach,omitempty"`
}

// Values of MemberInfo.Reach.
const (
	// ReachSelf is the answering node.
	ReachSelf = "self"
	// ReachReachable is a voter whose store member answered the answering
	// node's status probe just now.
	ReachReachable = "reachable"
	// ReachUnreachable is a voter whose store member did not answer that
	// probe: it is down, or cut off from the answering node.
	ReachUnreachable = "unreachable"
	// ReachUnknown is a node the answering node has no way to ask.
	ReachUnknown = "unknown"
)

// Members answers GET /v1/members.
type Members struct {
	// Stale is true when the answering node could not confirm its answer
	// with a quorum (it is cut off, or the store has no leader): the
	// answer comes from its own, possibly outdated, copy.
	Stale bool `json:"stale"`
	// LastContactMs, in stale answers, is how long ago the answering node
	// last heard from the store leader: how outdated its copy may be.
	LastContactMs *int64       `json:"last_contact_ms,omitempty"`
	Members       []MemberInfo `json:"members"`
}

// Status answers GET /v1/status. When Stale, the figures (target voters,
// term, applied index, revision, store size) are the answering node's own,
// LastContactMs says how old, and only what it reached itself counts as
// alive.
type Status struct {
	Stale          bool   `json:"stale"`
	LastContactMs  *int64 `json:"last_contact_ms,omitempty"`
	Node           string `json:"node"`
	TargetVoters   int    `json:"target_voters"`
	Voters         int    `json:"voters"`
	VotersAlive    int    `json:"voters_alive"`
	Quorum         int    `json:"quorum"`
	FaultTolerance int    `json:"fault_tolerance"` // node failures survivable now; -1: no quorum
	Leader         string `json:"leader"`
	Term           uint64 `json:"term"`
	AppliedIndex   uint64 `json:"applied_index"`
	Revision       int64  `json:"revision"`
	StoreSizeBytes int64  `json:"store_size_bytes"`
	Autopilot      string `json:"autopilot"`
	Nodes          int    `json:"nodes"`
	NodesAlive     int    `json:"nodes_alive"`
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
	// Role is "voter" (cluster.RoleVoter) when the node was added as a store learner (it starts
	// a member and promotes itself once caught up), "client" otherwise.
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
