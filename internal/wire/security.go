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

// CA rotation phases, in order (see docs/SECURITY.md, "Rotating the CA").
const (
	// CAPhaseTrust: every node adds the new CA to its trust bundle, and
	// each store member restarts, one at a time, to trust it too.
	CAPhaseTrust = "trust"
	// CAPhaseIssue: every node re-issues its own certificate from the new
	// CA, and signs with it from then on.
	CAPhaseIssue = "issue"
	// CAPhaseRetire: every node drops the old CA from its bundle, and each
	// store member restarts, one at a time, to stop trusting it.
	CAPhaseRetire = "retire"
	// CAPhaseDone: the rotation is over.
	CAPhaseDone = "done"
)

// CARotation is a CA rotation as the store records it. Every node works
// through its phases and reports each one done; the phase moves on when
// every node of the cluster has done it.
type CARotation struct {
	ID        string    `json:"id"`
	Phase     string    `json:"phase"`
	Started   time.Time `json:"started"`
	StartedBy string    `json:"started_by,omitempty"`
	// Changed is when Phase last changed.
	Changed time.Time `json:"changed"`
	// OldCA and NewCA are the CA certificates (PEM): the one retired and
	// the one that replaces it.
	OldCA string `json:"old_ca"`
	NewCA string `json:"new_ca"`
	// NewCAKey is the new CA's key sealed under the old CA's key
	// (pki.CA.SealKey, with ID as the label): only a node that holds the
	// old CA's key can open it. It is removed once the rotation is done,
	// and never sent by the API.
	NewCAKey string `json:"new_ca_key,omitempty"`
}

// CAStatus answers GET /v1/cluster/ca and POST /v1/cluster/ca/rotate.
type CAStatus struct {
	// Bundle is the trust bundle of the node that answered (PEM): what a
	// client's --ca file should hold.
	Bundle string `json:"bundle"`
	// CAs describes the bundle's certificates, oldest first.
	CAs []CAInfo `json:"cas"`
	// Rotation is the last rotation, if any, without its key.
	Rotation *CARotation `json:"rotation,omitempty"`
	// Done lists the nodes that have done the rotation's current phase and
	// Pending those that have not yet (empty once it is done).
	Done    []string `json:"done,omitempty"`
	Pending []string `json:"pending,omitempty"`
}

// CAInfo describes a CA certificate.
type CAInfo struct {
	Subject  string    `json:"subject"`
	Pin      string    `json:"pin"`
	NotAfter time.Time `json:"not_after"`
	// Signing is true for the CA this node signs certificates with.
	Signing bool `json:"signing,omitempty"`
}
