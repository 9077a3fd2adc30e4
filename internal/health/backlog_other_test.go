//go:build !unix

package health

import "testing"

func fullBacklog(t *testing.T) string {
	t.Skip("needs a unix listen backlog")
	return ""
}
