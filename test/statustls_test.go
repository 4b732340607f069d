package test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/testkit"
)

// TestStatusTLS runs the status listener with `tls CERT KEY` in the real binary: a client that
// trusts the test's CA reads /status.json and drains a backend with the token over HTTPS; plain
// HTTP on the port gets no page; the page in headless Chromium shows the drain, over HTTPS; the
// loopback Host check holds over TLS; a reload with a renewed certificate serves it on the same
// port, and a reload naming a missing certificate fails at its line and leaves the running one
// served.
func TestStatusTLS(t *testing.T) {
	t.Parallel()
	const drained, live = "127.0.9.1", "127.0.9.2"
	port, _ := harness.StartBackends(t, drained, live)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "tls-s3cret-0123456789"
	tokenFile := writeTokenFile(t, token)
	ca := testkit.NewCA(t, "status-ca")
	var leaf *x509.Certificate
	issue := func(name string) (certFile, keyFile string, serial *big.Int) {
		certFile, keyFile = ca.Issue(t, name, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "127.0.0.1")
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		leaf = pair.Leaf
		return certFile, keyFile, pair.Leaf.SerialNumber
	}
	cert, key, serial := issue("status")
	conf := func(cert, key string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n" +
			harness.TCPPool("tls.lan", port, "200ms", "100ms", []string{drained, live}, "answers 2",
				"status "+statusAddr+" token "+tokenFile+" tls "+cert+" "+key) + "}\n"
	}
	s := harness.Start(t, conf(cert, key))
	serves := func(ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", "tls.lan.", dns.TypeA), ips...) }
	}
	harness.Eventually(t, 5*time.Second, serves(drained, live), "both backends of tls.lan answered")
	if line := "status page on https://" + statusAddr + "/"; !strings.Contains(s.Output(), line) {
		t.Errorf("no log line %q", line)
	}

	// A new connection each time: which certificate a connection was served is fixed at its
	// handshake.
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	api := &apiClient{base: "https://" + statusAddr, token: token, http: trusting}
	served := func() (*big.Int, uint16) {
		t.Helper()
		req, _ := http.NewRequest("GET", api.base+"/status.json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := trusting.Do(req)
		if err != nil {
			t.Fatalf("GET /status.json over https: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"zone": "tls.lan."`) {
			t.Fatalf("GET /status.json over https: %d %s", resp.StatusCode, body)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber, resp.TLS.Version
	}
	if got, version := served(); got.Cmp(serial) != 0 || version < tls.VersionTLS12 {
		t.Errorf("served certificate %v over TLS version %#x, want %v over 1.2 or later", got, version, serial)
	}

	code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"tls.lan.","backend":"`+drained+`","reason":"over https"}`)
	if code != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("drain over https: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, serves(live), "the drained backend to leave the answers")

	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + statusAddr + "/status.json"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "tls.lan") {
			t.Errorf("plain HTTP to the TLS port: %d %s, want no page", resp.StatusCode, b)
		}
	}
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + statusAddr + "/status.json"); err == nil {
		t.Error("a client that does not trust the CA was served")
	}

	pageOverTLS(t, "https://"+statusAddr+"/#token="+token, leaf, drained)

	rebinding, _ := http.NewRequest("GET", api.base+"/status.json", nil)
	rebinding.Host = "evil.example"
	rebinding.Header.Set("Authorization", "Bearer "+token)
	if resp, err := trusting.Do(rebinding); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("over https with Host evil.example: %v %v, want 421", resp, err)
	} else {
		resp.Body.Close()
	}

	renewedCert, renewedKey, renewed := issue("status-renewed")
	if err := s.Reload(t, conf(renewedCert, renewedKey)); err != nil {
		t.Fatal(err)
	}
	if got, _ := served(); got.Cmp(renewed) != 0 {
		t.Errorf("after the reload: certificate %v served, want the renewed one's %v", got, renewed)
	}
	if st, by := api.drainedBy(t, "tls.lan.", drained); st != "drained" || by != "api" {
		t.Errorf("after the reload: %s drained_by %q, want drained by api", st, by)
	}

	missing := filepath.Join(t.TempDir(), "gone.pem")
	err := s.Reload(t, conf(missing, renewedKey))
	if err == nil || !strings.Contains(err.Error(), "Corefile:10") || !strings.Contains(err.Error(), "open "+missing) {
		t.Errorf("a reload naming a missing certificate: %v, want an error at Corefile:10 naming %s", err, missing)
	}
	if got, _ := served(); got.Cmp(renewed) != 0 {
		t.Errorf("after the failed reload: certificate %v served, want the running one's %v", got, renewed)
	}
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}

// pageOverTLS loads the page at url in headless Chromium, told to trust the key of leaf alone
// (its profile has no CA of ours), until it shows backend drained as drained: the page fetched
// its document over HTTPS with the token from its fragment. Without Chromium it says that the
// page is not checked, and returns.
func pageOverTLS(t *testing.T, url string, leaf *x509.Certificate, drained string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Log("no chromium on $PATH: the page over HTTPS is not checked")
		return
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	trust := "--ignore-certificate-errors-spki-list=" + base64.StdEncoding.EncodeToString(spki[:])
	var dom string
	if !harness.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		dom, err = chromium(t, bin, trust, "--virtual-time-budget=3000", "--dump-dom", url)
		return err == nil && strings.Contains(rowOf(dom, drained), `data-state="drained"`)
	}) {
		t.Errorf("the page over HTTPS did not show %s drained within 60s (chromium: %v); its DOM:\n%s", drained, err, dom)
	}
}

// writeTokenFile writes token to a file only its owner may read, as a status line's token
// FILE must be, and returns its path.
func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
