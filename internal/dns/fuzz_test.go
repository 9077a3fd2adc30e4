package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

var fuzzNames = []string{
	"web.service.tandem.", "v1.web.service.tandem.", "_web._tcp.service.tandem.",
	"host.service.tandem.", "big.service.tandem.", "nope.service.tandem.",
	"n1.node.tandem.", "0a000102.addr.tandem.", "fd000000000000000000000000000001.addr.tandem.",
	"lb.tandem.", "tandem.", "service.tandem.", "example.com.", ".",
}

func fuzzServer(t testing.TB) *Server {
	cat := fixture()
	cat.bigService("big", 100)
	s, err := New(Config{}, cat, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkAnswer asks s to handle req over both transports and checks the
// answers pack and fit the transport.
func checkAnswer(t *testing.T, s *Server, req *mdns.Msg) {
	for _, tcp := range []bool{false, true} {
		resp := s.handle(req, tcp)
		if resp == nil {
			if !req.Response {
				t.Fatalf("no answer to a query: %v", req)
			}
			continue
		}
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\nquery %v\nanswer %v", err, req, resp)
		}
		limit := mdns.MaxMsgSize
		if !tcp {
			limit = mdns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = max(limit, int(opt.UDPSize()))
			}
		}
		if len(b) > limit {
			t.Fatalf("answer of %d bytes over tcp=%v, limit %d", len(b), tcp, limit)
		}
		if resp.Id != req.Id {
			t.Fatalf("answer id %d, query id %d", resp.Id, req.Id)
		}
	}
}

// FuzzHandle feeds raw bytes to the path a UDP or TCP packet takes:
// unpack, then handle. It is the server's parser of outside input.
func FuzzHandle(f *testing.F) {
	for _, name := range fuzzNames {
		for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeANY, mdns.TypeSOA, mdns.TypeTXT} {
			for _, edns := range []uint16{0, 512, 1232, 4096} {
				m := new(mdns.Msg)
				m.SetQuestion(name, qtype)
				if edns > 0 {
					m.SetEdns0(edns, false)
				}
				b, err := m.Pack()
				if err != nil {
					f.Fatal(err)
				}
				f.Add(b)
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		checkAnswer(t, s, req)
	})
}

// FuzzQuery feeds arbitrary names, types and EDNS0 sizes to handle, which
// reaches the name parser far more often than raw bytes do.
func FuzzQuery(f *testing.F) {
	for _, name := range fuzzNames {
		f.Add(name, mdns.TypeA, uint16(0))
		f.Add(name, mdns.TypeSRV, uint16(1232))
	}
	f.Add(`we\.b.service.tandem.`, mdns.TypeA, uint16(0))
	f.Add(`\000.node.tandem.`, mdns.TypeANY, uint16(100))
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, name string, qtype uint16, edns uint16) {
		if _, ok := mdns.IsDomainName(name); !ok {
			return
		}
		req := new(mdns.Msg)
		req.SetQuestion(mdns.Fqdn(name), qtype)
		if edns > 0 {
			req.SetEdns0(edns, false)
		}
		if _, err := req.Pack(); err != nil {
			return // not a query a client could send
		}
		checkAnswer(t, s, req)
	})
}
