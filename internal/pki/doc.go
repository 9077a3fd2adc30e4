// Package pki is tandem's public key infrastructure: the cluster CA that the
// first node creates, the node certificates it signs from a joiner's CSR (the
// private key never leaves the node), the files under a node's
// <data-dir>/tls/, and the TLS configurations for mutual TLS between nodes.
//
// Those configurations read the current certificates and trust bundle per
// handshake from a Keeper, so a renewed node certificate or a rotated CA
// takes effect on the next connection without a restart or a new
// tls.Config.
//
// It is a leaf package: it imports only the standard library.
package pki
