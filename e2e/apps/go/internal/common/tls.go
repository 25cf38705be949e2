package common

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
)

// TLS holds the flags that make a test target speak TLS: -tls-cert and
// -tls-key make a server serve it, -tls-ca makes a client trust that CA
// (the tests make both with a fresh CA).
type TLS struct {
	cert, key, ca *string
}

// TLSFlags registers the TLS flags; call before flag.Parse.
func TLSFlags() TLS {
	return TLS{
		cert: flag.String("tls-cert", "", "serve TLS with this certificate (PEM)"),
		key:  flag.String("tls-key", "", "key of -tls-cert (PEM)"),
		ca:   flag.String("tls-ca", "", "trust this CA (PEM) as a client"),
	}
}

// Serving reports whether -tls-cert and -tls-key were given.
func (t TLS) Serving() bool { return *t.cert != "" && *t.key != "" }

// CertFile and KeyFile are the server's files.
func (t TLS) CertFile() string { return *t.cert }
func (t TLS) KeyFile() string  { return *t.key }

// ServerConfig is the server's TLS configuration, or nil without -tls-cert.
func (t TLS) ServerConfig() *tls.Config {
	if !t.Serving() {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(*t.cert, *t.key)
	if err != nil {
		fmt.Fprintf(os.Stderr, "load -tls-cert/-tls-key: %v\n", err)
		os.Exit(1)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// ClientConfig trusts -tls-ca only, or is nil without it.
func (t TLS) ClientConfig() *tls.Config {
	if *t.ca == "" {
		return nil
	}
	pem, err := os.ReadFile(*t.ca)
	if err != nil {
		fmt.Fprintf(os.Stderr, "read -tls-ca: %v\n", err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintf(os.Stderr, "-tls-ca %s holds no certificate\n", *t.ca)
		os.Exit(1)
	}
	return &tls.Config{RootCAs: pool}
}

// HTTPClient is a client trusting -tls-ca (HTTP/2 over TLS when h2 is
// set), or the default client.
func (t TLS) HTTPClient(h2 bool) *http.Client {
	config := t.ClientConfig()
	if config == nil {
		return &http.Client{}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = config
	transport.ForceAttemptHTTP2 = h2
	return &http.Client{Transport: transport}
}
