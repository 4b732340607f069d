package wire

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/testnet"
	"github.com/healthdns/healthdns/test/testkit"
)

// serveHTTP serves handler on 127.0.0.1, over TLS with cert when one is given, and returns the
// port.
func serveHTTP(t *testing.T, handler http.HandlerFunc, cert *tls.Certificate) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0)}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestHTTP(t *testing.T) {
	var lastHost, lastPath string
	port := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		lastHost, lastPath = r.Host, r.URL.Path
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("status: ok\n"))
		case "/bare":
			w.Write([]byte("ok\n"))
		case "/notok":
			w.Write([]byte("not ok"))
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/slow":
			select { // past the probe's timeout, but not past the test
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		case "/big":
			w.Write([]byte(strings.Repeat("x", MaxBodyRead) + "ok"))
		}
	}, nil)
	addr := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name string
		spec HTTPSpec
		want string // the error's text, "" to pass
	}{
		{"200 passes", HTTPSpec{Path: "/ok"}, ""},
		{"503 fails", HTTPSpec{Path: "/down"}, "http :PORT/down: status 503"},
		{"503 expected", HTTPSpec{Path: "/down", Expect: StatusCodes{{503, 503}}}, ""},
		{"redirect not followed, in 200-399", HTTPSpec{Path: "/moved"}, ""},
		{"redirect not followed, outside 200", HTTPSpec{Path: "/moved", Expect: StatusCodes{{200, 200}}}, "http :PORT/moved: status 302"},
		{"body holds the text", HTTPSpec{Path: "/ok", Body: "ok"}, ""},
		{"body lacks the text", HTTPSpec{Path: "/ok", Body: "healthy"}, `http :PORT/ok: body: no "healthy" in its first 11 bytes`},
		{"text past the first 64 KiB", HTTPSpec{Path: "/big", Body: "ok"}, `http :PORT/big: body: no "ok" in its first 65536 bytes`},
		// body is a substring match: "not ok" holds "ok". body_exact is not fooled.
		{"body finds ok in not ok", HTTPSpec{Path: "/notok", Body: "ok"}, ""},
		{"body_exact is the body", HTTPSpec{Path: "/bare", Body: "ok", BodyExact: true}, ""},
		{"body_exact: not ok is not ok", HTTPSpec{Path: "/notok", Body: "ok", BodyExact: true}, `http :PORT/notok: body: "not ok", want exactly "ok"`},
		{"body_exact: more than the text", HTTPSpec{Path: "/ok", Body: "ok", BodyExact: true}, `http :PORT/ok: body: "status: ok", want exactly "ok"`},
		{"body_exact: a long body is cut", HTTPSpec{Path: "/big", Body: "ok", BodyExact: true}, `http :PORT/big: body: "` + strings.Repeat("x", 64) + `"... (65536 bytes read), want exactly "ok"`},
		{"host header", HTTPSpec{Path: "/ok", Host: "app.lan"}, ""}, // last: checked below
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Port = port
			err := probeWithin(HTTP(tc.spec), addr, answered)
			want := strings.ReplaceAll(tc.want, "PORT", itoa(port))
			if (err == nil) != (want == "") || (err != nil && err.Error() != want) {
				t.Errorf("error %v, want %q", err, want)
			}
		})
	}
	if lastHost != "app.lan:"+itoa(port) || lastPath != "/ok" {
		t.Errorf("the last request had Host %q and path %q", lastHost, lastPath)
	}

	t.Run("slow answer past the timeout", func(t *testing.T) {
		start := time.Now()
		err := probeWithin(HTTP(HTTPSpec{Port: port, Path: "/slow"}), addr, 200*time.Millisecond)
		if err == nil || !strings.HasSuffix(err.Error(), ": no answer within 200ms") {
			t.Errorf("error %v after %v, want a timeout at 200ms", err, time.Since(start))
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, closed := testnet.ListenTCP(t)
		ln.Close()
		err := probeWithin(HTTP(HTTPSpec{Port: closed}), addr, answered)
		if want := "http :" + itoa(closed) + "/: connection refused"; err == nil || err.Error() != want {
			t.Errorf("error %v, want %q", err, want)
		}
	})
}

func TestHTTPS(t *testing.T) {
	ca, other := testkit.NewCA(t, "ca"), testkit.NewCA(t, "other")
	const ip = "127.0.0.1"
	named := ca.Server(t, []string{"app.lan"}, ip)
	ipOnly := ca.Server(t, nil, ip)
	wrongCA := other.Server(t, []string{"app.lan"}, ip)
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }
	addr := netip.MustParseAddr("127.0.0.1")
	verified := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	tests := []struct {
		name string
		cert tls.Certificate
		host string
		tls  *tls.Config
		want string // a part of the error, "" to pass
	}{
		{"verified by name", named, "app.lan", verified, ""},
		{"verified by address", ipOnly, "", verified, ""},
		{"name not in the certificate", named, "other.lan", verified, "tls: x509: certificate is valid for app.lan, not other.lan"},
		{"another CA", wrongCA, "app.lan", verified, "tls: x509: certificate signed by unknown authority"},
		{"another CA, not verified", wrongCA, "app.lan", &tls.Config{InsecureSkipVerify: true}, ""},
		{"system roots do not know the test CA", named, "app.lan", &tls.Config{}, "tls: x509: certificate signed by unknown authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := serveHTTP(t, ok, &tc.cert)
			err := probeWithin(HTTP(HTTPSpec{Port: port, Host: tc.host, Body: "ok", TLS: tc.tls}), addr, answered)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "https :"+itoa(port)+"/: ") {
				t.Errorf("error %q does not name the check", err)
			}
		})
	}
}

func TestRequestHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		port uint16
		tls  bool
		want string
	}{
		{"app.lan", 80, false, "app.lan"},
		{"app.lan", 8080, false, "app.lan:8080"},
		{"app.lan", 443, true, "app.lan"},
		{"10.0.0.7", 443, false, "10.0.0.7:443"},
		{"::1", 80, false, "[::1]"},
		{"2001:db8::7", 8443, true, "[2001:db8::7]:8443"},
	} {
		if got := request("/", tc.host, tc.port, tc.tls); !strings.Contains(got, "\r\nHost: "+tc.want+"\r\n") {
			t.Errorf("request for %s port %d: %q, want Host: %s", tc.host, tc.port, got, tc.want)
		}
	}
}

func TestParseStatusCodes(t *testing.T) {
	for in, want := range map[string]string{"200": "200", "200-299": "200-299", "200,204,301-302": "200,204,301-302"} {
		codes, err := ParseStatusCodes(in)
		if err != nil || codes.String() != want {
			t.Errorf("%q: %v %v", in, codes, err)
		}
	}
	codes, _ := ParseStatusCodes("200,204,301-302")
	for code, want := range map[int]bool{200: true, 201: false, 204: true, 301: true, 302: true, 303: false} {
		if codes.Has(code) != want {
			t.Errorf("%v has %d: %v", codes, code, !want)
		}
	}
	for _, bad := range []string{"", "abc", "99", "600", "300-200", "200,", "2xx"} {
		if _, err := ParseStatusCodes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func itoa(port uint16) string { return strconv.Itoa(int(port)) }
