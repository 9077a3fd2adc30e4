package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// dirPoll is how often --proxy-tls-dir is looked at for changes.
const dirPoll = 2 * time.Second

// dirCerts is the source of the certificates in a directory: every
// NAME.crt with a NAME.key beside it. It looks at the directory's entries
// every dirPoll and loads them again when a name, size or modification
// time changed (files are followed through symbolic links, so a
// Kubernetes-style secret mount that swaps a link is seen too).
type dirCerts struct {
	dir string
	set *CertSet
	log *slog.Logger

	seen   string            // the entries' names, sizes and times at the last load
	logged map[string]string // file -> problem last logged, so each is logged once
}

func newDirCerts(dir string, set *CertSet, log *slog.Logger) *dirCerts {
	return &dirCerts{dir: dir, set: set, log: log, logged: map[string]string{}}
}

// load reads the directory and, if its entries changed, the pairs in it.
// A pair that does not load is logged once and left out; the others are
// served. Only a directory that cannot be read is an error.
func (d *dirCerts) load() error {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("read --proxy-tls-dir: %w", err)
	}
	var names []string // NAME of each NAME.crt and NAME.key
	var sig strings.Builder
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if ext != ".crt" && ext != ".key" {
			continue
		}
		fi, err := os.Stat(filepath.Join(d.dir, e.Name()))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(&sig, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
		if n := strings.TrimSuffix(e.Name(), ext); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if sig.String() == d.seen {
		return nil
	}
	var certs []*tls.Certificate
	problems := map[string]string{}
	for _, n := range names {
		c, err := d.loadPair(n)
		if err != nil {
			problems[n] = err.Error()
			continue
		}
		certs = append(certs, c)
	}
	for n, p := range problems {
		if d.logged[n] != p {
			d.log.Error("proxy: skipping a certificate of --proxy-tls-dir; the others are served", "file", filepath.Join(d.dir, n+".crt"), "err", p)
		}
	}
	d.logged = problems
	d.set.Set("dir", certs)
	d.seen = sig.String()
	d.log.Debug("proxy: loaded --proxy-tls-dir", "dir", d.dir, "certificates", len(certs))
	return nil
}

func (d *dirCerts) loadPair(name string) (*tls.Certificate, error) {
	crt, err := os.ReadFile(filepath.Join(d.dir, name+".crt"))
	if err != nil {
		return nil, fmt.Errorf("no %s.crt beside %s.key, or it cannot be read: %w", name, name, err)
	}
	key, err := os.ReadFile(filepath.Join(d.dir, name+".key"))
	if err != nil {
		return nil, fmt.Errorf("no %s.key beside %s.crt, or it cannot be read: %w", name, name, err)
	}
	return ParseCert(crt, key)
}

// run loads the directory every dirPoll until ctx ends.
func (d *dirCerts) run(ctx context.Context) {
	t := time.NewTicker(dirPoll)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := d.load()
		if err != nil && err.Error() != lastErr {
			d.log.Error("proxy: keeping the certificates last loaded", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
	}
}
