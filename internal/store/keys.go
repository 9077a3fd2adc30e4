package store

import "strings"

// Key layout. All system state lives under Prefix so one watch can feed a
// node's whole view; the user's key-value namespace lives under KVPrefix.
const (
	Prefix         = "/tandem/"
	NodesPrefix    = Prefix + "nodes/"   // node record, persistent
	AlivePrefix    = Prefix + "alive/"   // bound to the node's lease: liveness
	PromotePrefix  = Prefix + "promote/" // autopilot asks a client node to become a voter
	EventsPrefix   = Prefix + "events/"  // bounded cluster event history
	ElectionPrefix = Prefix + "elections/"
	LockPrefix     = Prefix + "locks/"
	KVPrefix       = "/kv/"
)

// NodeKey is the key of a node's record.
func NodeKey(name string) string { return NodesPrefix + name }

// AliveKey is the key bound to a node's liveness lease.
func AliveKey(name string) string { return AlivePrefix + name }

// PromoteKey is where autopilot asks node name to start a store member.
func PromoteKey(name string) string { return PromotePrefix + name }

// UserKey maps a user's KV key to its store key.
func UserKey(k string) string { return KVPrefix + k }

// FromUserKey maps a store key back to the user's key.
func FromUserKey(k string) string { return strings.TrimPrefix(k, KVPrefix) }

// ClusterKey holds the cluster-wide settings fixed at bootstrap (ClusterInfo).
const ClusterKey = Prefix + "cluster"

// MembershipLock serialises store membership changes (joins, autopilot,
// leave, remove) so that two never run at once.
const MembershipLock = LockPrefix + "membership"

// AutopilotElection is the election autopilot's holder wins.
const AutopilotElection = ElectionPrefix + "autopilot"
