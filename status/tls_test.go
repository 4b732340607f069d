package status

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	golog "log"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/testkit"
)

// listenerTLS is a certificate for a listener on 127.0.0.1 that ca signed, as a status line's
// `tls CERT KEY` reads it, with the serial number that tells it from another.
func listenerTLS(t *testing.T, ca *testkit.CA, name string) (*TLS, *big.Int) {
	t.Helper()
	certFile, keyFile := ca.Issue(t, name, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "127.0.0.1")
	pair, err := LoadTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair, pair.Certificate().Leaf.SerialNumber
}

// fetch GETs url with the token and returns the status, the body and the connection's TLS.
func fetch(t *testing.T, client *http.Client, url string) (int, string, *tls.ConnectionState) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.TLS
}

// TestListenerTLS: a view with a certificate is served over TLS 1.2 or later only, with the
// token, to a client that trusts its CA; a plain HTTP request gets no page; a reload's view
// with a renewed certificate is served it on the same port; a reload that drops tls serves in
// the clear, and one that adds it back refuses the clear connection kept alive from before.
func TestListenerTLS(t *testing.T) {
	ca := testkit.NewCA(t, "status-ca")
	_, v := fakeView()
	first, firstSerial := listenerTLS(t, ca, "first")
	v.TLS = first
	ls, addr := acquired(t, v)
	https, plain := "https://"+addr.String()+"/status.json", "http://"+addr.String()+"/status.json"
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	code, body, state := fetch(t, client, https)
	if code != http.StatusOK || !strings.Contains(body, `"zone": "app.lan."`) {
		t.Fatalf("GET over https: %d %s", code, body)
	}
	if state == nil || state.Version < tls.VersionTLS12 || state.PeerCertificates[0].SerialNumber.Cmp(firstSerial) != 0 {
		t.Fatalf("GET over https: connection %+v, want TLS 1.2 or later with the view's certificate", state)
	}

	old := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", addr.String(), old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 client completed its handshake, want TLS 1.2 at least")
	}

	plainClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	defer plainClient.CloseIdleConnections()
	if code, body, _ := fetch(t, plainClient, plain); code == http.StatusOK || strings.Contains(body, "app.lan.") {
		t.Fatalf("GET over plain HTTP from a TLS listener: %d %s, want no page", code, body)
	}

	// A reload: the new instance's view registers, then the old one's is released.
	_, renewed := fakeView()
	second, secondSerial := listenerTLS(t, ca, "second")
	renewed.Addr, renewed.TLS = v.Addr, second
	if err := ls.Acquire(renewed); err != nil {
		t.Fatal(err)
	}
	ls.Release(v)
	client.CloseIdleConnections() // a kept-alive connection keeps the certificate it was served with
	if code, _, state := fetch(t, client, https); code != http.StatusOK || state.PeerCertificates[0].SerialNumber.Cmp(secondSerial) != 0 {
		t.Fatalf("after the reload: %d, serial %v, want the renewed certificate's %v", code, state.PeerCertificates[0].SerialNumber, secondSerial)
	}

	_, clear := fakeView()
	clear.Addr = v.Addr
	if err := ls.Acquire(clear); err != nil {
		t.Fatal(err)
	}
	ls.Release(renewed)
	if code, body, _ := fetch(t, plainClient, plain); code != http.StatusOK {
		t.Fatalf("after a reload that dropped tls: GET over plain HTTP: %d %s", code, body)
	}

	_, again := fakeView()
	again.Addr, again.TLS = v.Addr, first
	if err := ls.Acquire(again); err != nil {
		t.Fatal(err)
	}
	ls.Release(clear)
	if code, body, _ := fetch(t, plainClient, plain); code != http.StatusBadRequest || !strings.Contains(body, "serves HTTPS") {
		t.Errorf("after a reload that added tls: GET on the clear connection kept alive: %d %s, want 400 saying it serves HTTPS", code, body)
	}
	if code, _, state := fetch(t, client, https); code != http.StatusOK || state == nil {
		t.Errorf("after a reload that added tls back: GET over https: %d", code)
	}
	ls.Release(again)
}

// TestListenerTLSFilesChanged: a certificate renewed in place (both files rewritten) is served
// from the next connection on, without a reload, and logged; files that change into something
// that does not load are logged, and the certificate loaded before keeps serving.
func TestListenerTLSFilesChanged(t *testing.T) {
	lines := testkit.LogLines(t)
	ca := testkit.NewCA(t, "status-ca")
	_, v := fakeView()
	first, firstSerial := listenerTLS(t, ca, "first")
	v.TLS = first
	_, addr := acquired(t, v)
	https := "https://" + addr.String() + "/status.json"
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	serial := func() *big.Int {
		t.Helper()
		code, body, state := fetch(t, client, https)
		if code != http.StatusOK {
			t.Fatalf("GET over https: %d %s", code, body)
		}
		return state.PeerCertificates[0].SerialNumber
	}
	if got := serial(); got.Cmp(firstSerial) != 0 {
		t.Fatalf("serial %v, want %v", got, firstSerial)
	}

	// Rewritten in place, with a later time: a renewal within the same second and of the same
	// size must still be seen, so the time is set rather than left to the clock's resolution.
	renewed, renewedSerial := listenerTLS(t, ca, "renewed")
	later := time.Now().Add(time.Minute)
	overwrite := func(dst, src string, at time.Time) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dst, at, at); err != nil {
			t.Fatal(err)
		}
	}
	overwrite(first.KeyFile, renewed.KeyFile, later)
	overwrite(first.CertFile, renewed.CertFile, later)
	if got := serial(); got.Cmp(renewedSerial) != 0 {
		t.Errorf("after the files were rewritten: serial %v, want the renewed one's %v", got, renewedSerial)
	}
	if want := "[INFO] plugin/healthdns: status tls: " + first.CertFile + " changed; serving it from now on"; !strings.Contains(strings.Join(lines(), "\n"), want) {
		t.Errorf("log %q, want a line %q", lines(), want)
	}

	// A key of another certificate: not a pair.
	other, _ := listenerTLS(t, ca, "other")
	overwrite(first.KeyFile, other.KeyFile, later.Add(time.Minute))
	if got := serial(); got.Cmp(renewedSerial) != 0 {
		t.Errorf("after the key changed to another certificate's: serial %v, want the one loaded before, %v", got, renewedSerial)
	}
	if want := "[ERROR] plugin/healthdns: status tls: " + first.CertFile + " and " + first.KeyFile + " changed and do not load: tls: private key does not match public key; serving the certificate loaded before"; !strings.Contains(strings.Join(lines(), "\n"), want) {
		t.Errorf("log %q, want a line %q", lines(), want)
	}
	serial()
	if n := strings.Count(strings.Join(lines(), "\n"), "do not load"); n != 1 {
		t.Errorf("the pair that does not load logged %d times over two connections, want once until the files change again", n)
	}
}

// TestServerLogQuietOnHandshakes: http.Server's lines reach the plugin's log, but for failed
// TLS handshakes, which any client can cause at will.
func TestServerLogQuietOnHandshakes(t *testing.T) {
	lines := testkit.LogLines(t)
	l := golog.New(serverLog{addr: "10.0.0.53:8053"}, "", 0)
	l.Printf("http: TLS handshake error from 192.0.2.66:40000: tls: client offered only unsupported versions: [302 301]")
	l.Printf("http: Accept error: accept tcp 10.0.0.53:8053: accept4: too many open files; retrying in 5ms")
	want := []string{"[WARNING] plugin/healthdns: status listener 10.0.0.53:8053: http: Accept error: accept tcp 10.0.0.53:8053: accept4: too many open files; retrying in 5ms"}
	if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log %q, want %q", got, want)
	}
}
