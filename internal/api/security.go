package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// Security is what a secure API needs. A Server without one serves every
// request without asking who sent it (--insecure).
type Security struct {
	// TLS is the node's certificate material: it identifies other nodes
	// (client certificates signed by the cluster CA) and signs joiners'
	// certificates.
	TLS *pki.Keeper
	// CertTTL is the lifetime of the certificates signed for joiners.
	CertTTL time.Duration
	// PublicMetrics lets GET /metrics and GET /v1/health be read without
	// a token.
	PublicMetrics bool
}

// errNoCredentials is a request with neither a token nor a node
// certificate.
var errNoCredentials = errors.New("this API needs a token: send \"Authorization: Bearer <token>\" (CLI: --token, --token-file or TANDEM_TOKEN); the bootstrap node wrote the first admin token to <data-dir>/admin.token, and `tandem token create` makes more")

// handle registers h for pattern behind the permission perm. The routes
// of the user's KV (/v1/kv/, /v1/watch/) are the only ones a
// prefix-restricted token may write through; their handlers check the key
// against the prefix.
func (s *Server) handle(pattern string, perm auth.Perm, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, s.guard(pattern, perm, h))
}

func (s *Server) guard(pattern string, perm auth.Perm, h http.HandlerFunc) http.HandlerFunc {
	if s.sec == nil {
		return h
	}
	public := s.sec.PublicMetrics && (pattern == "GET /metrics" || pattern == "GET /v1/health")
	kv := strings.Contains(pattern, " /v1/kv/") || strings.Contains(pattern, " /v1/watch/")
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			if public && errors.Is(err, errNoCredentials) {
				h(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if err := p.Authorize(perm); err != nil {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
			return
		}
		if p.Prefix != "" && !kv && perm != auth.PermRead {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s: %s is limited to KV keys under %q; it cannot change anything else", r.Method, r.URL.Path, p, p.Prefix))
			return
		}
		h(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	}
}

// authenticate finds who sent r: a node (a client certificate the cluster
// CA signed, verified in the handshake) or the holder of a bearer token.
func (s *Server) authenticate(r *http.Request) (auth.Principal, error) {
	if r.TLS != nil {
		if name, ok := pki.NodeName(r.TLS); ok {
			return auth.Principal{Role: auth.Node, Node: name}, nil
		}
	}
	tok, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return auth.Principal{}, errNoCredentials
	}
	return auth.Verify(tok, s.lookupToken, time.Now())
}

// lookupToken reads a token record from the view, which every node keeps
// current by watch (so a revocation reaches every node within
// milliseconds, and tokens keep working on a node cut off from the
// majority). A token the view does not hold is read from the store with a
// linearizable read, so a token used on another node right after it was
// made is found even when this node's member has not applied the write
// yet; a node that cannot reach the majority falls back to its local copy.
func (s *Server) lookupToken(id string) (auth.Record, bool) {
	if s.view != nil {
		if rec, ok := s.view.Token(id); ok {
			return rec, true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	resp, err := s.st.Client().Get(ctx, keys.TokenKey(id))
	cancel()
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		resp, err = s.st.Client().Get(ctx, keys.TokenKey(id), clientv3.WithSerializable())
		cancel()
	}
	if err != nil || len(resp.Kvs) == 0 {
		return auth.Record{}, false
	}
	var rec auth.Record
	if json.Unmarshal(resp.Kvs[0].Value, &rec) != nil || rec.ID != id {
		return auth.Record{}, false
	}
	return rec, true
}

func (s *Server) routeSecurity() {
	s.handle("POST /v1/tokens", auth.PermTokens, s.createToken)
	s.handle("GET /v1/tokens", auth.PermTokens, s.listTokens)
	s.handle("DELETE /v1/tokens/{id}", auth.PermTokens, s.revokeToken)
	s.handle("POST /v1/cluster/certificate", auth.PermJoin, s.signCertificate)
	s.routeCerts()
	s.routeCA()
}

// defaultJoinTTL is the lifetime of a join token made without --ttl.
const defaultJoinTTL = 24 * time.Hour

func tokenInfo(rec auth.Record) wire.TokenInfo {
	return wire.TokenInfo{ID: rec.ID, Name: rec.Name, Role: string(rec.Role), Prefix: rec.Prefix,
		Created: rec.Created, Expires: rec.Expires, CreatedBy: rec.CreatedBy}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if s.sec == nil {
		writeError(w, http.StatusBadRequest, "this cluster runs with --insecure: it has no tokens")
		return
	}
	var req wire.TokenRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "token request: "+err.Error())
		return
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: want a positive duration like 1h or 720h", req.TTL))
			return
		}
	} else if role == auth.Join {
		ttl = defaultJoinTTL
	}
	token, rec, err := auth.New(role, req.Name, req.Prefix, ttl, time.Now().UTC())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if p, ok := auth.FromContext(r.Context()); ok {
		rec.CreatedBy = p.String()
	}
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
	k := keys.TokenKey(rec.ID)
	resp, err := s.st.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(val))).Commit()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !resp.Succeeded {
		writeError(w, http.StatusConflict, "a token with this id exists already (a one in 2^64 chance): ask again")
		return
	}
	if role == auth.Join {
		token = auth.JoinToken(token, pinHex(s.sec.TLS.Load()))
	}
	s.log.Info("token created", "id", rec.ID, "role", rec.Role, "prefix", rec.Prefix, "by", rec.CreatedBy)
	writeJSON(w, http.StatusCreated, wire.TokenCreated{Token: token, Info: tokenInfo(rec)})
}

// pinHex is the cluster CA's public key pin, as join tokens carry it: the
// pin of the newest CA of the bundle (the one that signs).
func pinHex(m *pki.Material) string {
	ca := m.CAs[len(m.CAs)-1]
	if m.CA != nil {
		ca = m.CA.Cert
	}
	return strings.TrimPrefix(pki.Pin(ca), "sha256:")
}

// listPrefix reads every key under prefix for r, linearizably; on a
// failure it has answered and returns false.
func (s *Server) listPrefix(w http.ResponseWriter, r *http.Request, prefix string) ([]*mvccpb.KeyValue, bool) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return nil, false
	}
	defer cancel()
	resp, err := s.st.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		s.storeError(w, r, err)
		return nil, false
	}
	return resp.Kvs, true
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	kvs, ok := s.listPrefix(w, r, keys.TokensPrefix)
	if !ok {
		return
	}
	out := wire.Tokens{Tokens: []wire.TokenInfo{}}
	for _, kv := range kvs {
		var rec auth.Record
		if json.Unmarshal(kv.Value, &rec) == nil {
			out.Tokens = append(out.Tokens, tokenInfo(rec))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !auth.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("token id %q: want the 16 hex digits `tandem token ls` shows", id))
		return
	}
	s.deleteOne(w, r, keys.TokenKey(id), fmt.Sprintf("no token with id %q; `tandem token ls` lists them", id), "token revoked", "id", id)
}

// deleteOne deletes key, answers 404 with notFound if there was none and
// 204 otherwise, and logs what was deleted and by whom.
func (s *Server) deleteOne(w http.ResponseWriter, r *http.Request, key, notFound, logMsg string, attrs ...any) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	resp, err := s.st.Client().Delete(ctx, key)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if resp.Deleted == 0 {
		writeError(w, http.StatusNotFound, notFound)
		return
	}
	p, _ := auth.FromContext(r.Context())
	s.log.Info(logMsg, append(attrs, "by", p.String())...)
	w.WriteHeader(http.StatusNoContent)
}

// signCertificate signs a joining node's certificate request (the node
// proved itself with a join token) and hands it what it needs to sign the
// next joiner's: the CA bundle and key.
func (s *Server) signCertificate(w http.ResponseWriter, r *http.Request) {
	if s.sec == nil {
		writeError(w, http.StatusBadRequest, "this cluster runs with --insecure: join it with --insecure and no token")
		return
	}
	var req wire.CertificateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "certificate request: "+err.Error())
		return
	}
	m := s.sec.TLS.Load()
	if m.CA == nil {
		writeError(w, http.StatusServiceUnavailable, "this node holds no CA key, so it cannot sign a certificate; join through another node")
		return
	}
	cert, err := m.CA.Sign([]byte(req.CSR), req.Name, time.Now(), s.sec.CertTTL)
	if err != nil {
		writeError(w, http.StatusBadRequest, "certificate request: "+err.Error())
		return
	}
	p, _ := auth.FromContext(r.Context())
	s.log.Info("signed a node certificate", "for", req.Name, "by", p.String())
	writeJSON(w, http.StatusOK, wire.CertificateResponse{Certificate: string(cert), CA: string(m.CAPEM), CAKey: string(m.CAKeyPEM)})
}
