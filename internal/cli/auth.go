package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
)

// credentials are the client flags that say how to reach the API: over
// TLS with a CA and a bearer token, or plain with --insecure.
type credentials struct {
	token     string
	tokenFile string
	ca        string
	insecure  bool
	// caChanged records that --ca was given (else TANDEM_CA applies).
	caChanged bool
}

// addCredentialFlags registers --token, --token-file, --ca and --insecure.
func (cr *credentials) addFlags(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&cr.token, "token", "", "API token (env TANDEM_TOKEN); prefer --token-file, which keeps it out of the process list")
	pf.StringVar(&cr.tokenFile, "token-file", "", "file holding the API token (env TANDEM_TOKEN_FILE)")
	pf.StringVar(&cr.ca, "ca", "", "PEM file of the cluster CA, <data-dir>/tls/ca.crt on any node (env TANDEM_CA)")
	pf.BoolVar(&cr.insecure, "insecure", false, "plain HTTP without a token, for a cluster started with --insecure (env TANDEM_INSECURE=1)")
}

// options resolves the credentials: flags first, then the environment
// (getenv). It returns nil for --insecure (plain HTTP, no token). Every
// error is a usage error: nothing was sent.
func (cr *credentials) options(changed func(string) bool, getenv func(string) string) (*client.Options, error) {
	insecure := cr.insecure
	if !changed("insecure") {
		switch v := strings.ToLower(strings.TrimSpace(getenv("TANDEM_INSECURE"))); v {
		case "", "0", "false":
		case "1", "true":
			insecure = true
		default:
			return nil, usageError{fmt.Errorf("TANDEM_INSECURE=%q: want 1 or true (plain HTTP, no token), 0 or false", v)}
		}
	}
	if insecure {
		for _, f := range []string{"ca", "token", "token-file"} {
			if changed(f) {
				return nil, usageError{fmt.Errorf("--insecure talks plain HTTP without a token: --%s does not go with it (drop one)", f)}
			}
		}
		return nil, nil
	}

	caFile, caFrom := cr.ca, "--ca "+cr.ca
	cr.caChanged = changed("ca")
	if !changed("ca") {
		caFile, caFrom = getenv("TANDEM_CA"), "TANDEM_CA="+getenv("TANDEM_CA")
	}
	if caFile == "" {
		return nil, usageError{errors.New("the API is served over TLS: give --ca FILE (the cluster CA, <data-dir>/tls/ca.crt on any node) or set TANDEM_CA; for a cluster started with --insecure give --insecure")}
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", caFrom, err)}
	}
	cfg, err := client.TLSConfig(pem)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", caFrom, err)}
	}

	token, err := cr.resolveToken(changed, getenv)
	if err != nil {
		return nil, usageError{err}
	}
	return &client.Options{TLS: cfg, Token: token}, nil
}

// caPath is the CA file the client commands were given: --ca, else
// TANDEM_CA ("" when insecure or none).
func (cr *credentials) caPath() string {
	if cr.caChanged {
		return cr.ca
	}
	return os.Getenv("TANDEM_CA")
}

// resolveToken finds the token: --token or --token-file (not both), else
// TANDEM_TOKEN or TANDEM_TOKEN_FILE (not both).
func (cr *credentials) resolveToken(changed func(string) bool, getenv func(string) string) (string, error) {
	var token, file, from string
	switch {
	case changed("token") && changed("token-file"):
		return "", errors.New("--token and --token-file both give the token: give one")
	case changed("token"):
		token, from = cr.token, "--token"
	case changed("token-file"):
		file, from = cr.tokenFile, "--token-file "+cr.tokenFile
	case getenv("TANDEM_TOKEN") != "" && getenv("TANDEM_TOKEN_FILE") != "":
		return "", errors.New("TANDEM_TOKEN and TANDEM_TOKEN_FILE are both set: unset one (or give --token-file FILE, which wins over both)")
	case getenv("TANDEM_TOKEN") != "":
		token, from = getenv("TANDEM_TOKEN"), "TANDEM_TOKEN"
	case getenv("TANDEM_TOKEN_FILE") != "":
		file = getenv("TANDEM_TOKEN_FILE")
		from = "TANDEM_TOKEN_FILE=" + file
	default:
		return "", errors.New("no API token: give --token-file FILE or set TANDEM_TOKEN_FILE (or --token/TANDEM_TOKEN); " +
			"the cluster's first admin token is in <data-dir>/admin.token on the node that started it, " +
			"and an admin makes more with 'tandem token create'; for a cluster started with --insecure give --insecure")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", from, err)
		}
		token = string(b)
	}
	return checkToken(strings.TrimSpace(token), from)
}

// checkToken refuses what cannot be a token, before it is sent: nothing,
// or text with spaces or control characters (a PEM file given by mistake).
func checkToken(token, from string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%s: the token is empty", from)
	}
	if strings.HasPrefix(token, "-----BEGIN") {
		return "", fmt.Errorf("%s: this is a PEM file, not a token (the CA goes to --ca; tokens look like tdm1.ID.SECRET)", from)
	}
	if i := strings.IndexFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII }); i >= 0 {
		return "", fmt.Errorf("%s: not a token: it has a space or control character at byte %d (tokens look like tdm1.ID.SECRET, one line)", from, i)
	}
	return token, nil
}
