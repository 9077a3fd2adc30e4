package dns

import (
	"encoding/hex"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// kind is the shape of a name under the domain.
type kind int

const (
	kindApex    kind = iota // <domain>
	kindBranch              // service.<domain>, node.<domain>, addr.<domain>: empty non-terminals
	kindService             // [<tag>.]<svc>.service.<domain>, _<svc>._tcp.service.<domain>
	kindNode                // <node>.node.<domain>
	kindAddr                // <hex>.addr.<domain>
	kindLB                  // lb.<domain>
)

// query is what a name under the domain asks for.
type query struct {
	kind    kind
	service string
	tag     string
	node    string
	addr    netip.Addr
}

// parseName reads a lowercase fully qualified name that is in domain (a
// lowercase fully qualified name). ok is false when the name has none of
// the shapes the server answers: it does not exist.
func parseName(name, domain string) (q query, ok bool) {
	labels := mdns.SplitDomainName(name)
	n := len(labels) - mdns.CountLabel(domain)
	if n < 0 {
		return query{}, false
	}
	labels = labels[:n]
	if n == 0 {
		return query{kind: kindApex}, true
	}
	last, rest := labels[n-1], labels[:n-1]
	switch last {
	case "service":
		switch len(rest) {
		case 0:
			return query{kind: kindBranch}, true
		case 1:
			return query{kind: kindService, service: rest[0]}, true
		case 2:
			// RFC 2782 form: _<svc>._tcp. Tags never start with "_".
			if svc, ok := strings.CutPrefix(rest[0], "_"); ok {
				if rest[1] != "_tcp" || svc == "" {
					return query{}, false
				}
				return query{kind: kindService, service: svc}, true
			}
			return query{kind: kindService, service: rest[1], tag: rest[0]}, true
		}
	case "node":
		switch len(rest) {
		case 0:
			return query{kind: kindBranch}, true
		case 1:
			return query{kind: kindNode, node: rest[0]}, true
		}
	case "addr":
		switch len(rest) {
		case 0:
			return query{kind: kindBranch}, true
		case 1:
			ip, ok := decodeAddr(rest[0])
			if !ok {
				return query{}, false
			}
			return query{kind: kindAddr, addr: ip}, true
		}
	case "lb":
		if len(rest) == 0 {
			return query{kind: kindLB}, true
		}
	}
	return query{}, false
}

// encodeAddr is the label of ip under addr.<domain>: 8 hex digits for
// IPv4 (IPv4-mapped IPv6 included), 32 for IPv6.
func encodeAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return hex.EncodeToString(b[:])
	}
	b := ip.As16()
	return hex.EncodeToString(b[:])
}

// decodeAddr reverses encodeAddr.
func decodeAddr(label string) (netip.Addr, bool) {
	if len(label) != 8 && len(label) != 32 {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(label)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(b)
	return ip, ok
}

// parseIP reads an instance's or node's address as an IP without zone. ok
// is false for host names and anything else that is not an IP.
func parseIP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}
