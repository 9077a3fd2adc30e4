package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/catalog"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/proxy"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/wire"
)

func (s *Server) routeServices() {
	s.handle("GET /v1/services", auth.PermRead, s.listServices)
	s.handle("GET /v1/catalog", auth.PermRead, s.listServices)
	s.handle("GET /v1/services/{svc}", auth.PermRead, s.showService)
	s.handle("PUT /v1/services/{svc}", auth.PermWrite, s.putService)
	s.handle("DELETE /v1/services/{svc}", auth.PermWrite, s.deleteService)
	s.handle("POST /v1/services/{svc}/scale", auth.PermWrite, s.scaleService)
	s.handle("PUT /v1/services/{svc}/instances/{id}", auth.PermWrite, s.putInstance)
	s.handle("PUT /v1/services/{svc}/instances/{$}", auth.PermWrite, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusBadRequest, "instance id is empty: PUT /v1/services/SERVICE/instances/ID")
	})
	s.handle("DELETE /v1/services/{svc}/instances/{id}", auth.PermWrite, s.deleteInstance)
	s.handle("PUT /v1/services/{svc}/instances/{id}/ttl", auth.PermWrite, s.renewTTL)
	s.handle("GET /v1/services/{svc}/load", auth.PermRead, s.serviceLoad)
}

// waitIndex blocks, when ?index= is given, until the view moves past it or
// ?wait= (default 30s, at most 5m) passes: a long poll.
func (s *Server) waitIndex(w http.ResponseWriter, r *http.Request) bool {
	p := params{r: r}
	index, hasIndex := p.rev("index")
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 5*time.Minute {
			p.fail("wait %q: want a duration up to 5m, like 30s", v)
		}
		wait = d
	}
	if !p.check(w) {
		return false
	}
	if !hasIndex {
		return true
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := s.view.Changed()
		if s.view.CatalogRevision() > index {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return true
		case <-r.Context().Done():
			return false
		}
	}
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) {
	if !s.waitIndex(w, r) {
		return
	}
	out := wire.Catalog{Index: s.view.CatalogRevision(), Services: []wire.ServiceSummary{}}
	for _, name := range s.view.Services() {
		sum := wire.ServiceSummary{Name: name}
		_, sum.HasSpec = s.view.Service(name)
		for _, in := range s.view.Instances(name) {
			sum.Instances++
			switch in.Status {
			case registry.Passing:
				sum.Passing++
			case registry.Warning:
				sum.Warning++
			default:
				sum.Critical++
			}
		}
		out.Services = append(out.Services, sum)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) showService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("svc")
	if !s.waitIndex(w, r) {
		return
	}
	rev := s.view.CatalogRevision()
	spec, has := s.view.Service(name)
	ins := s.view.Instances(name)
	if !has && len(ins) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no service %q: register it with 'tandem service register' or PUT /v1/services/%s", name, name))
		return
	}
	if ins == nil {
		ins = []registry.InstanceHealth{}
	}
	out := wire.ServiceDetail{Index: rev, Spec: spec, HasSpec: has, Instances: ins}
	if has && spec.Runs() {
		allocs, sched, err := s.allocations(r.Context(), name)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		out.Allocations, out.Unplaced, out.Stuck, out.RolledBack = allocs, sched.Unplaced, sched.Stuck, sched.RolledBack
	}
	writeJSON(w, http.StatusOK, out)
}

// allocations lists a service's allocations with their statuses, and what
// the scheduler could not place, from this node's store member
// (serializable: no round trip to the leader).
func (s *Server) allocations(ctx context.Context, svc string) ([]wire.AllocationInfo, wire.SchedStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := s.st.Client().Txn(ctx).Then(
		clientv3.OpGet(keys.AllocsPrefix, clientv3.WithPrefix(), clientv3.WithSerializable()),
		clientv3.OpGet(keys.AllocStatusPrefix, clientv3.WithPrefix(), clientv3.WithSerializable()),
		clientv3.OpGet(keys.SchedKey(svc), clientv3.WithSerializable()),
	).Commit()
	var sched wire.SchedStatus
	if err != nil {
		return nil, sched, err
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
		_ = json.Unmarshal(kvs[0].Value, &sched)
	}
	status := map[string]*wire.AllocStatus{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var st wire.AllocStatus
		if json.Unmarshal(kv.Value, &st) == nil {
			status[string(kv.Key)] = &st
		}
	}
	out := []wire.AllocationInfo{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var a wire.Allocation
		if json.Unmarshal(kv.Value, &a) != nil || a.Service != svc {
			continue
		}
		out = append(out, wire.AllocationInfo{Allocation: a, Status: status[keys.AllocStatusKey(a.Node, a.ID)]})
	}
	slices.SortFunc(out, func(a, b wire.AllocationInfo) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID))
	})
	return out, sched, nil
}

// scaleService sets the instance count of a service tandem runs.
func (s *Server) scaleService(w http.ResponseWriter, r *http.Request) {
	var req wire.ScaleRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	rev, err := s.catalog.Scale(ctx, r.PathValue("svc"), req.Count)
	if errors.Is(err, catalog.ErrNoService) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		s.catalogError(w, r, err)
		return
	}
	s.readYourWrite(ctx, rev)
	spec, _ := s.view.Service(r.PathValue("svc"))
	writeJSON(w, http.StatusOK, spec)
}

// decodeBody reads a JSON body of at most 1 MiB, refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxValueBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// catalogError maps a registration failure: a broken rule or an id owned by
// another node is the caller's to fix (400); the rest is the store's.
func (s *Server) catalogError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, catalog.ErrInvalid) || errors.Is(err, catalog.ErrConflict) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.storeError(w, r, err)
}

func (s *Server) putService(w http.ResponseWriter, r *http.Request) {
	var spec registry.Service
	if !decodeBody(w, r, &spec) {
		return
	}
	name := r.PathValue("svc")
	if spec.Name != "" && spec.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body names service %q but the path names %q", spec.Name, name))
		return
	}
	spec.Name = name
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	rev, err := s.catalog.RegisterService(ctx, spec)
	if err != nil {
		s.catalogError(w, r, err)
		return
	}
	s.readYourWrite(ctx, rev)
	writeJSON(w, http.StatusOK, spec)
}

func (s *Server) deleteService(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	deleted, err := s.catalog.DeleteService(ctx, r.PathValue("svc"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !deleted {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no spec for service %q", r.PathValue("svc")))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("svc")})
}

func (s *Server) putInstance(w http.ResponseWriter, r *http.Request) {
	var in registry.Instance
	if !decodeBody(w, r, &in) {
		return
	}
	svc, id := r.PathValue("svc"), r.PathValue("id")
	if (in.Service != "" && in.Service != svc) || (in.ID != "" && in.ID != id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body names %s/%s but the path names %s/%s", in.Service, in.ID, svc, id))
		return
	}
	in.Service, in.ID = svc, id
	if in.Node != "" && in.Node != s.cm.Self().Name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("node %q: an instance is owned by the node that registers it (%s); send the request to %s's API", in.Node, s.cm.Self().Name, in.Node))
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	rev, owner, err := s.catalog.RegisterOwned(ctx, in)
	if err != nil {
		s.catalogError(w, r, err)
		return
	}
	s.readYourWrite(ctx, rev)
	in.Node = owner
	in.Normalize()
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	svc, id := r.PathValue("svc"), r.PathValue("id")
	rev, deleted, err := s.catalog.Deregister(ctx, svc, id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.readYourWrite(ctx, rev)
	if !deleted {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no instance %s of service %s", id, svc))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deregistered": svc + "/" + id})
}

// renewTTL takes ?status= (default passing) and an optional body as output.
func (s *Server) renewTTL(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	if status == "" {
		status = registry.Passing
	}
	out, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	if err := s.catalog.RenewTTL(ctx, r.PathValue("svc"), r.PathValue("id"), status, string(out)); err != nil {
		s.catalogError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"renewed": r.PathValue("svc") + "/" + r.PathValue("id"), "status": status})
}

// serviceLoad answers a service's request rate, error rate and latency
// across every node's proxy over the last stats window (5 s); the
// autoscaler reads it. It is a stale read: no quorum needed.
func (s *Server) serviceLoad(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	svc := r.PathValue("svc")
	resp, err := s.st.Client().Get(ctx, keys.StatsPrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var windows []proxy.Window
	for _, kv := range resp.Kvs {
		ws, err := proxy.DecodeWindows(kv.Value)
		if err != nil {
			continue
		}
		if win, ok := ws[svc]; ok {
			windows = append(windows, win)
		}
	}
	writeJSON(w, http.StatusOK, proxy.Merge(svc, windows))
}

// readYourWrite waits (briefly) until this node's view shows the write at
// rev, so a client that registers and then reads the catalog from the same
// node sees its own change.
func (s *Server) readYourWrite(ctx context.Context, rev int64) {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = s.view.WaitRevision(wctx, rev)
}
