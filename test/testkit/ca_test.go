package testkit

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
)

// TestChains checks that what the CA signs verifies against its pool, for the names, addresses
// and uses it was signed for and for no other, and not against another CA's.
func TestChains(t *testing.T) {
	ca, other := NewCA(t, "ca"), NewCA(t, "other")
	server := ca.Server(t, []string{"app.lan"}, "127.0.0.1")
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	serverUse := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, tc := range []struct {
		name  string
		opts  x509.VerifyOptions
		valid bool
	}{
		{"by name", x509.VerifyOptions{Roots: ca.Pool(), DNSName: "app.lan", KeyUsages: serverUse}, true},
		{"by address", x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1", KeyUsages: serverUse}, true},
		{"another name", x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.lan", KeyUsages: serverUse}, false},
		{"as a client", x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"another CA", x509.VerifyOptions{Roots: other.Pool(), DNSName: "app.lan", KeyUsages: serverUse}, false},
	} {
		if _, err := leaf.Verify(tc.opts); (err == nil) != tc.valid {
			t.Errorf("%s: verify error %v, want valid %v", tc.name, err, tc.valid)
		}
	}

	certFile, keyFile := ca.Issue(t, "client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	cfg := ca.ClientTLS(t, certFile, keyFile)
	client, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the issued client certificate does not verify against the CA: %v", err)
	}
	if client.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two certificates of one CA share serial %v", leaf.SerialNumber)
	}

	file, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != string(ca.PEM()) {
		t.Errorf("File holds\n%s\nPEM is\n%s", file, ca.PEM())
	}
	if block, _ := pem.Decode(ca.PEM()); block == nil || block.Type != "CERTIFICATE" || !x509.NewCertPool().AppendCertsFromPEM(ca.PEM()) {
		t.Errorf("PEM is not a certificate: %q", ca.PEM())
	}
}
