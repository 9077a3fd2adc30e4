package system

import (
	"os"
	"testing"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// TestMain lets the test binary double as an instance process
// (clustertest.StartBackend), so tests can kill -9 a real instance.
func TestMain(m *testing.M) {
	clustertest.ServeBackendIfAsked()
	os.Exit(m.Run())
}
