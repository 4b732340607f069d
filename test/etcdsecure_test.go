package test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/testkit"
)

// secureEtcdServer is a server with the ready plugin and one pool over etcd, TCP-checked on
// port, that answers SERVFAIL while it has no list; props are the lines of its backends_etcd
// block, one property a line, and extra more lines of the pool.
func secureEtcdServer(t *testing.T, zone string, port int, props []string, extra ...string) *harness.Server {
	t.Helper()
	block := "backends_etcd {\n   " + strings.Join(props, "\n   ") + "\n  }"
	return harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n ready {{READY}}\n"+
		harness.TCPPool(zone, port, "100ms", "50ms", nil, append([]string{block, "answers 8", "all_down servfail"}, extra...)...)+"}\n")
}

func ready(s *harness.Server) bool { return harness.HTTPOK("http://" + s.ReadyAddr + "/ready") }

// refused checks a server that etcd does not serve: it logs why, in a line that names the
// zone, etcd's endpoint and each of what, is not ready, and answers SERVFAIL (all_down
// servfail).
func refused(t *testing.T, s *harness.Server, zone, endpoint string, what ...string) {
	t.Helper()
	pattern := regexp.MustCompile(`\[ERROR\] plugin/healthdns: zone ` + regexp.QuoteMeta(zone) + `: backends_etcd: .*` + regexp.QuoteMeta(endpoint))
	var lines []string
	harness.Eventually(t, 15*time.Second, func() bool {
		lines = harness.LinesMatching(s.Output(), pattern)
		return len(lines) > 0
	}, "a log line that names zone ", zone, " and etcd ", endpoint)
	line := lines[0]
	t.Logf("logged: %s", line)
	for _, w := range append(what, "no list from it yet") {
		if !strings.Contains(line, w) {
			t.Errorf("the log line does not say %q:\n%s", w, line)
		}
	}
	if ready(s) {
		t.Error("ready without a list")
	}
	if r := s.Query(t, "udp", zone, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("without a list: %s, want SERVFAIL (all_down servfail)", dns.RcodeToString[r.Rcode])
	}
}

// TestBackendsEtcdTLS: a server with the client certificate of etcd's CA reads the list over
// TLS and follows its changes, across an outage too; servers whose certificate etcd does not
// accept, or that do not trust etcd's, start, are not ready, answer as all_down says, and log
// what is wrong.
func TestBackendsEtcdTLS(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b = "127.0.1.130", "127.0.1.131"
	const zone, prefix = "tls.lan.", "/healthdns/tls.lan/"
	port, _ := harness.StartBackends(t, a, b)
	etcd, files := harness.StartEtcdTLS(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	endpoint := "endpoint " + etcd.Endpoint()

	s := secureEtcdServer(t, "tls.lan", port, []string{endpoint, "tls " + files.ClientCert + " " + files.ClientKey + " " + files.CA})
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), a) }, "the list read over TLS")
	put(t, kv, prefix+b, "")
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), a, b) }, "a put seen by the watch over TLS")
	if !ready(s) {
		t.Error("not ready with its list")
	}
	// An outage over TLS is an outage, not a TLS problem, and the watch resumes after it.
	etcd.Stop()
	outage := regexp.MustCompile(`zone ` + regexp.QuoteMeta(zone) + `: backends_etcd: cannot follow etcd, retrying until it answers: etcd ` + regexp.QuoteMeta(etcd.Endpoint()))
	harness.Eventually(t, 10*time.Second, func() bool { return len(harness.LinesMatching(s.Output(), outage)) == 1 }, "the outage logged")
	t.Logf("logged: %s", harness.LinesMatching(s.Output(), outage)[0])
	etcd.Start()
	kv = etcd.Client(t)
	del(t, kv, prefix+a)
	harness.Eventually(t, 15*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), b) }, "a delete after etcd came back")
	if lines := harness.LinesMatching(s.Output(), regexp.MustCompile(`TLS`)); len(lines) != 0 {
		t.Errorf("the outage logged as a TLS problem:\n%s", strings.Join(lines, "\n"))
	}

	other := testkit.NewCA(t, "other-ca")
	foreignCert, foreignKey := other.Issue(t, "foreign-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	for _, tc := range []struct {
		name  string
		props []string
		what  []string
	}{
		{"client certificate from another CA", []string{endpoint, "tls " + foreignCert + " " + foreignKey + " " + files.CA},
			[]string{"the TLS handshake with etcd fails", "etcd refused the TLS handshake"}},
		{"server certificate from an untrusted CA", []string{endpoint, "tls " + files.ClientCert + " " + files.ClientKey + " " + other.File},
			[]string{"the TLS handshake with etcd fails", "tls: failed to verify certificate: x509: certificate signed by unknown authority"}},
		{"no tls", []string{endpoint}, []string{"the TLS handshake with etcd fails", "tls: failed to verify certificate: x509: certificate signed by unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refused(t, secureEtcdServer(t, "tls.lan", port, tc.props), zone, etcd.Endpoint(), tc.what...)
		})
	}
}

// TestBackendsEtcdCredentials: with authentication on in etcd, a server that logs in as a user
// allowed to read the prefix is served; one with a wrong password, without credentials, or
// with a prefix its user may not read is not ready and logs what etcd refused.
func TestBackendsEtcdCredentials(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b = "127.0.1.132", "127.0.1.133"
	const zone, prefix = "auth.lan.", "/healthdns/auth.lan/"
	port, _ := harness.StartBackends(t, a, b)
	etcd := harness.StartEtcd(t)
	root := enableEtcdAuth(t, etcd, prefix)
	put(t, root, prefix+a, "")
	endpoint := "endpoint " + etcd.Endpoint()

	// nopreempt: the server also writes the fleet's agreed group, which its user may.
	s := secureEtcdServer(t, "auth.lan", port, []string{endpoint, "credentials healthdns s3cret"}, "nopreempt")
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), a) }, "the list read as healthdns")
	put(t, root, prefix+b, "")
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), a, b) }, "a put seen by the watch as healthdns")
	if !ready(s) {
		t.Error("not ready with its list")
	}
	// Two priority groups: nopreempt keeps group 100 serving, and the server agrees on it with
	// the fleet, writing the key.
	put(t, root, prefix+b, "priority 200")
	harness.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := root.Get(ctx, prefix+"_group/ipv4")
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "100"
	}, "the agreed group written as healthdns")
	if got := s.Addrs(t, "udp", zone, dns.TypeA); !harness.SameSet(got, a) {
		t.Errorf("with the agreed group 100: %v, want %s", got, a)
	}

	for _, tc := range []struct {
		name  string
		props []string
		what  []string
	}{
		{"wrong password", []string{endpoint, "credentials healthdns wrong"},
			[]string{"etcd refuses the user and password of 'credentials'", `logging in as "healthdns": etcdserver: authentication failed`}},
		{"no credentials", []string{endpoint}, []string{"etcd has authentication on and wants 'credentials USER PASSWORD'"}},
		{"prefix not granted", []string{endpoint, "prefix /healthdns/other.lan/", "credentials healthdns s3cret"},
			[]string{"etcd denies the user of 'credentials' a read of the prefix", "reading /healthdns/other.lan/: etcdserver: permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refused(t, secureEtcdServer(t, "auth.lan", port, tc.props), zone, etcd.Endpoint(), tc.what...)
		})
	}
}

// enableEtcdAuth turns authentication on in e as an operator would for healthdns: a root user,
// and a user "healthdns" with the password s3cret that may read the pool's prefix and write
// only the fleet's agreed groups below it. It returns a client logged in as root.
func enableEtcdAuth(t *testing.T, e *harness.Etcd, prefix string) *clientv3.Client {
	t.Helper()
	c := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	group := prefix + "_group/"
	steps := []struct {
		what string
		do   func() error
	}{
		{"add root", func() error { _, err := c.UserAdd(ctx, "root", "root-secret"); return err }},
		{"grant root root", func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role healthdns", func() error { _, err := c.RoleAdd(ctx, "healthdns"); return err }},
		{"grant read on " + prefix, func() error {
			_, err := c.RoleGrantPermission(ctx, "healthdns", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"grant write on " + group, func() error {
			_, err := c.RoleGrantPermission(ctx, "healthdns", group, clientv3.GetPrefixRangeEnd(group), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add healthdns", func() error { _, err := c.UserAdd(ctx, "healthdns", "s3cret"); return err }},
		{"grant healthdns healthdns", func() error { _, err := c.UserGrantRole(ctx, "healthdns", "healthdns"); return err }},
		{"enable", func() error { _, err := c.AuthEnable(ctx); return err }},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("enabling authentication in etcd: %s: %v", step.what, err)
		}
	}
	return e.ClientAs(t, "root", "root-secret")
}

// TestBackendsEtcdTLSBadFiles: a 'tls' line whose files cannot serve fails startup at its
// line, naming the file and the problem; etcd is not needed to find out.
func TestBackendsEtcdTLSBadFiles(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t, "files-ca")
	cert, key := ca.Issue(t, "client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	_, otherKey := ca.Issue(t, "other-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name  string
		files string
		want  []string
	}{
		{"missing certificate", missing + " " + key + " " + ca.File, []string{"backends_etcd tls: client certificate " + missing, "no such file"}},
		{"missing CA", cert + " " + key + " " + missing, []string{"backends_etcd tls: CA certificate", missing, "no such file"}},
		{"CA not PEM", cert + " " + key + " " + key, []string{"backends_etcd tls: CA certificate " + key + ": no PEM certificate in it"}},
		{"key of another certificate", cert + " " + otherKey + " " + ca.File, []string{"backends_etcd tls: client certificate " + cert + ", key " + otherKey, "private key does not match public key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conf := filepath.Join(t.TempDir(), "Corefile")
			// The tls line is line 6.
			text := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n healthdns a.lan {\n  backends_etcd {\n   endpoint https://127.0.0.1:2379\n   tls %s\n  }\n }\n}\n", harness.FreePort(t), tt.files)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, exited, err := runCoreDNS(t, 10*time.Second, "-conf", conf)
			if !exited || err == nil {
				t.Fatalf("coredns started (exited %v, %v) on:\n%s\noutput:\n%s", exited, err, text, out)
			}
			t.Logf("%s", harness.LastLine(out))
			if !regexp.MustCompile(regexp.QuoteMeta(conf) + `:6([^0-9]|$)`).MatchString(out) {
				t.Errorf("the error does not name %s:6, the tls line:\n%s", conf, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("the error does not say %q:\n%s", w, out)
				}
			}
		})
	}
}
