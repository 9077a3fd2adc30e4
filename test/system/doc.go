// Package system holds end-to-end tests of tandem clusters: real embedded
// etcd, real processes killed with real signals, the real CLI.
package system
