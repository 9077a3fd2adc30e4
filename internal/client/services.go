package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/wire"
)

func svcPath(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/v1/services/" + strings.Join(parts, "/")
}

// Services lists services with their health counts. With index > 0 it
// waits (up to wait) until the catalog changes past index.
func (c *Client) Services(ctx context.Context, index int64, wait time.Duration) (*wire.Catalog, error) {
	q := url.Values{}
	if index > 0 {
		q.Set("index", fmt.Sprint(index))
		if wait > 0 {
			q.Set("wait", wait.String())
		}
	}
	var out wire.Catalog
	return &out, c.call(ctx, http.MethodGet, "/v1/services", q, nil, &out)
}

// Service shows a service's spec and instances with their health.
func (c *Client) Service(ctx context.Context, name string) (*wire.ServiceDetail, error) {
	var out wire.ServiceDetail
	return &out, c.call(ctx, http.MethodGet, svcPath(name), nil, nil, &out)
}

// PutService stores a service's spec.
func (c *Client) PutService(ctx context.Context, s registry.Service) error {
	b, _ := json.Marshal(s)
	return c.call(ctx, http.MethodPut, svcPath(s.Name), nil, b, nil)
}

// DeleteService removes a service's spec.
func (c *Client) DeleteService(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, svcPath(name), nil, nil, nil)
}

// Register registers an instance, owned by the node that answers.
func (c *Client) Register(ctx context.Context, in registry.Instance) (*registry.Instance, error) {
	b, _ := json.Marshal(in)
	var out registry.Instance
	return &out, c.call(ctx, http.MethodPut, svcPath(in.Service, "instances", in.ID), nil, b, &out)
}

// Deregister removes an instance everywhere.
func (c *Client) Deregister(ctx context.Context, svc, id string) error {
	return c.call(ctx, http.MethodDelete, svcPath(svc, "instances", id), nil, nil, nil)
}

// RenewTTL renews an instance's TTL check with status and output.
func (c *Client) RenewTTL(ctx context.Context, svc, id, status, output string) error {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	return c.call(ctx, http.MethodPut, svcPath(svc, "instances", id, "ttl"), q, []byte(output), nil)
}

// Scale sets the instance count of a service tandem runs.
func (c *Client) Scale(ctx context.Context, name string, count int) (registry.Service, error) {
	b, _ := json.Marshal(wire.ScaleRequest{Count: count})
	var out registry.Service
	return out, c.call(ctx, http.MethodPost, svcPath(name)+"/scale", nil, b, &out)
}
