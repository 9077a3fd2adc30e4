package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/proxy"
	"github.com/tandemhq/tandem/internal/wire"
)

// maxCertBody bounds PUT /v1/certs/NAME: a chain and a key.
const maxCertBody = 256 << 10

// routeCerts serves the service certificates the proxies pick by SNI.
// Uploading or deleting one needs PermTokens (admin): the private key goes
// into the store, readable by every node.
func (s *Server) routeCerts() {
	s.handle("PUT /v1/certs/{name}", auth.PermTokens, s.putCert)
	s.handle("GET /v1/certs", auth.PermRead, s.listCerts)
	s.handle("DELETE /v1/certs/{name}", auth.PermTokens, s.deleteCert)
}

func certInfo(name string, rec proxy.StoredCert) wire.CertInfo {
	info := wire.CertInfo{Name: name, SANs: []string{}, Updated: rec.Updated}
	c, err := proxy.ParseCert([]byte(rec.Cert), []byte(rec.Key))
	if err != nil {
		info.Error = err.Error()
		return info
	}
	info.SANs = c.Leaf.DNSNames
	info.NotBefore, info.NotAfter = c.Leaf.NotBefore, c.Leaf.NotAfter
	info.Fingerprint = proxy.Fingerprint(c)
	return info
}

func (s *Server) putCert(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := proxy.ValidCertName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req wire.CertRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCertBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, `certificate request: want {"cert": PEM, "key": PEM}: `+err.Error())
		return
	}
	c, err := proxy.ParseCert([]byte(req.Cert), []byte(req.Key))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := time.Now().UTC()
	if now.After(c.Leaf.NotAfter) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("certificate for %v expired at %s: renew it first", c.Leaf.DNSNames, c.Leaf.NotAfter.UTC().Format(time.RFC3339)))
		return
	}
	rec := proxy.StoredCert{Cert: req.Cert, Key: req.Key, Updated: now}
	val, err := json.Marshal(rec)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	if _, err := s.st.Client().Put(ctx, keys.CertKey(name), string(val)); err != nil {
		s.storeError(w, r, err)
		return
	}
	p, _ := auth.FromContext(r.Context())
	s.log.Info("service certificate stored", "name", name, "sans", c.Leaf.DNSNames, "not_after", c.Leaf.NotAfter, "by", p.String())
	writeJSON(w, http.StatusOK, certInfo(name, rec))
}

func (s *Server) listCerts(w http.ResponseWriter, r *http.Request) {
	kvs, ok := s.listPrefix(w, r, keys.CertsPrefix)
	if !ok {
		return
	}
	out := wire.Certs{Certs: []wire.CertInfo{}}
	for _, kv := range kvs { // sorted by key, so by name
		name := string(kv.Key[len(keys.CertsPrefix):])
		var rec proxy.StoredCert
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			out.Certs = append(out.Certs, wire.CertInfo{Name: name, SANs: []string{}, Error: "record: " + err.Error()})
			continue
		}
		out.Certs = append(out.Certs, certInfo(name, rec))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteCert(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := proxy.ValidCertName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.deleteOne(w, r, keys.CertKey(name), fmt.Sprintf("no service certificate %q; `tandem cert ls` lists them", name), "service certificate deleted", "name", name)
}
