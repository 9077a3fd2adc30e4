package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Identity is what a node keeps in its data dir (node.json) so that a restart
// needs no first-start flags: its name, role and how it reaches the store.
type Identity struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Endpoints []string `json:"endpoints,omitempty"` // client nodes: last known voter URLs
	External  bool     `json:"external,omitempty"`  // store is an external etcd cluster
	// Ports and addresses the node first started with, reused on restart
	// unless set again explicitly.
	Advertise string `json:"advertise"`
	Bind      string `json:"bind"`
	APIPort   int    `json:"api_port"`
	PeerPort  int    `json:"peer_port"`
	StorePort int    `json:"store_port"`
	DNSPort   int    `json:"dns_port"`
	ProxyPort int    `json:"proxy_port"`
}

const identityFile = "node.json"

// LoadIdentity reads dir/node.json. It returns (nil, nil) when there is none.
func LoadIdentity(dir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("read node identity %s: %w (the file is damaged; restore it or start on a new data dir)", filepath.Join(dir, identityFile), err)
	}
	return &id, nil
}

// Save writes the identity atomically (write to a temp file, then rename).
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, identityFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write node identity: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return fmt.Errorf("write node identity: %w", err)
	}
	return nil
}
