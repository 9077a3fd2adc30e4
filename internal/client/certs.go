package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/tandemhq/tandem/internal/wire"
)

// PutCert stores (or replaces) the service certificate name, which every
// node's TLS proxy then serves for its DNS names (admin only). certPEM is
// the chain, the server's certificate first; keyPEM its private key.
func (c *Client) PutCert(ctx context.Context, name string, certPEM, keyPEM []byte) (wire.CertInfo, error) {
	body, _ := json.Marshal(wire.CertRequest{Cert: string(certPEM), Key: string(keyPEM)})
	var out wire.CertInfo
	return out, c.call(ctx, http.MethodPut, "/v1/certs/"+url.PathEscape(name), nil, body, &out)
}

// Certs lists the service certificates, without their keys.
func (c *Client) Certs(ctx context.Context) (wire.Certs, error) {
	var out wire.Certs
	return out, c.call(ctx, http.MethodGet, "/v1/certs", nil, nil, &out)
}

// DeleteCert deletes the service certificate name (admin only); a 404
// *Error says there is none.
func (c *Client) DeleteCert(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/certs/"+url.PathEscape(name), nil, nil, nil)
}
