package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/tandemhq/tandem/internal/wire"
)

// CreateToken creates an API token (admin only). The answer carries the
// secret, which the cluster shows only this once.
func (c *Client) CreateToken(ctx context.Context, req wire.TokenRequest) (wire.TokenCreated, error) {
	body, _ := json.Marshal(req)
	var out wire.TokenCreated
	return out, c.call(ctx, http.MethodPost, "/v1/tokens", nil, body, &out)
}

// Tokens lists the cluster's tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) (wire.Tokens, error) {
	var out wire.Tokens
	return out, c.call(ctx, http.MethodGet, "/v1/tokens", nil, nil, &out)
}

// RevokeToken deletes the token with this id; a 404 *Error says there is
// none.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// Certificate asks the cluster to sign a joining node's certificate,
// authenticated by the join token given instead of the client's own ("":
// the client's).
func (c *Client) Certificate(ctx context.Context, token string, req wire.CertificateRequest) (wire.CertificateResponse, error) {
	body, _ := json.Marshal(req)
	var out wire.CertificateResponse
	return out, c.exchange(ctx, request{method: http.MethodPost, path: "/v1/cluster/certificate", body: body, token: token}, &out)
}
