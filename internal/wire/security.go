package wire

import "time"

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// Role is admin, operator, read or join.
	Role string `json:"role"`
	// Name is a label for people (who or what the token is for).
	Name string `json:"name,omitempty"`
	// Prefix, if set, limits the token to KV keys under it.
	Prefix string `json:"prefix,omitempty"`
	// TTL is how long the token is valid, like "24h"; empty: never expires
	// (join tokens: 24h).
	TTL string `json:"ttl,omitempty"`
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Role      string    `json:"role"`
	Prefix    string    `json:"prefix,omitempty"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// TokenCreated answers POST /v1/tokens. Token is the secret: it is shown
// only here, once; the cluster keeps only its hash.
type TokenCreated struct {
	Token string    `json:"token"`
	Info  TokenInfo `json:"info"`
}

// Tokens answers GET /v1/tokens.
type Tokens struct {
	Tokens []TokenInfo `json:"tokens"`
}

// CertificateRequest is the body of POST /v1/cluster/certificate, sent by a
// joining node with a join token.
type CertificateRequest struct {
	Name string `json:"name"`
	// CSR is the node's certificate signing request (PEM); its private key
	// never leaves the node.
	CSR string `json:"csr"`
}

// CertificateResponse carries the joiner's signed certificate and what it
// needs to sign the next joiner's: the CA bundle and the CA's key.
type CertificateResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
	CAKey       string `json:"ca_key"`
}
