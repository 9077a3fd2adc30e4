package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/auth"
	"github.com/tandemhq/tandem/internal/carotate"
	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/pki"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// caTTL is the cluster CA's lifetime. `tandem ca rotate` replaces it long
// before.
const caTTL = carotate.CATTL

// AdminTokenFile is where a node that makes the cluster's first admin token
// writes it, in its data dir (mode 0600).
const AdminTokenFile = "admin.token"

func (a *Agent) tlsDir() pki.Dir { return pki.Dir(filepath.Join(a.cfg.DataDir, "tls")) }

// storeTLS is the node's certificate files for its store member.
func (a *Agent) storeTLS() *store.TLSFiles {
	if a.tls == nil {
		return nil
	}
	d := a.tlsDir()
	return &store.TLSFiles{CertFile: d.Path(pki.NodeFile), KeyFile: d.Path(pki.NodeFile), CAFile: d.Path(pki.CAFile)}
}

// certNames are the addresses a node certificate is valid for: the ones
// other nodes and clients reach this node at, and loopback.
func (a *Agent) certNames() ([]net.IP, []string) {
	var ips []net.IP
	seen := map[string]bool{}
	for _, s := range []string{a.cfg.Advertise, a.cfg.Bind, "127.0.0.1"} {
		ip := net.ParseIP(s)
		if ip == nil || ip.IsUnspecified() || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		ips = append(ips, ip)
	}
	return ips, []string{a.cfg.Name, "localhost"}
}

// uncovered lists the addresses and names the node needs that cert does
// not name.
func (a *Agent) uncovered(cert *x509.Certificate) []string {
	ips, names := a.certNames()
	var missing []string
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			missing = append(missing, ip.String())
		}
	}
	for _, n := range names {
		if !slices.Contains(cert.DNSNames, n) {
			missing = append(missing, n)
		}
	}
	return missing
}

// prepareTLS returns the node's certificate material, or nil on an
// insecure node. It loads it from the data dir, or makes it on a first
// start: a new cluster CA and certificate on a bootstrap node, a
// certificate signed by the cluster (through a join token) on a joiner.
func (a *Agent) prepareTLS(ctx context.Context, id *cluster.Identity) (*pki.Keeper, error) {
	dir := a.tlsDir()
	if a.cfg.Insecure {
		if dir.Exists() {
			return nil, fmt.Errorf("data dir %s holds a secure node (it has %s): start it without --insecure", a.cfg.DataDir, dir)
		}
		a.log.Warn("INSECURE: --insecure is set: the API takes requests from anyone, with no token, and the store's ports are plain; use it only for a throwaway cluster on loopback")
		return nil, nil
	}
	if dir.Exists() {
		m, err := dir.Load()
		if err != nil {
			return nil, fmt.Errorf("load the node's certificate: %w", err)
		}
		if missing := a.uncovered(m.Cert.Leaf); len(missing) > 0 {
			// The node now advertises or binds an address its certificate
			// does not name (--advertise changed): other nodes would refuse
			// it. Re-issue it at once.
			if m, err = a.reissue(m); err != nil {
				return nil, fmt.Errorf("the node certificate does not name %v, and a new one could not be made: %w", missing, err)
			}
			a.log.Info("re-issued the node certificate for the node's new addresses", "added", missing)
		}
		return pki.NewKeeper(m), nil
	}
	if id != nil {
		return nil, fmt.Errorf("data dir %s holds a node that runs with --insecure (it has no %s): start it with --insecure again; a cluster cannot mix secure and insecure nodes", a.cfg.DataDir, dir)
	}
	var m *pki.Material
	if len(a.cfg.Join) == 0 {
		ips, names := a.certNames()
		var err error
		m, err = pki.Bootstrap(a.cfg.Name, a.cfg.Name, ips, names, time.Now(), caTTL, a.cfg.CertTTL.D())
		if err != nil {
			return nil, fmt.Errorf("create the cluster CA: %w", err)
		}
		a.log.Info("created the cluster CA and this node's certificate", "dir", string(dir), "ca_pin", pki.Pin(m.CAs[0]))
	} else {
		var err error
		if m, err = a.requestCertificate(ctx); err != nil {
			return nil, err
		}
		a.log.Info("the cluster signed this node's certificate", "dir", string(dir))
	}
	if err := dir.Save(m); err != nil {
		return nil, fmt.Errorf("save the node's certificate: %w", err)
	}
	return pki.NewKeeper(m), nil
}

// externalStoreTLS is the TLS configuration for an external store: nil
// for http:// endpoints; for https://, its CA (--store-ca, else the
// system's roots) and client certificate (--store-cert/--store-key, read
// at each new connection).
func (a *Agent) externalStoreTLS(endpoints []string) (*tls.Config, error) {
	if len(endpoints) == 0 || !strings.HasPrefix(endpoints[0], "https://") {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.cfg.StoreCA != "" {
		pemData, err := os.ReadFile(a.cfg.StoreCA)
		if err != nil {
			return nil, fmt.Errorf("store-ca: %w", err)
		}
		certs, err := pki.ParseCerts(pemData)
		if err != nil {
			return nil, fmt.Errorf("store-ca %s: %w", a.cfg.StoreCA, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			cfg.RootCAs.AddCert(c)
		}
	}
	if a.cfg.StoreCert != "" {
		certFile, keyFile := a.cfg.StoreCert, a.cfg.StoreKey
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("store-cert and store-key: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("store-cert and store-key: %w", err)
			}
			return &c, nil
		}
	}
	return cfg, nil
}

// requestCertificate asks the --join nodes, with the join token of
// --token-file, to sign a certificate for a key made here (the key never
// leaves the node). The token's CA pin authenticates the cluster, so the
// token is never sent to an impostor.
func (a *Agent) requestCertificate(ctx context.Context) (*pki.Material, error) {
	if a.cfg.TokenFile == "" {
		return nil, errors.New("joining a secure cluster needs a join token: make one on any node with `tandem token create --role join > join.token` and give --token-file join.token (or start every node with --insecure for a throwaway cluster)")
	}
	raw, err := os.ReadFile(a.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read the join token: %w", err)
	}
	token, pin, err := auth.ParseJoin(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("join token in %s: %w", a.cfg.TokenFile, err)
	}
	tlsCfg, err := pki.JoinClientConfig("sha256:" + pin)
	if err != nil {
		return nil, fmt.Errorf("join token in %s: %w", a.cfg.TokenFile, err)
	}
	csr, keyPEM, err := a.newCSR()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	var resp wire.CertificateResponse
	err = retry(cctx, func() error {
		var err error
		resp, err = client.NewWithOptions(a.cfg.Join, client.Options{TLS: tlsCfg}).Certificate(cctx, token, wire.CertificateRequest{Name: a.cfg.Name, CSR: string(csr)})
		var ce *client.Error
		if (errors.As(err, &ce) && ce.Status < 500) || errors.Is(err, pki.ErrPinMismatch) {
			return backoff.Permanent(err) // refused, or not our cluster: that stays so
		}
		return err
	})
	var p *backoff.PermanentError
	if errors.As(err, &p) {
		return nil, fmt.Errorf("the cluster refused this node's certificate request: %w", p.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("ask %v to sign this node's certificate: %w", a.cfg.Join, err)
	}
	m, err := pki.Assemble([]byte(resp.CA), []byte(resp.Certificate), keyPEM, []byte(resp.CAKey))
	if err != nil {
		return nil, fmt.Errorf("the certificate the cluster sent: %w", err)
	}
	return m, nil
}

// ensureAdminToken makes an admin token and writes it to the data dir
// when the cluster has no token at all: on the bootstrap node's first
// start, or to recover a cluster whose every token was revoked or lost
// (restart a voter without --join). It never replaces a token.
func (a *Agent) ensureAdminToken(ctx context.Context, st *store.Store) error {
	path := filepath.Join(a.cfg.DataDir, AdminTokenFile)
	resp, err := st.Client().Get(ctx, keys.TokensPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count > 0 {
		return nil
	}
	token, rec, err := auth.New(auth.Admin, "bootstrap", "", 0, time.Now().UTC())
	if err != nil {
		return err
	}
	rec.CreatedBy = "node " + a.cfg.Name
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// Written first, so a token in the store always has its file.
	if err := pki.WriteFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the admin token: %w", err)
	}
	k := keys.TokenKey(rec.ID)
	if _, err := st.Client().Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(val))).Commit(); err != nil {
		return err
	}
	a.log.Info("wrote the cluster's first admin token; keep it safe, and make tokens with fewer rights for daily use (tandem token create)", "file", path)
	return nil
}

// tlsMetrics exports when the node certificate and the newest CA
// certificate expire, for alerts (a renewal that keeps failing shows as a
// node certificate close to its end). Empty on an insecure node.
func (a *Agent) tlsMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	if a.tls == nil {
		return reg
	}
	notAfter := func(kind string, cert func(*pki.Material) *x509.Certificate) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tandem_tls_certificate_not_after_seconds",
			Help:        "When a certificate of this node expires (Unix time): kind node is its own, kind ca the newest CA of its trust bundle.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(cert(a.tls.Load()).NotAfter.Unix()) }))
	}
	notAfter("node", func(m *pki.Material) *x509.Certificate { return m.Cert.Leaf })
	notAfter("ca", func(m *pki.Material) *x509.Certificate { return m.CAs[len(m.CAs)-1] })
	return reg
}

// renewCertificate renews the node's certificate at two thirds of its
// lifetime, with a new key, signed by the CA this node holds. The store
// member and the API pick the new one up at their next handshake: no
// restart.
func (a *Agent) renewCertificate(ctx context.Context) error {
	check := min(time.Minute, a.cfg.CertTTL.D()/20)
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		a.tlsMu.Lock()
		m := a.tls.Load()
		if time.Now().Before(pki.RenewAt(m.Cert.Leaf)) {
			a.tlsMu.Unlock()
			continue
		}
		next, err := a.reissue(m)
		if err == nil {
			a.tls.Store(next)
		}
		a.tlsMu.Unlock()
		if err != nil {
			a.log.Warn("renew the node certificate", "err", err, "expires", m.Cert.Leaf.NotAfter)
			continue
		}
		a.log.Info("renewed the node certificate", "expires", next.Cert.Leaf.NotAfter)
	}
}

// reissue signs a new certificate for this node, with a new key, by the
// CA of m, and saves it to the data dir.
func (a *Agent) reissue(m *pki.Material) (*pki.Material, error) {
	if m.CA == nil {
		return nil, errors.New("this node holds no CA key to sign with")
	}
	return a.issueWith(m.CAPEM, m.CA, m.CAKeyPEM)
}

// issueWith signs a new certificate for this node, with a new key, by ca
// (whose key is caKeyPEM), and saves it with the trust bundle caPEM.
func (a *Agent) issueWith(caPEM []byte, ca *pki.CA, caKeyPEM []byte) (*pki.Material, error) {
	csr, keyPEM, err := a.newCSR()
	if err != nil {
		return nil, err
	}
	cert, err := ca.Sign(csr, a.cfg.Name, time.Now(), a.cfg.CertTTL.D())
	if err != nil {
		return nil, err
	}
	next, err := pki.Assemble(caPEM, cert, keyPEM, caKeyPEM)
	if err != nil {
		return nil, err
	}
	return next, a.tlsDir().Save(next)
}

// newCSR makes a new key for this node and a request for a certificate
// naming its addresses; the key never leaves the node.
func (a *Agent) newCSR() (csrPEM, keyPEM []byte, err error) {
	ips, names := a.certNames()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csrPEM, err = pki.NewCSR(key, a.cfg.Name, ips, names)
	return csrPEM, keyPEM, err
}
