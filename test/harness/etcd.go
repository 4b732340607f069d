package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/netlab"
	"github.com/healthdns/healthdns/test/testkit"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdBinary is Debian's etcd-server, which .ci/run installs.
const EtcdBinary = "/usr/bin/etcd"

// Etcd is a real one-member etcd server on 127.0.0.1, its data in the test's temporary
// directory. It can be stopped and started again on the same ports and data, so that a test can
// cut its clients off and let them back.
type Etcd struct {
	t       testing.TB
	name    string
	dataDir string
	client  string // http://127.0.0.1:port, or https:// with TLS
	peer    string
	// With TLS: the server's certificate and key, the CA its clients' certificates must chain
	// to, and the configuration of the test's own clients.
	serverCert, serverKey, clientCA string
	tls                             *tls.Config

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *netlab.Buffer
	exited chan struct{}
}

// RequireEtcd skips the test when Debian's etcd server is not installed, unless the
// environment says CI (CI=true, which .ci/run and CI services set): there .ci/run installed
// it, and a test that skipped would pass without having run.
func RequireEtcd(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err == nil {
		return
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s is missing although CI is set: .ci/run should have installed Debian's etcd-server", EtcdBinary)
	}
	t.Skipf("%s is missing: install Debian's etcd-server to run this test", EtcdBinary)
}

// StartEtcd starts etcd and waits until it serves a read. The test's cleanup stops it.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	RequireEtcd(t)
	e := newEtcd(t, "http")
	e.Start()
	return e
}

// EtcdTLSFiles are the files a client of a TLS etcd needs: the CA that signed the server's
// certificate and the clients', and a client certificate with its key.
type EtcdTLSFiles struct {
	CA, ClientCert, ClientKey string
	// Authority is the CA itself, to issue other clients' certificates.
	Authority *testkit.CA
}

// StartEtcdTLS starts etcd serving clients on https://127.0.0.1:port only, with a certificate
// for 127.0.0.1, and requiring a client certificate that its CA signed (--client-cert-auth),
// and waits until it serves a read. Client and ClientAs present the client certificate of the
// files returned. The test's cleanup stops it.
func StartEtcdTLS(t testing.TB) (*Etcd, EtcdTLSFiles) {
	t.Helper()
	RequireEtcd(t)
	ca := testkit.NewCA(t, "etcd-ca")
	// etcd 3.4's gRPC gateway dials the server itself with the server's certificate, as a
	// client: the certificate serves both ends.
	serverCert, serverKey := ca.Issue(t, "etcd-server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, "127.0.0.1")
	clientCert, clientKey := ca.Issue(t, "etcd-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	e := newEtcd(t, "https")
	e.serverCert, e.serverKey, e.clientCA = serverCert, serverKey, ca.File
	e.tls = ca.ClientTLS(t, clientCert, clientKey)
	e.Start()
	return e, EtcdTLSFiles{CA: ca.File, ClientCert: clientCert, ClientKey: clientKey, Authority: ca}
}

func newEtcd(t testing.TB, scheme string) *Etcd {
	e := &Etcd{
		t:       t,
		name:    "healthdns-test",
		dataDir: filepath.Join(t.TempDir(), "etcd"),
		client:  scheme + "://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		peer:    "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
	}
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("etcd output:\n%s", e.Output())
		}
	})
	return e
}

// Endpoint is the client URL, http://127.0.0.1:port (https:// with TLS).
func (e *Etcd) Endpoint() string { return e.client }

// Start starts the server again after Stop, on the same ports and data, and waits until it
// serves. It does nothing when the server runs.
func (e *Etcd) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return
	}
	e.out = &netlab.Buffer{}
	e.exited = make(chan struct{})
	args := EtcdArgs(e.name, e.dataDir, e.client, e.peer)
	if e.tls != nil {
		args = append(args, "--cert-file", e.serverCert, "--key-file", e.serverKey,
			"--trusted-ca-file", e.clientCA, "--client-cert-auth")
	}
	e.cmd = exec.Command(EtcdBinary, args...)
	e.cmd.Env = EtcdEnv()
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	// A test binary that dies without its cleanups (a panic, the -timeout, a closed pipe on
	// its output) would leave etcd running: the kernel kills it when the thread that started
	// it ends, which in Go is as a rule when the process does.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		e.t.Fatalf("starting %s: %v", EtcdBinary, err)
	}
	cmd, exited := e.cmd, e.exited
	go func() { cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.serves()
		if err == nil {
			return
		}
		select {
		case <-exited:
			e.t.Fatalf("etcd exited before serving (%v); output:\n%s", cmd.ProcessState, e.out)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("etcd did not serve within 30s (%v); output:\n%s", err, e.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serves reports whether a read of one key gets an answer. An answer that refuses it for want
// of credentials counts: a test may have turned authentication on, and the server serves.
func (e *Etcd) serves() error {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.client},
		DialTimeout: time.Second,
		TLS:         e.tls,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = c.Get(ctx, "healthdns-probe")
	if errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrPermissionDenied) {
		return nil
	}
	return err
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s) and waits for it to exit. It does
// nothing when the server is stopped.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.t.Errorf("etcd did not exit within 10s of SIGTERM; killing it")
		e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}

// Output is what the server printed since it was last started.
func (e *Etcd) Output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.out == nil {
		return ""
	}
	return e.out.String()
}

// Client returns a client of the server without credentials (with the client certificate of
// StartEtcdTLS under TLS), closed by the test's cleanup.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return e.ClientAs(t, "", "")
}

// ClientAs returns a client of the server that authenticates as user, closed by the test's
// cleanup. It fails the test when the server refuses the credentials. Such a client does not
// outlive a restart of Debian's etcd 3.4: the server forgets its token, and refuses the new
// login the client sends with the old token (see source/etcdlogin.go); make a new one.
func (e *Etcd) ClientAs(t testing.TB, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.client},
		DialTimeout: 5 * time.Second,
		TLS:         e.tls,
		Username:    user,
		Password:    password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client of %s as %q: %v", e.client, user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// EtcdArgs is the command line of EtcdBinary for a new one-member cluster named name, with its
// data in dataDir, serving clients on clientURL and its peers on peerURL (http://ADDRESS:PORT),
// logging warnings to stderr. Run it in EtcdEnv.
func EtcdArgs(name, dataDir, clientURL, peerURL string) []string {
	return []string{
		"--name", name,
		"--data-dir", dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", name + "=" + peerURL,
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--log-level", "warn",
	}
}

// EtcdEnv is this process's environment without its ETCD_* and ETCDCTL_* variables. The
// package's defaults in /etc/default/etcd are for its service, not for a test's server; the
// command line wins over ETCD_* variables, but an inherited ETCD_* would still be read.
func EtcdEnv() []string { return withoutEtcdVariables(os.Environ()) }

func withoutEtcdVariables(env []string) []string {
	var kept []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "ETCD_") && !strings.HasPrefix(kv, "ETCDCTL_") {
			kept = append(kept, kv)
		}
	}
	return kept
}
