package cli

import (
	"strings"
	"testing"
)

func TestLoadServiceFile(t *testing.T) {
	good := `
services:
  - name: web
    checks: [{type: http, http: /healthz, interval: 500ms}]
    instances:
      - {id: web-1, address: 10.0.0.1, port: 8080, tags: [v2]}
      - {id: web-2, address: 10.0.0.2, port: 8080}
  - name: db
`
	f, err := LoadServiceFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Services) != 2 || len(f.Services[0].Instances) != 2 || f.Services[0].Instances[1].Service != "web" || len(f.Services[0].Checks) != 1 {
		t.Fatalf("parsed %+v", f)
	}
	bad := []struct{ name, yaml, want string }{
		{"empty", "", "no services"},
		{"unknown key", "services: [{name: web, prot: 1}]", "prot"},
		{"bad port in one of many", "services: [{name: web, instances: [{id: a, address: 1.2.3.4, port: 80}, {id: b, address: 1.2.3.4, port: 0}]}]", "port 0"},
		{"empty service name", "services: [{name: ''}]", "service name is empty"},
		{"instance of another service", "services: [{name: web, instances: [{id: a, service: db, address: 1.2.3.4, port: 80}]}]", "names service \"db\""},
		{"bad check", "services: [{name: web, checks: [{type: icmp}]}]", "unknown check type"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadServiceFile([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error saying %q, got %v", tt.want, err)
			}
		})
	}
}
