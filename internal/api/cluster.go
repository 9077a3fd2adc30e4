package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// snapshot is the membership state both endpoints are built from.
type snapshot struct {
	stale   bool
	members []*etcdserverpb.Member
	recs    map[string]cluster.NodeRecord
	alive   map[string]bool
	leader  uint64
	// storeUp holds the store members that answered a status request, for
	// an external store, whose members have no node records.
	storeUp map[uint64]bool

	// For a stale snapshot: the answering node, the voters' client URLs
	// that answered its probe just now, and the store member to take the
	// figures (term, revision...) from. aliveInCopy holds the nodes alive
	// in the node's copy: alive when it last heard from the store leader,
	// at lastContact.
	self        string
	reached     map[string]bool
	figuresFrom string
	aliveInCopy map[string]bool
	lastContact time.Time
}

// snapshot reads the membership state with a quorum when this node knows
// a store leader and the quorum read comes back within quorumWait;
// otherwise from this node's own copy (stale), at once. A node cut off
// from the majority thus answers in about a probe budget instead of
// waiting out the request timeout.
func (s *Server) snapshot(ctx context.Context) (*snapshot, error) {
	if s.leaderKnown() {
		snap, err := s.readSnapshot(ctx, false)
		if err == nil || ctx.Err() != nil || !store.IsUnavailable(err) {
			return snap, err
		}
	}
	return s.staleSnapshot(ctx)
}

// leaderKnown reports whether this node knows a store leader: its own
// member follows one (a member cut off from the majority forgets it within
// one or two election timeouts: a follower when it starts a pre-vote, a
// leader when its quorum check fails), or, on a node without a member, the
// last probe found one with a quorum of voters reachable.
func (s *Server) leaderKnown() bool {
	if m := s.st.Member(); m != nil {
		return m.Etcd.Server.Lead() != 0
	}
	h := s.st.Health()
	return h.Measured.IsZero() || (h.LeaderID != 0 && h.Reachable >= h.Quorum())
}

// staleSnapshot reads this node's own copy and, meanwhile, probes the
// voters within the probe budget: what answers is what it can say is alive.
func (s *Server) staleSnapshot(ctx context.Context) (*snapshot, error) {
	var h store.Health
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		h = s.st.Probe(ctx, store.ProbeBudget(s.defaultTimeout))
	}()
	snap, err := s.readSnapshot(ctx, true)
	<-probed
	if err != nil {
		return nil, err
	}
	snap.self = s.cm.Self().Name
	snap.lastContact = s.cm.LastContact()
	snap.reached = map[string]bool{}
	for _, u := range h.Answered {
		snap.reached[u] = true
	}
	if eps := s.st.Endpoints(); s.st.Member() != nil && len(eps) > 0 {
		snap.figuresFrom = eps[0]
	} else if len(h.Answered) > 0 {
		snap.figuresFrom = h.Answered[0]
	}
	return snap, nil
}

// readSnapshot reads the membership state, linearizably or (stale) from
// the store member this node reads from. Either way the reads get at most
// quorumWait: a quorum read that takes longer is not coming back soon, and
// a stale read on a client node whose voter is cut off fails rather than
// holding the answer.
func (s *Server) readSnapshot(ctx context.Context, stale bool) (*snapshot, error) {
	c := s.st.Client()
	var opts []clientv3.OpOption
	if stale {
		opts = append(opts, clientv3.WithSerializable())
	}
	rctx, cancel := context.WithTimeout(ctx, s.quorumWait)
	defer cancel()
	ml, err := c.MemberList(rctx, opts...)
	if err != nil {
		return nil, err
	}
	resp, err := c.Get(rctx, keys.NodesPrefix, append(opts, clientv3.WithPrefix())...)
	if err != nil {
		return nil, err
	}
	aresp, err := c.Get(rctx, keys.AlivePrefix, append(opts, clientv3.WithPrefix(), clientv3.WithKeysOnly())...)
	if err != nil {
		return nil, err
	}
	cancel()
	snap := &snapshot{stale: stale, members: ml.Members, recs: map[string]cluster.NodeRecord{}, alive: map[string]bool{}}
	for _, kv := range resp.Kvs {
		var rec cluster.NodeRecord
		if json.Unmarshal(kv.Value, &rec) == nil && rec.Name != "" {
			snap.recs[rec.Name] = rec
		}
	}
	for _, kv := range aresp.Kvs {
		snap.alive[string(kv.Key)[len(keys.AlivePrefix):]] = true
	}
	if m := s.st.Member(); m != nil {
		snap.leader = m.Etcd.Server.Lead()
	} else {
		snap.leader = s.st.Health().LeaderID
	}
	if s.cm.Self().External && !stale {
		// An external store's members are not tandem nodes: ask each for
		// its status (etcd's maintenance API) to report its real health.
		snap.storeUp = map[uint64]bool{}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		for _, m := range ml.Members {
			if len(m.ClientURLs) == 0 {
				continue
			}
			if st, err := s.st.MemberStatus(pctx, m.ClientURLs[0]); err == nil {
				snap.storeUp[m.ID] = true
				if st.Leader != 0 {
					snap.leader = st.Leader
				}
			}
		}
		cancel()
	}
	if stale {
		// Leases do not expire without a leader: the alive keys say only
		// who was alive when this node last heard from one, and no leader
		// is confirmed.
		snap.aliveInCopy, snap.alive = snap.alive, map[string]bool{}
		snap.leader = 0
	}
	return snap, nil
}

// reach says, in a stale snapshot, what the answering node knows of a
// node's liveness: only itself and the voters that answered its probe
// count as alive.
func (snap *snapshot) reach(name string, mem *etcdserverpb.Member) string {
	switch {
	case name == snap.self:
		return wire.ReachSelf
	case mem == nil || mem.IsLearner || len(mem.ClientURLs) == 0:
		return wire.ReachUnknown // the probe asks voters only
	case snap.reached[mem.ClientURLs[0]]:
		return wire.ReachReachable
	default:
		return wire.ReachUnreachable
	}
}

func (snap *snapshot) rows() []wire.MemberInfo {
	byName := map[string]*etcdserverpb.Member{}
	for _, m := range snap.members {
		byName[m.Name] = m
	}
	var rows []wire.MemberInfo
	seen := map[string]bool{}
	for name, rec := range snap.recs {
		row := wire.MemberInfo{Name: name, Role: cluster.RoleClient, Alive: snap.alive[name], API: rec.API, PeerURL: rec.PeerURL, DNS: rec.DNS, Proxy: rec.Proxy}
		mem := byName[name]
		if mem == nil {
			for _, m := range snap.members {
				if len(m.PeerURLs) > 0 && m.PeerURLs[0] == rec.PeerURL {
					mem = m
				}
			}
		}
		if mem != nil {
			seen[fmt.Sprint(mem.ID)] = true
			row.Role = cluster.RoleVoter
			if mem.IsLearner {
				row.Role = "learner"
			}
			row.StoreURL = rec.StoreURL
			row.MemberID = fmt.Sprintf("%x", mem.ID)
			row.Leader = mem.ID == snap.leader && snap.leader != 0
		} else {
			row.PeerURL = ""
		}
		if snap.stale {
			row.Reach = snap.reach(name, mem)
			row.Alive = row.Reach == wire.ReachSelf || row.Reach == wire.ReachReachable
		}
		switch {
		case row.Alive:
		case snap.aliveInCopy[name] && !snap.lastContact.IsZero():
			row.LastSeen = snap.lastContact.UTC() // alive as of this node's copy
		default:
			row.LastSeen = rec.LastSeen
		}
		rows = append(rows, row)
	}
	// Store members with no node record (an external tool added them, or
	// their node never started): list them so nothing is hidden.
	for _, m := range snap.members {
		if seen[fmt.Sprint(m.ID)] {
			continue
		}
		row := wire.MemberInfo{Name: m.Name, Role: cluster.RoleVoter, MemberID: fmt.Sprintf("%x", m.ID), Leader: m.ID == snap.leader, Alive: snap.storeUp[m.ID]}
		if snap.storeUp != nil && len(m.ClientURLs) > 0 {
			row.StoreURL = m.ClientURLs[0]
		}
		if m.IsLearner {
			row.Role = "learner"
		}
		if snap.stale {
			row.Reach = snap.reach("", m)
			row.Alive = row.Reach == wire.ReachReachable
		}
		if row.Name == "" {
			row.Name = "(unstarted " + row.MemberID + ")"
		}
		if len(m.PeerURLs) > 0 {
			row.PeerURL = m.PeerURLs[0]
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows
}

// withSnapshot reads the membership snapshot within the request's timeout
// and hands it to f, or answers the error.
func (s *Server) withSnapshot(w http.ResponseWriter, r *http.Request, f func(context.Context, *snapshot)) {
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	snap, err := s.snapshot(ctx)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	f(ctx, snap)
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	s.withSnapshot(w, r, func(_ context.Context, snap *snapshot) {
		out := wire.Members{Stale: snap.stale, Members: snap.rows()}
		if snap.stale {
			out.LastContactMs = s.lastContactMs()
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	s.withSnapshot(w, r, func(ctx context.Context, snap *snapshot) { s.writeStatus(ctx, w, snap) })
}

func (s *Server) writeStatus(ctx context.Context, w http.ResponseWriter, snap *snapshot) {
	st := wire.Status{Stale: snap.stale, Node: s.cm.Self().Name, Nodes: len(snap.recs)}
	// Each store request here gets quorumWait, like the snapshot's reads:
	// a figure that does not come in time is left out rather than holding
	// the answer.
	qctx, cancel := context.WithTimeout(ctx, s.quorumWait)
	defer cancel()
	if snap.stale {
		st.LastContactMs = s.lastContactMs()
		if info, err := s.cm.Info(qctx, clientv3.WithSerializable()); err == nil {
			st.TargetVoters = info.Voters
		}
	} else {
		if info, err := s.cm.Info(qctx); err == nil {
			st.TargetVoters = info.Voters
		}
		st.Autopilot, _ = cluster.AutopilotHolder(qctx, s.st.Client())
	}
	var leaderURL string
	for _, row := range snap.rows() {
		if _, ok := snap.recs[row.Name]; ok && row.Alive {
			st.NodesAlive++
		}
		if row.Role != cluster.RoleVoter {
			continue
		}
		st.Voters++
		if row.Alive {
			st.VotersAlive++
		}
		if row.Leader {
			st.Leader = row.Name
			leaderURL = row.StoreURL
		}
	}
	if s.cm.Self().External {
		// tandem does not manage an external store's membership: its
		// target is what it has.
		st.TargetVoters = st.Voters
	}
	st.Quorum = st.Voters/2 + 1
	if h := s.st.Health(); !snap.stale && !h.Measured.IsZero() && h.Reachable < st.VotersAlive {
		// Leases cannot expire without a leader; what this node can reach
		// is the better measure then.
		st.VotersAlive = h.Reachable
	}
	st.FaultTolerance = st.VotersAlive - st.Quorum
	if st.FaultTolerance < 0 {
		st.FaultTolerance = -1
	}
	// The figures come from the leader, or, when stale, from this node's
	// own member (its local state needs no quorum), or on a node without
	// one from a voter that answered its probe.
	figuresFrom := leaderURL
	if snap.stale {
		figuresFrom = snap.figuresFrom
	}
	if figuresFrom != "" {
		if ms, err := s.st.MemberStatus(qctx, figuresFrom); err == nil {
			st.Term = ms.RaftTerm
			st.AppliedIndex = ms.RaftAppliedIndex
			st.Revision = ms.Header.Revision
			st.StoreSizeBytes = ms.DbSize
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// lastContactMs is how long ago this node last heard from the store
// leader, nil if it never has.
func (s *Server) lastContactMs() *int64 {
	lc := s.cm.LastContact()
	if lc.IsZero() {
		return nil
	}
	ms := time.Since(lc).Milliseconds()
	return &ms
}

// events lists recent events (?limit=N, default 50) and with ?watch=true
// streams new ones as JSON lines.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	p := params{r: r}
	watch := p.bool("watch")
	limit := p.count("limit", 50)
	rev, _ := p.rev("rev")
	if !p.check(w) {
		return
	}
	if watch {
		s.stream(w, r, keys.EventsPrefix, true, rev, func(ev *clientv3.Event) any {
			var e wire.Event
			_ = json.Unmarshal(ev.Kv.Value, &e)
			return struct {
				wire.Event
				Revision int64 `json:"revision"`
			}{e, ev.Kv.ModRevision}
		})
		return
	}
	ctx, cancel, ok := s.requestContext(w, r)
	if !ok {
		return
	}
	defer cancel()
	resp, err := s.st.Client().Get(ctx, keys.EventsPrefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := struct {
		Revision int64        `json:"revision"`
		Events   []wire.Event `json:"events"`
	}{Revision: resp.Header.Revision, Events: []wire.Event{}}
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		var e wire.Event
		if json.Unmarshal(resp.Kvs[i].Value, &e) == nil {
			out.Events = append(out.Events, e)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req wire.JoinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "join request: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	resp, err := s.cm.Admit(ctx, req)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	if err := s.cm.Leave(ctx); err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"left": s.cm.Self().Name})
	if s.OnLeave != nil {
		go s.OnLeave()
	}
}

func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	if err := s.cm.RemoveNode(ctx, name); err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": name})
}
