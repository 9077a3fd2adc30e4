package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/carotate"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

func (s *Server) routeCA() {
	s.handle("GET /v1/cluster/ca", auth.PermRead, s.caStatus)
	s.handle("POST /v1/cluster/ca/rotate", auth.PermCluster, s.caRotate)
}

// caStatus answers with this node's trust bundle and the last rotation's
// progress.
func (s *Server) caStatus(w http.ResponseWriter, r *http.Request) {
	if s.sec == nil {
		writeError(w, http.StatusBadRequest, "this cluster runs with --insecure: it has no CA")
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	rot, _, _, err := carotate.Load(ctx, s.st.Client())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := caStatus(s.sec.TLS.Load())
	out.Rotation = carotate.Public(rot)
	if rot != nil && rot.Phase != wire.CAPhaseDone {
		if out.Done, out.Pending, err = carotate.Progress(ctx, s.st.Client(), rot); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// caStatus describes m's trust bundle.
func caStatus(m *pki.Material) wire.CAStatus {
	out := wire.CAStatus{Bundle: string(m.CAPEM)}
	for _, c := range m.CAs {
		out.CAs = append(out.CAs, wire.CAInfo{
			Subject: c.Subject.CommonName, Pin: pki.Pin(c), NotAfter: c.NotAfter,
			Signing: m.CA != nil && m.CA.Cert.Equal(c),
		})
	}
	return out
}

// caRotate starts a CA rotation; every node then does its part (see
// internal/carotate). It answers 202 with the rotation, or 409 with the
// one in progress.
func (s *Server) caRotate(w http.ResponseWriter, r *http.Request) {
	if s.sec == nil {
		writeError(w, http.StatusBadRequest, "this cluster runs with --insecure: it has no CA to rotate")
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	p, _ := auth.FromContext(r.Context())
	rot, err := carotate.Start(ctx, s.st.Client(), s.sec.TLS.Load(), p.String(), time.Now())
	if errors.Is(err, carotate.ErrInProgress) {
		writeError(w, http.StatusConflict, err.Error()+": `tandem ca status` shows its progress; it goes on by itself")
		return
	}
	if errors.Is(err, carotate.ErrRefused) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("CA rotation started", "rotation", rot.ID, "by", p.String())
	out := caStatus(s.sec.TLS.Load())
	out.Rotation = carotate.Public(rot)
	writeJSON(w, http.StatusAccepted, out)
}
