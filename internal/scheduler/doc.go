// Package scheduler decides where a service's instances run. It holds the
// workload part of a service spec (Workload: what to run, how many, with
// what resources, on which nodes) and Plan, the scheduler's decision as a
// pure function of the specs, the nodes, the current allocations and the
// time. Plan does no I/O and reads no clock; the leader-elected loop
// around it reads the store, calls Plan, and writes the result in one
// transaction.
//
// # The spec
//
// A service spec runs instances when it has a run command; run.command is
// the only required field. The values shown for spread, restart, update,
// stop_timeout, drain_timeout and on_node_loss are the defaults:
//
//	run:
//	  command: [/usr/local/bin/web, --verbose]  # no shell; PATH lookup without a slash
//	  env: {MODE: prod}                          # PORT and TANDEM_* are set by tandem
//	  dir: /srv/web                              # absolute
//	  user: web                                  # or a numeric uid
//	count: 3                                     # 0 = stopped
//	ports: [{name: http}]                        # PORT, TANDEM_PORT_HTTP
//	resources: {cpu_millis: 250, memory_mb: 128} # reserved on the node
//	constraints: ["zone!=c", gpu]
//	spread: node
//	restart: {delay: 500ms, max_delay: 30s}
//	update: {max_parallel: 1, min_healthy: 2s, auto_rollback: true}
//	stop_timeout: 10s
//	drain_timeout: 30s
//	on_node_loss: overlap                        # or at_most_one
//
// A bad spec is refused whole, with every problem naming its field:
// "count: -1 is negative", "ports[1].name: "HTTP" is not a lower-case
// name", "restart.delay: 1m0s is more than restart.max_delay 1s".
//
// # Placement rules
//
// Each service keeps count instances (and up to update.max_parallel more
// while a rolling update runs). Plan adds what is missing and stops what
// is in excess; it never moves a healthy running instance only to
// even out the spread (that happens as instances are replaced).
//
// A node can take an instance when it is alive (its lease is live), it is
// eligible (not draining), it meets every constraint of the service, and
// the resources it has left cover the instance's resources: the sum of
// what the allocations on a node reserve never passes its capacity.
// Allocations being stopped still hold their resources until they are
// gone. A capacity of zero in one dimension means the node does not
// limit it.
//
// Among the nodes that can take it, a new instance goes to the node whose
// spread value (the value of the service's spread label, by default the
// node's own name) runs the fewest instances of the service. So no two
// instances share a node (or a zone, with spread: zone) while another
// node (or zone) can take one. Ties go to the node with the fewest
// instances of the service, then to a node where the service did not just
// fail, then to the least loaded node (its most used resource as a share
// of its capacity), then to the node with the fewest allocations, then to
// the first by name. Services are planned in name order, instances one at
// a time, so the same input always gives the same plan. Nodes without the
// spread label count as one more value.
//
// When there are more instances than count (scale down), Plan stops first
// those on lost nodes, then, one at a time, one on the most crowded spread
// value, then on the node with most of the service, then on the most
// loaded node; between equals, one that has not started yet, then one that
// does not pass its checks.
//
// # Constraints
//
// A constraint is one rule on node labels (tandem agent --label zone=a):
// zone=a (the label is a), zone=a,b (a or b), zone!=a (absent or not a),
// gpu (present), !gpu (absent). The label node is built in and is the
// node's name. All constraints of a service must hold.
//
// # Failure, loss and drain
//
// An instance that keeps crashing is handed back by its node (state
// failed): Plan stops it and places it again, on another node when one
// fits equally well (except a new instance during a rolling update: see
// below).
//
// An instance whose node is not alive is lost. With on_node_loss: overlap
// (the default) Plan places a replacement at once and stops the lost
// allocation, so a node that was only cut off stops its copy when it sees
// the allocation gone; two copies may run until then. With at_most_one,
// the instance is held (it still counts, and is listed as unplaced with
// the time it waits for) until the node's last lease renewal (Node.LostAt:
// the loop around Plan gives the time it first found the lease gone) +
// the lease TTL + a margin, when the node has surely stopped it; only then
// is it replaced, so two copies never run (provided a node kills its
// at_most_one instances when it cannot renew its lease, which it does
// half a TTL after its last renewal: internal/workload/fence.go).
// Result.RetryAt says when to plan again. A lost instance for which no
// replacement fits is kept: a node that comes back resumes it.
//
// A draining node gets nothing new. Its instances are replaced elsewhere
// first and stopped only once enough others run (add before remove): the
// count of running instances never drops because of a drain.
//
// # Rolling updates
//
// Every instance records the generation of the spec it runs. tandem gives
// the spec a new generation when what an instance runs changes (command,
// environment, ports, resources...), not when only count changes. A
// service with instances of an older generation is being updated, and
// Plan replaces them add before remove:
//
//   - It places instances of the new generation, at most
//     update.max_parallel of them in flight: a new instance is in flight
//     until it has passed its checks for update.min_healthy without a
//     break (Alloc.HealthySince, which the loop around Plan fills from the
//     catalog). So while old instances remain, at most count +
//     max_parallel instances run.
//   - For each new instance healthy for min_healthy, it stops one old
//     instance ("replaced by generation 3"): one that does not serve (not
//     started, or not passing its checks) if there is one, else the one
//     beside the most new instances (on the most crowded spread value, then
//     node), so the new generation ends up spread as placement would
//     spread it. New instances are spread counting the new generation
//     only.
//   - A new instance that does not pass its checks keeps its old one
//     running: the update waits. Result.RetryAt asks for a plan when the
//     next new instance reaches min_healthy.
//   - A new instance that failed (its node gave up restarting it), or,
//     when Options.HealthyDeadline is set, one not healthy for min_healthy
//     that long after it was placed (Alloc.PlacedAt), stops the update.
//     Plan keeps a failed one, in state failed, rather than placing it
//     again, stops no more old instances, places nothing of the new
//     generation (an instance lost meanwhile is not replaced either, and
//     is listed as unplaced with the reason), and reports the service in
//     Result.Stuck with the failed or late instances. The loop around Plan
//     rolls back when update.auto_rollback is on: it writes the previous
//     spec as a new generation, which Plan rolls out like any other (the
//     failed instances, now of an older generation, are stopped).
//     Otherwise the update stays stuck until a new spec is deployed.
//   - When no node has room for a new instance beside the old ones, the
//     new instance is reported unplaced ("the update to generation 3 needs
//     room for 1 more instance beside the old ones: ...") and nothing is
//     stopped: the update waits for room (a node added, or another service
//     scaled down). Stopping an old instance first to make room would be
//     remove before add, which can leave a service of one instance with
//     none; Plan never does that.
//   - Instances that are missing, rather than to be replaced (a lost node,
//     a failed old instance, a scale up, a draining node's instance), are
//     placed at once and of the new generation, whatever max_parallel
//     says; they count as in flight until healthy. A new instance in flight
//     stands in for an old one that is lost meanwhile, and a draining
//     node's instance stops once enough others run, as in any drain. An
//     instance held on a lost node (at_most_one) serves nothing, so it
//     never lets an old instance stop; a held new one counts as in flight.
//
// Count is the total of old and new instances during an update. A scale
// up places the missing instances at once (of the new generation). A
// scale down stops the old instances past count at once, then new ones
// past count (but up to max_parallel in flight while old ones remain to
// be replaced), those in flight first, so that no instance that just
// replaced an old one goes. The update ends when no old instance is left,
// and then count new instances run; planning again changes nothing.
//
// on_node_loss: at_most_one is about lost nodes only: a rolling update
// still runs each new instance beside the old one it replaces, so the old
// and the new version run at once for a while.
//
// # Unplaced instances
//
// Every instance Plan cannot place is reported with a reason in one line of
// bounded length: the furthest check that failed and up to five nodes with
// their own reason, closest to fitting first, as in
//
//	no node has 512 MB free (3 nodes checked: n1 128 MB free, n2 64 MB free, n3 down)
//	no node satisfies constraint "zone=c" (2 nodes checked: n1 fails "zone=c" (zone=a), n2 draining)
package scheduler
