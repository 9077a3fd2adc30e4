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

// CA describes the trust bundle of the node that answers, and the last CA
// rotation's progress.
func (c *Client) CA(ctx context.Context) (wire.CAStatus, error) {
	var out wire.CAStatus
	return out, c.call(ctx, http.MethodGet, "/v1/cluster/ca", nil, nil, &out)
}

// RotateCA starts a CA rotation (admin only); the nodes then do it by
// themselves. A 409 *Error says one is in progress already.
func (c *Client) RotateCA(ctx context.Context) (wire.CAStatus, error) {
	var out wire.CAStatus
	return out, c.call(ctx, http.MethodPost, "/v1/cluster/ca/rotate", nil, nil, &out)
}
