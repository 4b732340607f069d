package deploy

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// packageTraces lists the paths where a package named healthdns, or a CoreDNS, leaves files:
// what the package installs, the unit's enablement links and deb-systemd-helper's state, and
// dpkg's own records of it. Other trees (the container helpers' image layers, /tmp) are left
// out, since tests beside this one make such files there.
func packageTraces(t *testing.T) []string {
	t.Helper()
	var found []string
	for _, root := range []string{"/etc", "/usr", "/lib", "/var/lib/systemd", "/var/lib/private", "/var/lib/dpkg/info"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
					return nil
				}
				return err
			}
			if name := strings.ToLower(d.Name()); strings.Contains(name, "healthdns") || strings.Contains(name, "coredns") {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("listing %s: %v", root, err)
		}
	}
	slices.Sort(found)
	return found
}

// dpkgRetry runs dpkg, waiting out another apt or dpkg run that holds its lock: .ci/run and
// people install packages on this machine while tests run.
func dpkgRetry(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// debArch is this machine's Debian architecture, the package's; the test skips on others.
func debArch(t *testing.T) string {
	t.Helper()
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}[runtime.GOARCH]
	if runtime.GOOS != "linux" || arch == "" {
		t.Skipf("the package is built for linux amd64, arm64 and armhf, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	return arch
}

// buildDeb builds the package for arch from the test binary with deploy/deb.sh, as release.sh
// does, and returns its path.
func buildDeb(t *testing.T, arch string) string {
	t.Helper()
	needTool(t, "dpkg-deb", "dpkg")
	dist := t.TempDir()
	// The package holds the test's coredns stripped, as release.sh's -s -w builds are (lintian
	// refuses unstripped binaries): a copy, since the package's other tests run the original.
	binary := filepath.Join(dist, "coredns-healthdns")
	run(t, dist, nil, needTool(t, "strip", "binutils"), "-o", binary, harness.Binary(t))
	ctl := filepath.Join(dist, "healthdnsctl")
	run(t, repoRoot(t), []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", ctl, "./cmd/healthdnsctl")
	deb := strings.TrimSpace(run(t, repoRoot(t), nil, "sh", "deploy/deb.sh", "v0.0.0-test", arch, binary, dist, ctl))
	if want := filepath.Join(dist, "healthdns_0.0.0~test-1_"+arch+".deb"); deb != want {
		t.Fatalf("deb.sh built %q, want %q", deb, want)
	}
	return deb
}

var ipv4Literal = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`)

// TestDebianPackage builds the amd64 package from the test binary with deploy/deb.sh, checks it
// with lintian, installs it on this machine, verifies the installed unit, runs the installed
// binary on the installed Corefile, queries it, and purges the package: nothing may be left but
// what was there before. It installs a package, so it runs as root only.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs the package with dpkg -i: root only (CI runs as root)")
	}
	arch := debArch(t)
	needTool(t, "dpkg", "dpkg")
	lintian := needTool(t, "lintian", "lintian")
	analyze := needTool(t, "systemd-analyze", "systemd")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "healthdns").Output(); err == nil && string(out) != "not-installed" {
		t.Skipf("a healthdns package is on this machine already (%s): the test would replace it and purge it", out)
	}

	deb := buildDeb(t, arch)
	// Errors fail; warnings are listed in the test's log.
	out, err := exec.Command(lintian, "--fail-on", "error", "--pedantic", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("lintian %s: %v\n%s", deb, err, out)
	}
	t.Logf("lintian:\n%s", out)

	before := packageTraces(t)
	t.Cleanup(func() {
		if exec.Command("dpkg-query", "-W", "healthdns").Run() == nil {
			if out, err := exec.Command("dpkg", "--purge", "healthdns").CombinedOutput(); err != nil {
				t.Errorf("cleaning up: dpkg --purge healthdns: %v\n%s", err, out)
			}
		}
	})
	dpkgRetry(t, "-i", deb)
	installed := strings.Fields(run(t, "/", nil, "dpkg", "-L", "healthdns"))

	// The conffile, and the unit enabled by postinst although systemd does not run here.
	if conffiles := run(t, "/", nil, "dpkg-query", "-W", "-f=${Conffiles}", "healthdns"); !strings.Contains(conffiles, "/etc/coredns/Corefile ") {
		t.Errorf("dpkg lists conffiles %q, want /etc/coredns/Corefile among them", conffiles)
	}
	if _, err := os.Lstat("/etc/systemd/system/multi-user.target.wants/healthdns.service"); err != nil {
		t.Errorf("postinst did not enable the unit: %v", err)
	}

	// The installed unit is deploy/systemd's with the package's binary, every other setting
	// the same; systemd-analyze loads it as systemd would.
	const unitPath = "/lib/systemd/system/healthdns.service"
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	got, want := unitSettings(t, string(unit)), unitSettings(t, readFile(t, unitFile))
	want["Service"]["ExecStart"] = []string{"/usr/bin/coredns-healthdns -conf /etc/coredns/Corefile"}
	for section, keys := range want {
		for key, values := range keys {
			if !slices.Equal(got[section][key], values) {
				t.Errorf("installed unit: [%s] %s=%q, want %q", section, key, got[section][key], values)
			}
		}
	}
	for line := range strings.SplitSeq(run(t, "/", []string{"SYSTEMD_LOG_COLOR=0"}, analyze, "verify", unitPath), "\n") {
		if strings.Contains(line, "healthdns.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}

	// The default Corefile names loopback addresses only: starting the service probes and
	// answers nothing beyond this machine.
	corefile, err := os.ReadFile("/etc/coredns/Corefile")
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for line := range strings.SplitSeq(string(corefile), "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.TrimSpace(code) != "" {
			addrs = append(addrs, ipv4Literal.FindAllString(code, -1)...)
		}
	}
	if len(addrs) == 0 {
		t.Fatalf("the default Corefile names no address:\n%s", corefile)
	}
	var backends []string
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			t.Errorf("the default Corefile names %s, which is not a loopback address", a)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*backend\s+(\S+)`).FindAllStringSubmatch(string(corefile), -1) {
		backends = append(backends, m[1])
	}

	// The installed healthdnsctl checks the installed Corefile with the installed coredns.
	if out := run(t, "/", nil, "/usr/bin/healthdnsctl", "check", "/etc/coredns/Corefile"); !strings.Contains(out, "zone app.lan.") {
		t.Errorf("healthdnsctl check /etc/coredns/Corefile printed %q; want the pool app.lan.", out)
	}

	// The installed binary on the installed Corefile, on a free port instead of 53.
	port := harness.FreePort(t)
	srv := exec.Command("/usr/bin/coredns-healthdns", "-conf", "/etc/coredns/Corefile", "-dns.port", strconv.Itoa(port))
	srv.Dir = t.TempDir()
	var log strings.Builder
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	stop := func() {
		srv.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)
	client := dns.Client{Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion("app.lan.", dns.TypeA)
	var answer []string
	ok := harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		r, _, err := client.Exchange(q, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil || r.Rcode != dns.RcodeSuccess {
			return false
		}
		answer = harness.AnswerAddrs(r)
		return len(answer) > 0
	})
	if !ok {
		stop() // the log is the server's until it exits
		t.Fatalf("the installed binary did not answer app.lan on 127.0.0.1:%d within 30s\nlog:\n%s", port, log.String())
	}
	for _, a := range answer {
		if !slices.Contains(backends, a) {
			t.Errorf("app.lan answered %s, not one of the default Corefile's backends %v", a, backends)
		}
	}
	stop()

	dpkgRetry(t, "--purge", "healthdns")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "healthdns").Output(); err == nil && string(out) != "not-installed" {
		t.Errorf("after dpkg --purge, healthdns's status is %q", out)
	}
	after := packageTraces(t)
	if !slices.Equal(before, after) {
		t.Errorf("after dpkg --purge, files left or gone:\nbefore: %q\nafter:  %q", before, after)
	}
	for _, path := range installed {
		if slices.Contains(before, path) {
			continue
		}
		// Stat, not Lstat: /lib is a link to usr/lib on a merged-/usr system.
		if info, err := os.Stat(path); err == nil && !info.IsDir() {
			t.Errorf("%s is left after dpkg --purge", path)
		}
	}
}
