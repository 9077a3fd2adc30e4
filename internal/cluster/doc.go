// Package cluster manages membership: node records and liveness leases,
// admission of new nodes (as store learners promoted to voters, or as client
// nodes), autopilot (the leader-elected task that keeps the voter count at
// target), and the cluster event history.
package cluster
