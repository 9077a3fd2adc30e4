package dns

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func TestNames(t *testing.T) {
	const (
		A, AAAA, SRV, TXT, SOA, ANY = mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeTXT, mdns.TypeSOA, mdns.TypeANY
		OK, NX, REFUSED             = mdns.RcodeSuccess, mdns.RcodeNameError, mdns.RcodeRefused
		fd001                       = "fd000000000000000000000000000001"
	)
	webSRV := []string{
		"1 1 8080 0a000102.addr.tandem.",
		"1 1 9000 " + fd001 + ".addr.tandem.",
		"1 5 8080 n1.node.tandem.",
	}
	webSRVExtra := []string{
		"0a000102.addr.tandem. A 10.0.1.2",
		fd001 + ".addr.tandem. AAAA fd00::1",
		"n1.node.tandem. A 10.0.0.1",
	}
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		// want is the sorted rdata of the answer section; wantExtra the
		// sorted "name type rdata" of the additional one.
		want      []string
		wantExtra []string
	}{
		{"service A passing only", "web.service.tandem.", A, OK, []string{"10.0.0.1", "10.0.1.2"}, nil},
		{"service AAAA", "web.service.tandem.", AAAA, OK, []string{"fd00::1"}, nil},
		{"service ANY", "web.service.tandem.", ANY, OK, []string{"10.0.0.1", "10.0.1.2", "fd00::1"}, nil},
		{"case-insensitive", "WEB.Service.TanDem.", A, OK, []string{"10.0.0.1", "10.0.1.2"}, nil},
		{"tag filter", "v1.web.service.tandem.", A, OK, []string{"10.0.0.1"}, nil},
		{"tag filter AAAA", "v2.web.service.tandem.", AAAA, OK, []string{"fd00::1"}, nil},
		{"tag of critical only", "old.web.service.tandem.", A, OK, nil, nil},
		{"unknown tag", "nope.web.service.tandem.", A, NX, nil, nil},
		{"warning fallback", "api.service.tandem.", A, OK, []string{"10.0.2.1"}, nil},
		{"critical never", "db.service.tandem.", A, OK, nil, nil},
		{"no instances", "idle.service.tandem.", A, OK, nil, nil},
		{"host name skipped for A", "host.service.tandem.", A, OK, []string{"10.0.3.1"}, nil},
		{"unknown service", "nope.service.tandem.", A, NX, nil, nil},
		{"unsupported type", "web.service.tandem.", TXT, OK, nil, nil},
		{"SRV", "web.service.tandem.", SRV, OK, webSRV, webSRVExtra},
		{"SRV RFC 2782", "_web._tcp.service.tandem.", SRV, OK, webSRV, webSRVExtra},
		{"SRV RFC 2782 udp", "_web._udp.service.tandem.", SRV, NX, nil, nil},
		{"SRV tag", "primary.web.service.tandem.", SRV, OK, []string{"1 5 8080 n1.node.tandem."}, []string{"n1.node.tandem. A 10.0.0.1"}},
		{"SRV warning fallback", "api.service.tandem.", SRV, OK, []string{"1 1 7000 0a000201.addr.tandem."}, []string{"0a000201.addr.tandem. A 10.0.2.1"}},
		{"SRV host name target", "host.service.tandem.", SRV, OK,
			[]string{"1 1 5432 0a000301.addr.tandem.", "1 1 5432 db.example.com."},
			[]string{"0a000301.addr.tandem. A 10.0.3.1"}},
		{"addr A", "0a000102.addr.tandem.", A, OK, []string{"10.0.1.2"}, nil},
		{"addr upper case", "0A0001FF.addr.tandem.", A, OK, []string{"10.0.1.255"}, nil},
		{"addr AAAA", fd001 + ".addr.tandem.", AAAA, OK, []string{"fd00::1"}, nil},
		{"addr v4 asked AAAA", "0a000102.addr.tandem.", AAAA, OK, nil, nil},
		{"addr bad hex", "0a00010g.addr.tandem.", A, NX, nil, nil},
		{"addr bad length", "0a0001.addr.tandem.", A, NX, nil, nil},
		{"node A", "n1.node.tandem.", A, OK, []string{"10.0.0.1"}, nil},
		{"dead node still answers", "n3.node.tandem.", A, OK, []string{"10.0.0.3"}, nil},
		{"node AAAA", "n6.node.tandem.", AAAA, OK, []string{"fd00::6"}, nil},
		{"node of other family", "n1.node.tandem.", AAAA, OK, nil, nil},
		{"unknown node", "n9.node.tandem.", A, NX, nil, nil},
		{"lb A alive only", "lb.tandem.", A, OK, []string{"10.0.0.1", "10.0.0.2"}, nil},
		{"lb AAAA", "lb.tandem.", AAAA, OK, []string{"fd00::6"}, nil},
		{"apex SOA", "tandem.", SOA, OK, []string{"SOA"}, nil},
		{"apex A", "tandem.", A, OK, nil, nil},
		{"empty non-terminal", "service.tandem.", A, OK, nil, nil},
		{"unknown under domain", "foo.tandem.", A, NX, nil, nil},
		{"too many labels", "a.v1.web.service.tandem.", A, NX, nil, nil},
		{"lb with a prefix", "x.lb.tandem.", A, NX, nil, nil},
		{"outside domain", "example.com.", A, REFUSED, nil, nil},
		{"domain as a suffix only", "web.service.xtandem.", A, REFUSED, nil, nil},
		{"root", ".", A, REFUSED, nil, nil},
	}
	s := start(t, Config{}, fixture())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ask(t, s.Addr(), "udp", tt.qname, tt.qtype, 0)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode], r)
			}
			got := rdatas(r.Answer)
			if slices.Equal(tt.want, []string{"SOA"}) && len(r.Answer) == 1 && r.Answer[0].Header().Rrtype == SOA {
				got = tt.want
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("answer %q, want %q", got, tt.want)
			}
			for _, rr := range r.Answer {
				if rr.Header().Name != tt.qname {
					t.Errorf("answer owner %q, want the name asked %q", rr.Header().Name, tt.qname)
				}
			}
			if extra := records(r.Extra); !slices.Equal(extra, tt.wantExtra) {
				t.Errorf("additional %q, want %q", extra, tt.wantExtra)
			}
			if r.Truncated {
				t.Error("TC set on a small answer")
			}
			switch {
			case tt.rcode == REFUSED:
				if len(r.Ns) != 0 || r.Authoritative {
					t.Errorf("REFUSED answer with authority %v, aa %v", r.Ns, r.Authoritative)
				}
			case len(tt.want) == 0:
				if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != SOA {
					t.Fatalf("negative answer without the SOA in authority: %v", r.Ns)
				}
				soa := r.Ns[0].(*mdns.SOA)
				if soa.Hdr.Name != "tandem." || soa.Ns != "ns.tandem." || soa.Mbox != "hostmaster.tandem." || soa.Minttl != 0 {
					t.Errorf("SOA %v", soa)
				}
				fallthrough
			default:
				if !r.Authoritative {
					t.Error("AA not set")
				}
			}
		})
	}
}

func TestDomainAndTTL(t *testing.T) {
	s := start(t, Config{Domain: "Consul", TTL: 30}, fixture())
	r := ask(t, s.Addr(), "udp", "web.service.consul.", mdns.TypeA, 0)
	if got := rdatas(r.Answer); !slices.Equal(got, []string{"10.0.0.1", "10.0.1.2"}) {
		t.Fatalf("answer %q", got)
	}
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 30 {
			t.Errorf("TTL %d, want 30", rr.Header().Ttl)
		}
	}
	r = ask(t, s.Addr(), "udp", "web.service.consul.", mdns.TypeSRV, 0)
	if got := rdatas(r.Answer); !slices.Contains(got, "1 5 8080 n1.node.consul.") {
		t.Errorf("SRV %q, want a target under the configured domain", got)
	}
	r = ask(t, s.Addr(), "udp", "nope.service.consul.", mdns.TypeA, 0)
	if r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("unknown service: %v", r)
	}
	if soa := r.Ns[0].(*mdns.SOA); soa.Minttl != 30 || soa.Hdr.Name != "consul." || soa.Ns != "ns.consul." {
		t.Errorf("SOA %v, want minimum 30 under consul.", soa)
	}
	if r := ask(t, s.Addr(), "udp", "web.service.tandem.", mdns.TypeA, 0); r.Rcode != mdns.RcodeRefused {
		t.Errorf("the default domain answered %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
}

func TestShuffle(t *testing.T) {
	cat := fixture()
	cat.bigService("ten", 10)
	s := start(t, Config{}, cat)
	for _, tc := range []struct {
		name  string
		qtype uint16
	}{{"ten.service.tandem.", mdns.TypeA}, {"ten.service.tandem.", mdns.TypeSRV}, {"lb.tandem.", mdns.TypeA}} {
		t.Run(mdns.TypeToString[tc.qtype]+" "+tc.name, func(t *testing.T) {
			orders := map[string]bool{}
			var want []string
			for i := range 40 {
				r := ask(t, s.Addr(), "udp", tc.name, tc.qtype, 0)
				var order []string
				for _, rr := range r.Answer {
					order = append(order, rdata(rr))
				}
				orders[strings.Join(order, ",")] = true
				got := rdatas(r.Answer)
				if i == 0 {
					want = got
				} else if !slices.Equal(got, want) {
					t.Fatalf("records changed between queries: %q then %q", want, got)
				}
			}
			// 40 queries of 10 records (or 2 for lb) all in one order: 2^-39 at worst.
			if len(orders) < 2 {
				t.Errorf("40 queries gave one order: %v", orders)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	cat := fixture()
	cat.bigService("big", 100)
	s := start(t, Config{}, cat)
	const name = "big.service.tandem."

	plain := ask(t, s.Addr(), "udp", name, mdns.TypeA, 0)
	if !plain.Truncated || len(plain.Answer) == 0 || len(plain.Answer) >= 100 {
		t.Fatalf("UDP without EDNS0: TC %v with %d answers, want TC and some of the 100", plain.Truncated, len(plain.Answer))
	}
	if plain.IsEdns0() != nil {
		t.Error("OPT record in the answer to a query without one")
	}
	plain.Compress = true // as sent
	if n, err := plain.Pack(); err != nil || len(n) > mdns.MinMsgSize {
		t.Errorf("UDP answer of %d bytes (err %v), want at most 512", len(n), err)
	}

	edns := ask(t, s.Addr(), "udp", name, mdns.TypeA, 4096)
	if len(edns.Answer) <= len(plain.Answer) {
		t.Errorf("EDNS0 4096 got %d answers, no more than the %d without", len(edns.Answer), len(plain.Answer))
	}
	if opt := edns.IsEdns0(); opt == nil || opt.UDPSize() != advertisedUDPSize {
		t.Errorf("answer to an EDNS0 query has OPT %v, want one with size %d", opt, advertisedUDPSize)
	}

	small := ask(t, s.Addr(), "udp", name, mdns.TypeA, 1232)
	small.Compress = true
	if b, _ := small.Pack(); len(b) > 1232 || !small.Truncated {
		t.Errorf("EDNS0 1232: answer of %d bytes, TC %v", len(b), small.Truncated)
	}

	for _, qtype := range []uint16{mdns.TypeA, mdns.TypeSRV} {
		full := ask(t, s.Addr(), "tcp", name, qtype, 0)
		if full.Truncated || len(full.Answer) != 100 {
			t.Errorf("TCP %s: TC %v with %d answers, want all 100", mdns.TypeToString[qtype], full.Truncated, len(full.Answer))
		}
	}
	srv := ask(t, s.Addr(), "udp", name, mdns.TypeSRV, 0)
	if !srv.Truncated {
		t.Errorf("UDP SRV of 100 instances not truncated")
	}
}

func TestEDNS(t *testing.T) {
	s := start(t, Config{}, fixture())
	r := ask(t, s.Addr(), "udp", "web.service.tandem.", mdns.TypeA, 1232)
	if r.IsEdns0() == nil {
		t.Error("no OPT record echoed")
	}
	r = ask(t, s.Addr(), "udp", "nope.service.tandem.", mdns.TypeA, 1232)
	if r.Rcode != mdns.RcodeNameError || r.IsEdns0() == nil || len(r.Ns) != 1 {
		t.Errorf("NXDOMAIN with EDNS0: %v", r)
	}

	m := new(mdns.Msg)
	m.SetQuestion("web.service.tandem.", mdns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	r = exchange(t, s.Addr(), "udp", m)
	if r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
		t.Errorf("EDNS version 1: rcode %s, want BADVERS with an OPT record", mdns.RcodeToString[r.Rcode])
	}
}

func TestMalformed(t *testing.T) {
	s := start(t, Config{}, fixture())
	m := new(mdns.Msg)
	m.SetNotify("web.service.tandem.")
	if r := exchange(t, s.Addr(), "udp", m); r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("NOTIFY: rcode %s, want NOTIMP", mdns.RcodeToString[r.Rcode])
	}
	m = new(mdns.Msg)
	m.SetQuestion("web.service.tandem.", mdns.TypeA)
	m.Question[0].Qclass = mdns.ClassCHAOS
	if r := exchange(t, s.Addr(), "udp", m); r.Rcode != mdns.RcodeRefused {
		t.Errorf("class CH: rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	// Handled directly: the server's accept function answers these itself.
	none := new(mdns.Msg)
	none.Id = 7
	if r := s.handle(none, false); r == nil || r.Rcode != mdns.RcodeFormatError {
		t.Errorf("no question: %v, want FORMERR", r)
	}
	resp := new(mdns.Msg)
	resp.SetQuestion("web.service.tandem.", mdns.TypeA)
	resp.Response = true
	if r := s.handle(resp, false); r != nil {
		t.Errorf("a response got an answer: %v", r)
	}
	// Garbage over UDP gets no answer and leaves the server serving.
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, s.Addr(), "udp", "web.service.tandem.", mdns.TypeA, 0); len(r.Answer) != 2 {
		t.Errorf("after garbage: %v", r)
	}
}

func TestSamePortUDPAndTCP(t *testing.T) {
	s := start(t, Config{}, fixture())
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s.Addr(), network, "web.service.tandem.", mdns.TypeA, 0)
		if len(r.Answer) != 2 {
			t.Errorf("%s: %v", network, r)
		}
	}
}

func TestRunErrors(t *testing.T) {
	// A port taken over TCP makes Run fail at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Config{Addr: ln.Addr().String()}, fixture(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("Run on a taken port: %v, want an error at once", err)
	}

	s = start(t, Config{}, fixture())
	if err := s.Run(ctx); err == nil {
		t.Error("second Run: no error")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Domain: "tandem", Addr: "0.0.0.0:53"}, true},
		{Config{Domain: "svc.example.org.", Addr: "[::1]:0"}, true},
		{Config{Domain: "."}, false},
		{Config{Domain: "a..b"}, false},
		{Config{Domain: ".tandem"}, false},
		{Config{Addr: "127.0.0.1"}, false},
		{Config{Addr: "127.0.0.1:dns"}, false},
		{Config{Addr: "127.0.0.1:70000"}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok %v", tt.cfg, err, tt.ok)
		}
		if _, err := New(tt.cfg, fixture(), nil); (err == nil) != tt.ok {
			t.Errorf("%+v: New: %v, want ok %v", tt.cfg, err, tt.ok)
		}
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("New without a catalog: no error")
	}
}
