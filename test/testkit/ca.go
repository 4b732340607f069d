// Package testkit is what tests of several packages share, instead of a copy in each: a
// certificate authority a test makes for itself (the https checks' tests sign their backends'
// certificates with it, the etcd tests their clients' and server's), the capture of what the
// plugin logs, and a probe whose dead addresses a test switches.
//
// It imports only the standard library, so that any package's tests can use it (the plugin's,
// pool's, status's, health's, and the end-to-end tests through harness) without taking in the
// harness's etcd client and its goroutines.
package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority, valid for an hour either side of the moment it was made. Its
// certificate is in File (PEM), as a tls_ca line or etcd's --trusted-ca-file reads it, and it
// writes the certificates it issues to files next to it.
type CA struct {
	File string

	name   string
	dir    string
	cert   *x509.Certificate
	der    []byte
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// New makes a CA named name in a temporary directory of the test.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("CA %s: %v", name, err)
	}
	ca := &CA{name: name, dir: t.TempDir(), cert: cert, der: der, key: key}
	ca.serial.Store(1)
	ca.File = filepath.Join(ca.dir, name+".pem")
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// PEM is the CA's certificate in PEM, the contents of File.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// Pool is a pool that trusts this CA alone, for a client's RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// Server signs a server certificate for the DNS names and IP addresses given, for a test's
// listener to present.
func (ca *CA) Server(t testing.TB, names []string, ips ...string) tls.Certificate {
	t.Helper()
	der, key := ca.sign(t, "server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, names, ips)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Issue signs a certificate named name for the uses given (server, client, or both) and the
// IP addresses given, and writes it and its key to NAME.pem and NAME-key.pem, for a process
// that reads them from files.
func (ca *CA) Issue(t testing.TB, name string, uses []x509.ExtKeyUsage, ips ...string) (certFile, keyFile string) {
	t.Helper()
	der, key := ca.sign(t, name, uses, nil, ips)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// ClientTLS is the configuration of a client that presents the certificate in certFile and
// keyFile and trusts the servers that ca signed.
func (ca *CA) ClientTLS(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool()}
}

func (ca *CA) sign(t testing.TB, name string, uses []x509.ExtKeyUsage, names, ips []string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: uses, DNSNames: names}
	for _, ip := range ips {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			t.Fatalf("CA %s issuing %s: %q is not an IP address", ca.name, name, ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("CA %s issuing %s: %v", ca.name, name, err)
	}
	return der, key
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writePEM(t testing.TB, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
