// Package proxy is the load balancer every node runs: an HTTP proxy that
// routes by Host (and path prefix) to the passing instances of a service in
// the node's local view, and a TCP proxy on each service's lb_port. It
// balances per service (balance.go), ejects failing instances passively
// (outlier.go), retries within a budget (budget.go), and drains instances
// that leave the view: they get no new requests while in-flight ones finish.
package proxy
