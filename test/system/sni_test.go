package system

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/wire"
)

// serviceCert is a certificate for dnsNames signed by ca, valid from now
// for ttl (PEM), and its key.
func serviceCert(t *testing.T, ca *pki.CA, now time.Time, ttl time.Duration, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "svc", nil, dnsNames)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Sign(csr, "svc", now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// sniGet sends GET / with Host: web to a TLS proxy, asking for serverName
// by SNI and trusting roots; it returns the certificate the proxy showed
// and the answer's body.
func sniGet(proxyAddr, serverName string, roots *x509.CertPool) (*x509.Certificate, string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: serverName, RootCAs: roots}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+proxyAddr+"/", nil)
	req.Host = "web"
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return resp.TLS.PeerCertificates[0], strings.TrimSpace(string(body)), nil
}

// servesName checks that the proxy at addr shows a certificate for name
// and proxies the request to the instance web-1.
func servesName(addr, name string, roots *x509.CertPool) error {
	leaf, body, err := sniGet(addr, name, roots)
	if err != nil {
		return fmt.Errorf("%s via %s: %w", name, addr, err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name || body != "web-1" {
		return fmt.Errorf("%s via %s: certificate for %v, body %q", name, addr, leaf.DNSNames, body)
	}
	return nil
}

// TestProxySNI: service certificates uploaded through the API are served
// by every node's proxy for their names, and proxied; a deleted one stops
// being served everywhere; a pair dropped into --proxy-tls-dir is picked
// up while the node runs; bad uploads are refused and change nothing.
func TestProxySNI(t *testing.T) {
	dir := t.TempDir()
	c := clustertest.Start(t, 3, clustertest.Options{
		Flags:     []string{"--proxy-tls"},
		NodeFlags: map[string][]string{"n1": {"--proxy-tls-dir", dir}},
	})
	ctx := ctxT(t, 3*time.Minute)
	now := time.Now()
	ca, err := pki.NewCA("sni-test", now.Add(-time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	aCert, aKey := serviceCert(t, ca, now, time.Hour, "a.example")
	bCert, bKey := serviceCert(t, ca, now, time.Hour, "b.example")

	registerServer(t, c.Nodes[0], "web", "web-1", portOf(named(t, "web-1")))
	for name, pair := range map[string][2][]byte{"a": {aCert, aKey}, "b": {bCert, bKey}} {
		if _, err := c.Client().PutCert(ctx, name, pair[0], pair[1]); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
	}
	c.Eventually(30*time.Second, "every proxy serves a.example and b.example with their certificates", func() error {
		for _, nd := range c.Nodes {
			for _, name := range []string{"a.example", "b.example"} {
				if err := servesName(nd.Proxy, name, roots); err != nil {
					return err
				}
			}
		}
		return nil
	})

	before, err := c.Client().Certs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Certs) != 2 || before.Certs[0].Name != "a" || before.Certs[0].SANs[0] != "a.example" ||
		!strings.HasPrefix(before.Certs[0].Fingerprint, "sha256:") || before.Certs[1].Name != "b" {
		t.Fatalf("GET /v1/certs: %+v", before.Certs)
	}
	resp, err := c.HTTP().Get(c.Nodes[1].URL("/v1/certs"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(raw), "PRIVATE KEY") || strings.Contains(string(raw), `"key"`) {
		t.Fatalf("GET /v1/certs shows a key: %s", raw)
	}

	t.Run("refused", func(t *testing.T) {
		_, otherKey := serviceCert(t, ca, now, time.Hour, "a.example")
		expCert, expKey := serviceCert(t, ca, now.Add(-3*time.Hour), time.Hour, "a.example")
		read := makeToken(t, c, wire.TokenRequest{Role: "read", Name: "reader"}).Token
		operator := makeToken(t, c, wire.TokenRequest{Role: "operator", Name: "op"}).Token
		cases := []struct {
			what      string
			cl        *client.Client
			name      string
			cert, key []byte
			code      int
		}{
			{"a key that does not match the certificate", c.Client(), "a", aCert, otherKey, 400},
			{"an expired certificate", c.Client(), "a", expCert, expKey, 400},
			{"junk", c.Client(), "a", []byte("not PEM"), aKey, 400},
			{"a bad name", c.Client(), "A..b", aCert, aKey, 400},
			{"a read token", c.ClientWithToken(read, c.Nodes[0].API), "a", bCert, bKey, 403},
			{"an operator token", c.ClientWithToken(operator, c.Nodes[0].API), "c", aCert, aKey, 403},
		}
		for _, tc := range cases {
			if _, err := tc.cl.PutCert(ctx, tc.name, tc.cert, tc.key); !client.IsStatus(err, tc.code) {
				t.Errorf("PUT with %s: err = %v, want %d", tc.what, err, tc.code)
			}
		}
		if err := c.ClientWithToken(read, c.Nodes[0].API).DeleteCert(ctx, "a"); !client.IsStatus(err, 403) {
			t.Errorf("DELETE with a read token: err = %v, want 403", err)
		}
		after, err := c.Client().Certs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("the refused requests changed the certificates:\nbefore %+v\nafter  %+v", before, after)
		}
		for _, nd := range c.Nodes {
			if err := servesName(nd.Proxy, "a.example", roots); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.Client().DeleteCert(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		c.Eventually(30*time.Second, "no proxy serves b.example any more", func() error {
			for _, nd := range c.Nodes {
				_, _, err := sniGet(nd.Proxy, "b.example", roots)
				if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
					return fmt.Errorf("%s: b.example: %v", nd.Name, err)
				}
			}
			return nil
		})
		for _, nd := range c.Nodes {
			if err := servesName(nd.Proxy, "a.example", roots); err != nil {
				t.Error(err)
			}
		}
		if err := c.Client().DeleteCert(ctx, "b"); !client.IsStatus(err, 404) {
			t.Errorf("deleting b again: err = %v, want 404", err)
		}
	})

	t.Run("dir", func(t *testing.T) {
		dCert, dKey := serviceCert(t, ca, now, time.Hour, "d.example")
		// The key first, then the certificate: the pair is complete once
		// d.crt appears.
		if err := os.WriteFile(filepath.Join(dir, "d.key"), dKey, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "d.crt"), dCert, 0o644); err != nil {
			t.Fatal(err)
		}
		n1 := c.Node("n1")
		c.Eventually(10*time.Second, "n1 serves d.example from --proxy-tls-dir", func() error {
			return servesName(n1.Proxy, "d.example", roots)
		})
		if err := servesName(n1.Proxy, "a.example", roots); err != nil {
			t.Error(err)
		}
	})
}
