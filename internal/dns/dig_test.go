package dns

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// dig runs the real dig against the server and returns its output.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("dig")
	if err != nil {
		t.Fatalf("dig not found (%v): these tests need the real dig binary; install it with: apt-get install -y dnsutils", err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append([]string{"@" + host, "-p", port, "+time=3", "+tries=2"}, args...)
	out, err := exec.CommandContext(ctx, bin, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func TestDig(t *testing.T) {
	cat := fixture()
	cat.bigService("big", 100)
	s := start(t, Config{}, cat)

	if got := lines(dig(t, s.Addr(), "web.service.tandem.", "A", "+short")); !slices.Equal(got, []string{"10.0.0.1", "10.0.1.2"}) {
		t.Errorf("dig A +short: %q", got)
	}

	srv := lines(dig(t, s.Addr(), "web.service.tandem.", "SRV", "+short"))
	want := []string{
		"1 1 8080 0a000102.addr.tandem.",
		"1 1 9000 fd000000000000000000000000000001.addr.tandem.",
		"1 5 8080 n1.node.tandem.",
	}
	if !slices.Equal(srv, want) {
		t.Errorf("dig SRV +short: %q, want %q", srv, want)
	}
	for _, l := range srv {
		if f := strings.Fields(l); len(f) != 4 {
			t.Errorf("SRV line %q: want priority weight port target", l)
		}
	}

	// The full SRV answer carries the targets' addresses as additional records.
	full := dig(t, s.Addr(), "web.service.tandem.", "SRV")
	for _, re := range []string{
		`status: NOERROR`,
		`flags: qr aa rd;`,
		`(?m)^n1\.node\.tandem\.\s+0\s+IN\s+A\s+10\.0\.0\.1$`,
		`(?m)^0a000102\.addr\.tandem\.\s+0\s+IN\s+A\s+10\.0\.1\.2$`,
	} {
		if !regexp.MustCompile(re).MatchString(full) {
			t.Errorf("dig SRV output does not match %s:\n%s", re, full)
		}
	}

	nx := dig(t, s.Addr(), "nope.service.tandem.", "A")
	if !strings.Contains(nx, "status: NXDOMAIN") || !regexp.MustCompile(`(?m)^tandem\.\s+0\s+IN\s+SOA\s+ns\.tandem\. hostmaster\.tandem\.`).MatchString(nx) {
		t.Errorf("dig unknown service: want NXDOMAIN with the SOA:\n%s", nx)
	}
	if out := dig(t, s.Addr(), "example.com.", "A"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("dig outside the domain: want REFUSED:\n%s", out)
	}

	// dig retries over TCP when the UDP answer is truncated: all 100 arrive.
	if got := lines(dig(t, s.Addr(), "big.service.tandem.", "A", "+short")); len(got) != 100 {
		t.Errorf("dig big A: %d answers, want 100 (over TCP after TC)", len(got))
	}
	// With the TCP retry turned off, the UDP answer is cut and flagged.
	cut := dig(t, s.Addr(), "big.service.tandem.", "A", "+noedns", "+ignore")
	if !regexp.MustCompile(`flags: qr aa tc rd;`).MatchString(cut) {
		t.Errorf("dig big A over UDP without EDNS0: want the tc flag:\n%s", cut)
	}
	if got := lines(dig(t, s.Addr(), "big.service.tandem.", "A", "+tcp", "+short")); len(got) != 100 {
		t.Errorf("dig +tcp big A: %d answers, want 100", len(got))
	}
}
