package wire_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeafDependencies fails when a package meant to be light pulls in the
// etcd server (or, for the leaf packages, anything of tandem's with I/O).
// The Go client once imported internal/api for its JSON types and with it
// the whole embedded store: about 560 packages instead of about 200.
func TestLeafDependencies(t *testing.T) {
	const mod = "github.com/tandemhq/tandem/internal/"
	cases := []struct {
		pkg       string
		forbidden []string // import path prefixes it must not depend on
	}{
		{"client", []string{"go.etcd.io/etcd/server/", mod + "store", mod + "api", mod + "cluster"}},
		{"registry", []string{"go.etcd.io/etcd/", mod + "store"}},
		{"wire", []string{"go.etcd.io/etcd/", mod + "store", mod + "api", mod + "cluster", mod + "view"}},
		{"keys", []string{"go.etcd.io/", "github.com/"}},
	}
	for _, c := range cases {
		t.Run(c.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+c.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", c.pkg, err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) == 0 {
				t.Fatalf("go list -deps %s printed nothing", c.pkg)
			}
			for _, d := range deps {
				if d == mod+c.pkg {
					continue
				}
				for _, f := range c.forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("internal/%s depends on %s (no %s* allowed): move what it needs into a leaf package such as internal/wire or internal/keys", c.pkg, d, f)
					}
				}
			}
		})
	}
}
