package healthdns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/healthdns/healthdns/source"
)

// TestParseBackendsEtcd: the block's defaults (the endpoint on loopback, a prefix per zone) and
// its properties.
func TestParseBackendsEtcd(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns a.lan b.lan {\n backends_etcd\n}")
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"/healthdns/a.lan/", "/healthdns/b.lan/"} {
		ec := cfgs[i].Source.Etcd
		if ec.Prefix != want || !slices.Equal(ec.Endpoints, []string{"http://127.0.0.1:2379"}) {
			t.Errorf("zone %s: prefix %q, endpoints %v; want %q and the loopback default", cfgs[i].Zone, ec.Prefix, ec.Endpoints, want)
		}
	}
	c = caddy.NewTestController("dns", "healthdns a.lan {\n backend 10.0.0.1\n backends_etcd {\n  endpoint http://10.0.0.5:2379 https://10.0.0.6:2379\n  prefix /svc/a\n  credentials healthdns s3cret\n }\n ttl 7\n}")
	cfgs, err = parse(c)
	if err != nil {
		t.Fatal(err)
	}
	ec := cfgs[0].Source.Etcd
	if ec.Prefix != "/svc/a/" || len(ec.Endpoints) != 2 || ec.User != "healthdns" || ec.Password != "s3cret" || cfgs[0].ttl != 7 {
		t.Errorf("parsed %+v, ttl %d", ec, cfgs[0].ttl)
	}
}

// TestBackendsFileNotRegularFailsAtItsLine: a backends_file that is a FIFO, a device, a
// directory or over the size cap fails the Corefile at the backends_file line, naming the path
// and what it is, and the parse never blocks on it (a FIFO without a writer would block an
// open for reading: the test releases it, and fails, after a deadline).
func TestBackendsFileNotRegularFailsAtItsLine(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.backends")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.backends")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.backends")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, source.MaxFileSize+1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"FIFO", fifo, fifo + " is a named pipe (FIFO): not a regular file"},
		{"link to /dev/zero", zero, zero + " (a link to /dev/zero) is a character device: not a regular file"},
		{"directory", dir, dir + " is a directory: not a regular file"},
		{"over the size cap", big, big + " is too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n backends_file "+tc.path+"\n}"))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				if f, err := os.OpenFile(fifo, os.O_RDWR, 0); err == nil { // O_RDWR never blocks
					f.Close()
				}
				<-done
				t.Fatal("the parse blocked on the backends file for 5s")
			}
			if err == nil || !strings.HasPrefix(err.Error(), "Testfile:3 - ") || !strings.Contains(err.Error(), "backends_file: "+tc.want) {
				t.Fatalf("parse error %v, want one at Testfile:3 that says %q", err, tc.want)
			}
		})
	}
}
