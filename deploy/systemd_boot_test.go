//go:build linux

package deploy

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

// TestDebianPackageUnderSystemd installs the package on a minimal Debian booted with systemd (a
// root file system from mmdebstrap, booted by systemd-nspawn with a network of its own), as a
// user's `apt install` would: postinst enables and starts the unit. The hardened unit must
// start for real (DynamicUser, the capability set, the system call filter), answer, reload on
// `systemctl reload` without a restart, stop, and be purged without a trace. This machine's
// own PID 1 is not systemd, so this is where the unit runs under the systemd it was written for.
func TestDebianPackageUnderSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("boots a container with systemd-nspawn: root only (CI runs as root)")
	}
	arch := debArch(t)
	nspawn := needTool(t, "systemd-nspawn", "systemd-container")
	nsenter := needTool(t, "nsenter", "util-linux")
	deb := buildDeb(t, arch)

	root := systemdRoot(t)
	dist := filepath.Dir(deb)

	// --register=no and --keep-unit: no systemd-machined on the host to register with.
	// --volatile=overlay: the container writes to a tmpfs over the root file system, which the
	// next run finds as it was built; the package comes in by a read-only bind.
	boot := exec.Command(nspawn, "--quiet", "--register=no", "--keep-unit", "--private-network",
		"--link-journal=no", "--console=passive", "--directory="+root, "--volatile=overlay",
		"--bind-ro="+dist+":/mnt/dist", "--boot")
	var console strings.Builder
	boot.Stdout, boot.Stderr = &console, &console
	if err := boot.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { boot.Wait(); close(exited) }()
	t.Cleanup(func() {
		// nspawn halts the container on SIGTERM; a kill ends it at once.
		boot.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			boot.Process.Kill()
			<-exited
		}
	})

	// nspawn forks the container's init, which becomes systemd by an exec: wait for that.
	var init int
	if !harness.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		init = firstChild(boot.Process.Pid)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", init))
		return init > 0 && strings.TrimSpace(string(comm)) == "systemd"
	}) {
		t.Fatalf("systemd-nspawn started no init\n%s", console.String())
	}
	// in runs a command inside the container, in all of its namespaces.
	in := func(args ...string) (string, error) {
		out, err := exec.Command(nsenter, append([]string{"--target", strconv.Itoa(init), "--all", "--"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := in(args...)
		if err != nil {
			t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// Until the container's D-Bus is up, systemctl cannot ask systemd anything.
	var state string
	harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		state, _ = in("systemctl", "is-system-running", "--wait")
		return state == "running" || state == "degraded"
	})
	if state != "running" {
		failed, _ := in("systemctl", "--failed", "--no-pager", "--plain")
		t.Logf("the container's systemd is %q; failed units:\n%s", state, failed)
	}

	must("dpkg", "-i", "/mnt/dist/"+filepath.Base(deb))
	// postinst enabled and started the unit, as on a host booted with systemd.
	if enabled, _ := in("systemctl", "is-enabled", "healthdns"); enabled != "enabled" {
		t.Errorf("after dpkg -i, healthdns.service is %q, want enabled", enabled)
	}
	journal := func() string {
		out, _ := in("journalctl", "--unit=healthdns", "--no-pager", "--output=cat")
		return out
	}
	if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		active, _ := in("systemctl", "is-active", "healthdns")
		return active == "active"
	}) {
		status, _ := in("systemctl", "status", "healthdns", "--no-pager")
		t.Fatalf("healthdns.service did not become active after dpkg -i:\n%s\n%s", status, journal())
	}

	// The installed Corefile answers on 127.0.0.1:53, in the container's network.
	netns := fmt.Sprintf("/proc/%d/ns/net", init)
	ask := func(name string) []string {
		var addrs []string
		netlab.InNamespaceAt(netns, func() error {
			q := new(dns.Msg)
			q.SetQuestion(name, dns.TypeA)
			r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(q, "127.0.0.1:53")
			if err == nil && r.Rcode == dns.RcodeSuccess {
				addrs = harness.AnswerAddrs(r)
			}
			return err
		})
		return addrs
	}
	var answer []string
	if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool { answer = ask("app.lan."); return len(answer) > 0 }) {
		t.Fatalf("the service did not answer app.lan on the container's 127.0.0.1:53\n%s", journal())
	}
	for _, a := range answer {
		if a != "127.0.0.1" && a != "127.0.0.2" {
			t.Errorf("app.lan answered %s, not one of the default Corefile's backends", a)
		}
	}

	// The service as the unit made it, once it answers: a dynamic user, the two capabilities
	// and no others.
	mainPID := must("systemctl", "show", "--property=MainPID", "--value", "healthdns")
	proc := processStatus(must("cat", "/proc/"+mainPID+"/status"))
	if uid := strings.Fields(proc["Uid"]); len(uid) == 0 || uid[0] == "0" {
		t.Errorf("the service runs as uid %q, want a dynamic user", proc["Uid"])
	}
	// CAP_NET_BIND_SERVICE is bit 10, CAP_NET_RAW bit 13.
	if want := fmt.Sprintf("%016x", 1<<10|1<<13); proc["CapEff"] != want || proc["CapBnd"] != want {
		t.Errorf("the service's capabilities: effective %s, bounding %s, want %s (CAP_NET_BIND_SERVICE, CAP_NET_RAW)", proc["CapEff"], proc["CapBnd"], want)
	}

	// systemctl reload: the edited Corefile is served by the same process.
	text := must("cat", "/etc/coredns/Corefile") + "\n"
	edited := strings.Replace(text, "    errors\n", "    errors\n    healthdns db.lan {\n        backend 127.0.0.3\n        check icmp\n    }\n", 1)
	if edited == text {
		t.Fatalf("the default Corefile has no 'errors' line to add a zone after:\n%s", text)
	}
	if err := os.WriteFile(filepath.Join(dist, "Corefile"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	must("cp", "/mnt/dist/Corefile", "/etc/coredns/Corefile")
	must("systemctl", "reload", "healthdns")
	if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool { return slices.Equal(ask("db.lan."), []string{"127.0.0.3"}) }) {
		t.Fatalf("after systemctl reload, db.lan is not answered 127.0.0.3\n%s", journal())
	}
	if after := must("systemctl", "show", "--property=MainPID", "--value", "healthdns"); after != mainPID {
		t.Errorf("systemctl reload restarted the service: main PID %s, then %s", mainPID, after)
	}

	// The packaged healthdnsctl checks the installed Corefile, as README.Debian says to before
	// a reload.
	if out := must("healthdnsctl", "check", "/etc/coredns/Corefile"); !strings.Contains(out, "zone db.lan.") {
		t.Errorf("healthdnsctl check /etc/coredns/Corefile in the container printed %q, want the pool db.lan.", out)
	}

	if _, err := in("test", "-d", "/var/lib/private/healthdns"); err != nil {
		t.Errorf("the running service has no state directory /var/lib/private/healthdns (StateDirectory=healthdns)")
	}
	must("systemctl", "stop", "healthdns")
	must("dpkg", "--purge", "healthdns")
	if left, _ := in("systemctl", "list-unit-files", "--no-legend", "healthdns.service"); left != "" {
		t.Errorf("after dpkg --purge, systemd still knows the unit: %s", left)
	}
	for _, path := range []string{"/usr/bin/coredns-healthdns", "/etc/coredns/Corefile", "/lib/systemd/system/healthdns.service",
		"/etc/systemd/system/multi-user.target.wants/healthdns.service",
		// The unit's StateDirectory, which the running service had: a dynamic user's is under
		// /var/lib/private, with a link to it.
		"/var/lib/private/healthdns", "/var/lib/healthdns"} {
		if _, err := in("test", "-e", path, "-o", "-L", path); err == nil {
			t.Errorf("%s is left after dpkg --purge", path)
		}
	}
	t.Logf("the unit started, answered %v, reloaded and was purged under the container's systemd (%s)", answer, state)
}

// systemdRootCache is where the container's root file system is kept between runs: .ci/run
// builds it with the other installs (deploy/systemd-root.sh), so that the suite does not spend
// a minute of downloads on it; a run that finds none builds it there.
const systemdRootCache = "/var/cache/healthdns-test"

// systemdRoot returns a minimal Debian of this host's release with systemd, built by mmdebstrap
// from the host's package sources: what `apt install` on this host would meet.
func systemdRoot(t *testing.T) string {
	t.Helper()
	suite := osRelease(t)["VERSION_CODENAME"]
	if suite == "" {
		t.Skip("no VERSION_CODENAME in /etc/os-release: not a Debian to build a root file system of")
	}
	root := filepath.Join(systemdRootCache, "systemd-root-"+suite)
	if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/systemd")); err == nil {
		return root
	}
	needTool(t, "mmdebstrap", "mmdebstrap")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sh", filepath.Join(repoRoot(t), "deploy/systemd-root.sh"), root).CombinedOutput(); err != nil {
		t.Fatalf("deploy/systemd-root.sh %s: %v\n%s", root, err, out)
	}
	return root
}

// firstChild is the first child process of pid (nspawn's: the container's init), or 0.
func firstChild(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	child, _ := strconv.Atoi(fields[0])
	return child
}

// processStatus reads /proc/PID/status's "Key:\tvalue" lines.
func processStatus(text string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// osRelease reads /etc/os-release's KEY=value lines.
func osRelease(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skipf("no /etc/os-release: %v", err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}
