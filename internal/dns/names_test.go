package dns

import (
	"net/netip"
	"testing"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		name string
		want query
		ok   bool
	}{
		{"tandem.", query{kind: kindApex}, true},
		{"service.tandem.", query{kind: kindBranch}, true},
		{"node.tandem.", query{kind: kindBranch}, true},
		{"addr.tandem.", query{kind: kindBranch}, true},
		{"lb.tandem.", query{kind: kindLB}, true},
		{"web.service.tandem.", query{kind: kindService, service: "web"}, true},
		{"v1.web.service.tandem.", query{kind: kindService, service: "web", tag: "v1"}, true},
		{"_web._tcp.service.tandem.", query{kind: kindService, service: "web"}, true},
		{"_._tcp.service.tandem.", query{}, false},
		{"_web._udp.service.tandem.", query{}, false},
		{"n1.node.tandem.", query{kind: kindNode, node: "n1"}, true},
		{"0a000001.addr.tandem.", query{kind: kindAddr, addr: netip.MustParseAddr("10.0.0.1")}, true},
		{"20010db8000000000000000000000001.addr.tandem.", query{kind: kindAddr, addr: netip.MustParseAddr("2001:db8::1")}, true},
		{"zz000001.addr.tandem.", query{}, false},
		{"a.b.node.tandem.", query{}, false},
		{"a.b.c.service.tandem.", query{}, false},
		{"x.lb.tandem.", query{}, false},
		{"other.tandem.", query{}, false},
		{`we\.b.service.tandem.`, query{kind: kindService, service: `we\.b`}, true},
	}
	for _, tt := range tests {
		got, ok := parseName(tt.name, "tandem.")
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseName(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAddrLabel(t *testing.T) {
	tests := []struct{ ip, label string }{
		{"10.0.0.1", "0a000001"},
		{"255.255.255.255", "ffffffff"},
		{"::ffff:10.0.0.1", "0a000001"},
		{"2001:db8::1", "20010db8000000000000000000000001"},
		{"::", "00000000000000000000000000000000"},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		if got := encodeAddr(ip); got != tt.label {
			t.Errorf("encodeAddr(%s) = %q, want %q", tt.ip, got, tt.label)
		}
		back, ok := decodeAddr(tt.label)
		if !ok || back != ip.Unmap() {
			t.Errorf("decodeAddr(%q) = %v, %v; want %v", tt.label, back, ok, ip.Unmap())
		}
	}
}
