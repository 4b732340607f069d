package healthdns

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/test/testkit"
)

// testToken is a token as long as the Corefile wants one.
const testToken = "s3cret-s3cret-s3cret"

func writeToken(t *testing.T, text string) string {
	t.Helper()
	return writeTokenMode(t, text, 0o600)
}

func writeTokenMode(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return file
}

func TestParseStatus(t *testing.T) {
	token := writeToken(t, testToken+"\nignored\n")
	readOnly := writeTokenMode(t, testToken, 0o400)
	for _, tc := range []struct {
		line      string
		addr, tok string
	}{
		{"status", "127.0.0.1:8053", ""},
		{"status 127.0.0.2:9000", "127.0.0.2:9000", ""},
		{"status [::1]:9000", "[::1]:9000", ""},
		{"status localhost:9000", "localhost:9000", ""},
		{"status token " + token, "127.0.0.1:8053", testToken},
		{"status 0.0.0.0:8053 token " + token, "0.0.0.0:8053", testToken},
		{"status :8053 token " + token, ":8053", testToken},
		{"status :8053 token " + readOnly, ":8053", testToken},
	} {
		cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
		if err != nil {
			t.Errorf("%s: %v", tc.line, err)
			continue
		}
		if st := cfgs[0].status; st.Addr != tc.addr || st.Token != tc.tok || st.Line != 3 {
			t.Errorf("%s: %+v, want address %s, token %q, line 3", tc.line, st, tc.addr, tc.tok)
		}
	}
	cfgs, _ := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n}"))
	if cfgs[0].status.Addr != "" {
		t.Errorf("status without the directive: %+v; want off", cfgs[0].status)
	}
}

func TestParseStatusErrors(t *testing.T) {
	empty := writeToken(t, "\n")
	token := writeToken(t, testToken)
	short := writeToken(t, "s3cret\n")
	worldReadable := writeTokenMode(t, testToken, 0o644)
	groupReadable := writeTokenMode(t, testToken, 0o640)
	worldWritable := writeTokenMode(t, testToken, 0o602)
	missing := filepath.Join(t.TempDir(), "nothing")
	for _, tc := range []struct{ name, line, want string }{
		{"no port", "status 127.0.0.1", "invalid status address '127.0.0.1': want HOST:PORT"},
		{"bad port", "status 127.0.0.1:http", "port 'http' is not a number"},
		{"port 0", "status 127.0.0.1:0", "port '0' is not a number from 1 to 65535"},
		{"host name", "status status.lan:8053", "host 'status.lan' is not an IP address or localhost"},
		{"non-loopback without token", "status 0.0.0.0:8053", "status on 0.0.0.0:8053 is reachable from other hosts"},
		{"every address without token", "status :8053", "want 'status :8053 token FILE'"},
		{"a LAN address without token", "status 10.0.0.53:8053", "reachable from other hosts"},
		{"unreadable token", "status token " + missing, "status token: open " + missing},
		{"empty token", "status token " + empty, "the first line is empty"},
		{"short token", "status token " + short, short + ": the token is 6 bytes long: want at least 16"},
		{"world-readable token", "status 0.0.0.0:8053 token " + worldReadable, worldReadable + ": mode 0644 lets other users than its owner read or write the token: want 'chmod 600 " + worldReadable + "'"},
		{"group-readable token", "status token " + groupReadable, "mode 0640 lets other users"},
		{"world-writable token", "status token " + worldWritable, "mode 0602 lets other users"},
		{"token without file", "status 127.0.0.1:8053 token", "'token' wants one FILE"},
		{"unknown option", "status 127.0.0.1:8053 user admin", "unknown status option 'user'"},
		{"twice", "status\n status 127.0.0.1:9000 token " + token, "duplicate 'status' (first on line 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:") {
				t.Errorf("error %q, want one at its line containing %q", err, tc.want)
			}
		})
	}
}

// statusCert writes a certificate and key for a listener on 127.0.0.1, and returns their files.
func statusCert(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	return testkit.NewCA(t, name+"-ca").Issue(t, name, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "127.0.0.1")
}

// TestParseStatusTLS: `tls CERT KEY` reads the pair at its line, before or after the token; a
// missing file, a file that is not a certificate and a key of another certificate each fail at
// the line, naming the files; a listener other hosts reach with a token and no tls starts,
// with a warning that its token travels in cleartext.
func TestParseStatusTLS(t *testing.T) {
	token := writeToken(t, testToken)
	cert, key := statusCert(t, "status")
	_, otherKey := statusCert(t, "other")
	for _, line := range []string{
		"status 127.0.0.1:8053 tls " + cert + " " + key,
		"status 0.0.0.0:8053 token " + token + " tls " + cert + " " + key,
		"status tls " + cert + " " + key + " token " + token,
	} {
		cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+line+"\n}"))
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		st := cfgs[0].status
		if st.TLS == nil || st.TLS.CertFile != cert || st.TLS.KeyFile != key || st.TLS.Certificate().Leaf.Subject.CommonName != "status" {
			t.Errorf("%s: tls %+v, want the pair of %s and %s", line, st.TLS, cert, key)
		}
		if strings.Contains(line, "token") && st.Token != testToken {
			t.Errorf("%s: token %q", line, st.Token)
		}
	}

	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct{ name, line, want string }{
		{"missing cert", "status tls " + missing + " " + key, "status tls: " + missing + " and " + key + ": open " + missing + ": no such file"},
		{"missing key", "status tls " + cert + " " + missing, "open " + missing + ": no such file"},
		{"not a certificate", "status tls " + token + " " + key, "failed to find any PEM data in certificate input"},
		{"not a pair", "status tls " + cert + " " + otherKey, cert + " and " + otherKey + ": tls: private key does not match public key"},
		{"tls without files", "status tls " + cert, "'tls' wants a CERT and a KEY file"},
		{"tls twice", "status tls " + cert + " " + key + " tls " + cert + " " + key, "'tls' given twice"},
		{"token twice", "status token " + token + " token " + token, "'token' given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:3 - ") {
				t.Errorf("error %v, want one at Testfile:3 containing %q", err, tc.want)
			}
		})
	}

	logged := captureLog(t)
	for _, line := range []string{
		"status 127.0.0.1:8053 token " + token,
		"status 0.0.0.0:8053 token " + token + " tls " + cert + " " + key,
	} {
		if _, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+line+"\n}")); err != nil {
			t.Fatal(err)
		}
	}
	if logged.Len() != 0 {
		t.Errorf("a warning for a loopback listener or one with tls:\n%s", logged)
	}
	if _, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n status 0.0.0.0:8053 token "+token+"\n}")); err != nil {
		t.Fatal(err)
	}
	if want := "Testfile:3: status on 0.0.0.0:8053 is reachable from other hosts over plain HTTP: its bearer token travels in cleartext"; !strings.Contains(logged.String(), want) {
		t.Errorf("log %q, want a warning containing %q", logged, want)
	}
}

// Two pools of one instance share a listener, and so its token.
func TestStatusTokensMustAgree(t *testing.T) {
	token := writeToken(t, testToken)
	in := fmt.Sprintf("healthdns a.lan {\n backend 10.0.0.1\n check tcp 80\n status 127.0.0.1:8053 token %s\n}\nhealthdns b.lan {\n backend 10.0.0.2\n check tcp 80\n status\n}", token)
	err := setupWith(caddy.NewTestController("dns", in), func() (bool, error) { return true, nil })
	if err == nil || !strings.Contains(err.Error(), "status 127.0.0.1:8053: token differs from the one of Testfile:4") {
		t.Fatalf("error %v, want the token conflict", err)
	}
}

// Two pools of one instance share a listener, and so its certificate.
func TestStatusTLSMustAgree(t *testing.T) {
	token := writeToken(t, testToken)
	cert, key := statusCert(t, "status")
	in := fmt.Sprintf("healthdns a.lan {\n backend 10.0.0.1\n check tcp 80\n status 127.0.0.1:8053 token %s tls %s %s\n}\nhealthdns b.lan {\n backend 10.0.0.2\n check tcp 80\n status 127.0.0.1:8053 token %s\n}", token, cert, key, token)
	err := setupWith(caddy.NewTestController("dns", in), func() (bool, error) { return true, nil })
	if want := "status 127.0.0.1:8053: tls none differs from tls " + cert + " " + key + " of Testfile:4"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
}

// The checker's last tick is exported per running loop, at scrape time, and goes with the loop.
func TestCheckerLastTickMetric(t *testing.T) {
	reg := health.NewRegistry(observer{}, health.WithProbe(func(context.Context, netip.Addr) error { return nil }))
	c := checkerCollector{reg}
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d series before any loop runs", n)
	}
	l := reg.Acquire(health.Target{Addr: netip.MustParseAddr("192.0.2.7"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 80}, Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}}, "tick.lan.")
	<-l.Checked()
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	ch := make(chan prometheus.Metric, 4)
	c.Collect(ch)
	close(ch)
	var got []string
	for m := range ch {
		var d dto.Metric
		m.Write(&d)
		ts := time.Unix(0, int64(d.GetGauge().GetValue()*1e9))
		if age := time.Since(ts); age < -time.Second || age > time.Minute {
			t.Errorf("last tick %v, %v ago", ts, age)
		}
		got = append(got, d.GetLabel()[0].GetName()+"="+d.GetLabel()[0].GetValue())
	}
	if strings.Join(got, ",") != "wire=blocking" {
		t.Errorf("series %v, want one of the blocking wire", got)
	}
	l.Release()
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d series after the loop stopped", n)
	}
}

// get fetches url with c and says whether the connection was one used before.
func get(t *testing.T, c *http.Client, url string) (code int, body string, reused bool, err error) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), reused, nil
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The listener outlives a reload: the new instance registers before the old one lets go, so a
// client's kept-alive connection carries on, and it serves the new configuration. A reload that
// fails gives back the listener it opened; shutdown closes them all.
func TestStatusListenerAcrossReloads(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	port := listenTCP(t, 0, "127.0.0.1")
	dnsPort := freeUDPPort(t)
	statusPort := freeTCPPort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(statusPort) + "/status.json"
	pool := func(zone, status string) string {
		return fmt.Sprintf("healthdns %s {\n backend 127.0.0.1\n check tcp %d\n interval 100ms\n timeout 50ms\n %s\n }", zone, port, status)
	}
	status := "status 127.0.0.1:" + strconv.Itoa(statusPort)

	inst, err := caddy.Start(corefile(dnsPort, pool("app.lan", status)))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	code, body, _, err := get(t, client, url)
	if err != nil || code != 200 || !strings.Contains(body, `"zone": "app.lan."`) {
		t.Fatalf("before the reload: %d %v %s", code, err, body)
	}

	inst, err = inst.Restart(corefile(dnsPort, pool("www.lan", status)))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	code, body, reused, err := get(t, client, url)
	if err != nil || code != 200 || !strings.Contains(body, `"zone": "www.lan."`) || strings.Contains(body, "app.lan.") {
		t.Fatalf("after the reload: %d %v %s; want the new instance's pool alone", code, err, body)
	}
	if !reused {
		t.Error("the reload closed the status listener's connection: the listener was opened again")
	}

	// A reload that opens a second listener and then fails (a busy DNS port) closes it again.
	other := freeTCPPort(t)
	busy := listenTCP(t, 0, "127.0.0.1")
	bad := corefile(dnsPort, pool("www.lan", status)+"\n"+pool("other.lan", "status 127.0.0.1:"+strconv.Itoa(other))).(caddy.CaddyfileInput)
	bad.Contents = append(bad.Contents, fmt.Sprintf("tcp://.:%d {\n bind 127.0.0.1\n whoami\n}\n", busy)...)
	if _, err := inst.Restart(bad); err == nil {
		t.Fatal("reload onto a busy port succeeded")
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(other)); err != nil {
		t.Errorf("the failed reload kept its status listener: %v", err)
	} else {
		ln.Close()
	}
	if code, body, _, err := get(t, client, url); err != nil || code != 200 || !strings.Contains(body, "www.lan.") {
		t.Errorf("after the failed reload: %d %v %s; want the running instance's page", code, err, body)
	}

	if errs := inst.ShutdownCallbacks(); len(errs) != 0 {
		t.Fatal(errs)
	}
	inst.Stop()
	inst.Wait()
	client.CloseIdleConnections()
	if _, _, _, err := get(t, client, url); err == nil {
		t.Error("the status listener answers after shutdown")
	}
}
