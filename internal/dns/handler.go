package dns

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/tandemhq/tandem/internal/registry"
)

// advertisedUDPSize is the UDP payload size the server puts in its OPT
// record, and the largest query it reads over UDP.
const advertisedUDPSize = 4096

// handle answers one query. tcp tells the transport: a UDP answer is cut to
// the size the client can take (512 bytes without EDNS0) with TC set, so
// the client retries over TCP, where the answer is whole. It returns nil
// for a message that gets no answer (a response). It is called from many
// goroutines at once and never panics, whatever req holds.
func (s *Server) handle(req *mdns.Msg, tcp bool) *mdns.Msg {
	if req.Response {
		return nil
	}
	resp := new(mdns.Msg)
	resp.SetReply(req)
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(advertisedUDPSize, false)
		if opt.Version() != 0 {
			resp.Rcode = mdns.RcodeBadVers
			return resp
		}
		size = max(int(opt.UDPSize()), mdns.MinMsgSize)
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		resp.Rcode = mdns.RcodeNotImplemented
	case len(req.Question) != 1:
		resp.Rcode = mdns.RcodeFormatError
	default:
		s.answer(resp, req.Question[0])
	}
	resp.Truncate(size)
	return resp
}

// answer fills resp with the answer to q.
func (s *Server) answer(resp *mdns.Msg, q mdns.Question) {
	q.Name = mdns.Fqdn(q.Name) // answers are owned by the name as asked, case included
	name := strings.ToLower(q.Name)
	if (q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY) || !mdns.IsSubDomain(s.domain, name) {
		resp.Rcode = mdns.RcodeRefused
		return
	}
	resp.Authoritative = true
	var (
		answers, extra []mdns.RR
		exists         = true
	)
	if pq, ok := parseName(name, s.domain); !ok {
		exists = false
	} else {
		answers, extra, exists = s.resolve(pq, q)
	}
	if !exists {
		resp.Rcode = mdns.RcodeNameError
	}
	if len(answers) == 0 {
		resp.Ns = []mdns.RR{s.soa()}
		return
	}
	resp.Answer = answers
	resp.Extra = append(extra, resp.Extra...) // the OPT record stays last
}

// resolve returns the records of pq for q's type, and whether the name
// exists at all (false: NXDOMAIN).
func (s *Server) resolve(pq query, q mdns.Question) (answers, extra []mdns.RR, exists bool) {
	switch pq.kind {
	case kindApex:
		if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
			return []mdns.RR{s.soa()}, nil, true
		}
		return nil, nil, true
	case kindBranch:
		return nil, nil, true
	case kindService:
		return s.service(pq, q)
	case kindNode:
		for _, n := range s.cat.Nodes() {
			if strings.EqualFold(n.Name, pq.node) {
				var ips []netip.Addr
				if ip, ok := parseIP(n.Addr); ok {
					ips = append(ips, ip)
				}
				return s.addrRecords(q.Name, q.Qtype, ips), nil, true
			}
		}
		return nil, nil, false
	case kindAddr:
		return s.addrRecords(q.Name, q.Qtype, []netip.Addr{pq.addr}), nil, true
	case kindLB:
		var ips []netip.Addr
		for _, n := range s.cat.Nodes() {
			if ip, ok := parseIP(n.Addr); ok && n.Alive {
				ips = append(ips, ip)
			}
		}
		rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
		return s.addrRecords(q.Name, q.Qtype, ips), nil, true
	}
	return nil, nil, false
}

// service answers [<tag>.]<svc>.service.<domain>. The name exists when the
// service is known and, with a tag, when an instance in any state has the
// tag.
func (s *Server) service(pq query, q mdns.Question) (answers, extra []mdns.RR, exists bool) {
	all := s.cat.Instances(pq.service)
	if all == nil {
		return nil, nil, false
	}
	if pq.tag != "" {
		all = slices.DeleteFunc(slices.Clone(all), func(in registry.InstanceHealth) bool {
			return !slices.ContainsFunc(in.Tags, func(t string) bool { return strings.EqualFold(t, pq.tag) })
		})
		if len(all) == 0 {
			return nil, nil, false
		}
	}
	served := serving(all)
	rand.Shuffle(len(served), func(i, j int) { served[i], served[j] = served[j], served[i] })
	switch q.Qtype {
	case mdns.TypeA, mdns.TypeAAAA, mdns.TypeANY:
		var ips []netip.Addr
		for _, in := range served {
			if ip, ok := parseIP(in.Address); ok { // host names have no A/AAAA here
				ips = append(ips, ip)
			}
		}
		return s.addrRecords(q.Name, q.Qtype, ips), nil, true
	case mdns.TypeSRV:
		answers, extra = s.srvRecords(q.Name, served)
		return answers, extra, true
	}
	return nil, nil, true
}

// serving returns a new slice of the instances that get traffic: the
// passing ones, or when none passes the warning ones. Critical instances
// never do.
func serving(all []registry.InstanceHealth) []registry.InstanceHealth {
	var passing, warning []registry.InstanceHealth
	for _, in := range all {
		switch in.Status {
		case registry.Passing:
			passing = append(passing, in)
		case registry.Warning:
			warning = append(warning, in)
		}
	}
	if len(passing) > 0 {
		return passing
	}
	return warning
}

// srvRecords returns one SRV record per instance, in the order given, and
// the A/AAAA records of their targets. The target is the owner node's name
// when the instance listens on the node's address, the address encoded
// under addr.<domain> otherwise, and the address itself when it is a host
// name (then without additional records).
func (s *Server) srvRecords(name string, served []registry.InstanceHealth) (answers, extra []mdns.RR) {
	nodes := map[string]netip.Addr{}
	for _, n := range s.cat.Nodes() {
		if ip, ok := parseIP(n.Addr); ok {
			nodes[n.Name] = ip
		}
	}
	seen := map[string]bool{}
	for _, in := range served {
		if in.Port <= 0 || in.Port > 65535 {
			continue
		}
		var target string
		ip, isIP := parseIP(in.Address)
		switch {
		case isIP && nodes[in.Node] == ip && isLabel(in.Node):
			target = strings.ToLower(in.Node) + ".node." + s.domain
		case isIP:
			target = encodeAddr(ip) + ".addr." + s.domain
		default:
			host := mdns.Fqdn(strings.ToLower(in.Address))
			if _, ok := mdns.IsDomainName(host); !ok || host == "." {
				continue
			}
			target = host
		}
		weight := in.Weight
		if weight <= 0 {
			weight = 1 // the registry's default
		}
		answers = append(answers, &mdns.SRV{
			Hdr:      s.hdr(name, mdns.TypeSRV),
			Priority: 1,
			Weight:   uint16(min(weight, 65535)),
			Port:     uint16(in.Port),
			Target:   target,
		})
		if isIP && !seen[target] {
			seen[target] = true
			extra = append(extra, s.addrRecords(target, mdns.TypeANY, []netip.Addr{ip})...)
		}
	}
	return answers, extra
}

// addrRecords returns the A records of the IPv4 addresses in ips (for a
// query of type A or ANY) and the AAAA records of the IPv6 ones (AAAA or
// ANY), once each, in the order given.
func (s *Server) addrRecords(name string, qtype uint16, ips []netip.Addr) []mdns.RR {
	var rrs []mdns.RR
	seen := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		if seen[ip] {
			continue
		}
		seen[ip] = true
		switch {
		case ip.Is4() && (qtype == mdns.TypeA || qtype == mdns.TypeANY):
			rrs = append(rrs, &mdns.A{Hdr: s.hdr(name, mdns.TypeA), A: ip.AsSlice()})
		case ip.Is6() && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY):
			rrs = append(rrs, &mdns.AAAA{Hdr: s.hdr(name, mdns.TypeAAAA), AAAA: ip.AsSlice()})
		}
	}
	return rrs
}

// soa is the domain's SOA record, sent in the authority section of negative
// answers. Its minimum is the TTL, so negative answers are cached no longer
// than positive ones.
func (s *Server) soa() *mdns.SOA {
	return &mdns.SOA{
		Hdr:     s.hdr(s.domain, mdns.TypeSOA),
		Ns:      "ns." + s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  uint32(s.now().Unix()),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

func (s *Server) hdr(name string, rrtype uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: s.ttl}
}

// isLabel reports whether s can be one label of a host name.
func isLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
