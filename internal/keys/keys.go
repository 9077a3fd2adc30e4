// Package keys is tandem's keyspace: where every piece of cluster state lives
// in the store. It is a leaf package (it imports only the standard library)
// so that packages which only need a key, such as the registry's model, do
// not pull in the store. docs/ARCHITECTURE.md has the same table for people.
package keys

import "strings"

// All system state lives under Prefix so one watch can feed a node's whole
// view; the user's key-value namespace lives under KVPrefix.
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

// The service catalog's keys.
const (
	ServicesPrefix  = Prefix + "services/"  // spec, persistent
	InstancesPrefix = Prefix + "instances/" // instance, persistent
	HealthPrefix    = Prefix + "health/"    // health, bound to the owner's lease
	TTLPrefix       = Prefix + "ttl/"       // last TTL renewal
	StatsPrefix     = Prefix + "stats/"     // each node's recent proxy traffic, bound to its lease
)

// TokensPrefix holds the API tokens, one record each (auth.Record: role,
// prefix, expiry and the SHA-256 of the secret, never the secret itself).
const TokensPrefix = Prefix + "tokens/"

// TokenKey is where the token with id is kept.
func TokenKey(id string) string { return TokensPrefix + id }

// IdempotencyPrefix holds a record of each KV write sent with an
// Idempotency-Key, on a lease that keeps it for at least ten minutes. It is
// outside Prefix: no node's view needs these, and the views' watch would
// carry one more event per such write.
const IdempotencyPrefix = "/idempotency/"

// ClusterKey holds the cluster-wide settings fixed at bootstrap (ClusterInfo).
const ClusterKey = Prefix + "cluster"

// MembershipLock serialises store membership changes (joins, autopilot,
// leave, remove) so that two never run at once.
const MembershipLock = LockPrefix + "membership"

// AutopilotElection is the election autopilot's holder wins.
const AutopilotElection = ElectionPrefix + "autopilot"

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

// ServiceKey is the key of a service's spec.
func ServiceKey(svc string) string { return ServicesPrefix + svc }

// InstanceKey is the key of an instance.
func InstanceKey(svc, id string) string { return InstancesPrefix + svc + "/" + id }

// HealthKey is the key of an instance's health.
func HealthKey(svc, id string) string { return HealthPrefix + svc + "/" + id }

// TTLKey is the key of an instance's last TTL renewal.
func TTLKey(svc, id string) string { return TTLPrefix + svc + "/" + id }

// IdempotencyKey is the record of a write sent with Idempotency-Key k.
func IdempotencyKey(k string) string { return IdempotencyPrefix + k }

// StatsKey is where node publishes its recent proxy traffic.
func StatsKey(node string) string { return StatsPrefix + node }

// CertsPrefix holds the service certificates the proxies serve by SNI,
// one record each (proxy.StoredCert: certificate and private key PEM).
const CertsPrefix = Prefix + "certs/"

// CertKey is where the service certificate called name is kept.
func CertKey(name string) string { return CertsPrefix + name }

// CARotationKey holds the cluster's current or last CA rotation
// (wire.CARotation).
const CARotationKey = Prefix + "ca/rotation"

// CAAcksPrefix holds, per rotation, the phase each node has done.
func CAAcksPrefix(rotation string) string { return Prefix + "ca/acks/" + rotation + "/" }

// CAAckKey is where node reports the rotation phase it has done.
func CAAckKey(rotation, node string) string { return CAAcksPrefix(rotation) + node }

// CARestartLock serializes the store members' restarts of a CA rotation,
// so that only one voter is down at a time.
const CARestartLock = LockPrefix + "ca-restart"

// AllocsPrefix holds the allocations: what each node must run, written by
// the scheduler (wire.Allocation), under <node>/<id>.
const AllocsPrefix = Prefix + "allocs/"

// NodeAllocsPrefix holds node's allocations.
func NodeAllocsPrefix(node string) string { return AllocsPrefix + node + "/" }

// AllocKey is an allocation of node.
func AllocKey(node, id string) string { return NodeAllocsPrefix(node) + id }

// AllocStatusPrefix holds what each node reports of its allocations
// (wire.AllocStatus), under <node>/<id>.
const AllocStatusPrefix = Prefix + "allocstatus/"

// AllocStatusKey is the status node reports of its allocation id.
func AllocStatusKey(node, id string) string { return AllocStatusPrefix + node + "/" + id }

// SchedulerElection elects the node that runs the scheduler.
const SchedulerElection = ElectionPrefix + "scheduler"

// SchedPrefix holds, per service, what the scheduler could not place and
// why (wire.SchedStatus); absent when everything is placed.
const SchedPrefix = Prefix + "sched/"

// SchedKey is the scheduler's status of service svc.
func SchedKey(svc string) string { return SchedPrefix + svc }

// HistoryKey holds the last spec of service svc that an update replaced
// (wire.WorkloadHistory): what an automatic rollback goes back to.
func HistoryKey(svc string) string { return Prefix + "history/" + svc }

// HistoryPrefix holds every service's HistoryKey.
const HistoryPrefix = Prefix + "history/"

// DrainPrefix holds the drains of instances about to stop: a node that
// stops an instance first writes a request under requests/<alloc id>
// (workload.DrainRequest), then every alive node acknowledges it under
// acks/<alloc id>/<node>, bound to its liveness lease, once its proxy no
// longer routes to the instance and has nothing in flight to it.
const DrainPrefix = Prefix + "drain/"

// DrainRequestsPrefix holds every drain request.
const DrainRequestsPrefix = DrainPrefix + "requests/"

// DrainRequestKey is the drain request of allocation id.
func DrainRequestKey(id string) string { return DrainRequestsPrefix + id }

// DrainAcksPrefix holds the nodes' acknowledgements of allocation id's drain.
func DrainAcksPrefix(id string) string { return DrainPrefix + "acks/" + id + "/" }

// DrainAckKey is node's acknowledgement of allocation id's drain.
func DrainAckKey(id, node string) string { return DrainAcksPrefix(id) + node }
