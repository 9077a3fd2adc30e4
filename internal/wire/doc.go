// Package wire holds the JSON types of tandem's HTTP API: what the handlers
// in internal/api write and what internal/client (and the CLI) read. It is a
// leaf package, so a program that only talks to the API does not pull in the
// store or the etcd server; TestLeafDependencies guards that.
package wire
