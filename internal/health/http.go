package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/tandemhq/tandem/internal/registry"
)

// httpChecker GETs a URL: 2xx passes, 429 warns, anything else (a redirect
// included) fails.
type httpChecker struct {
	url    string
	client *http.Client
}

func newHTTP(raw string) (*httpChecker, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http check %q: want an http(s) URL or a path starting with /", raw)
	}
	return &httpChecker{
		url: u.String(),
		client: &http.Client{
			// No pooled connections, so a dead backend is seen at once;
			// no proxy from the environment: the check targets the
			// instance itself.
			Transport: &http.Transport{
				Proxy:             nil,
				DialContext:       (&net.Dialer{}).DialContext,
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

func (h *httpChecker) Check(ctx context.Context) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return failure(ctx, err)
	}
	req.Header.Set("User-Agent", "tandem-health-check")
	resp, err := h.client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // drop the repeated method and URL
		}
		return failure(ctx, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxOutput))

	out := "HTTP " + resp.Status
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return Result{Status: registry.Passing, Output: out}
	case resp.StatusCode == http.StatusTooManyRequests:
		return Result{Status: registry.Warning, Output: out}
	default:
		if loc := resp.Header.Get("Location"); loc != "" {
			out += " (redirect to " + loc + " not followed)"
		}
		return Result{Status: registry.Critical, Output: out}
	}
}
