package wire

import "time"

// CertRequest is the body of PUT /v1/certs/NAME: a service certificate for
// the proxies to serve by SNI.
type CertRequest struct {
	// Cert is the PEM certificate chain, the server's certificate first.
	Cert string `json:"cert"`
	// Key is its PEM private key.
	Key string `json:"key"`
}

// CertInfo describes a service certificate, never its key.
type CertInfo struct {
	Name string `json:"name"`
	// SANs are the DNS names the certificate is served for.
	SANs      []string  `json:"sans"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Fingerprint is "sha256:" and the hex SHA-256 of the certificate.
	Fingerprint string    `json:"fingerprint"`
	Updated     time.Time `json:"updated"`
	// Error, if set, says why the proxies skip this certificate (a record
	// written around the API).
	Error string `json:"error,omitempty"`
}

// Certs answers GET /v1/certs, sorted by name.
type Certs struct {
	Certs []CertInfo `json:"certs"`
}
