package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

// imageRepo is the name deploy/image/build.sh gives the image in its OCI archive, and the one
// the k3s manifest runs: no registry serves it, so the name says it is local, and a runtime
// never turns it into docker.io/library/healthdns and tries to pull that.
const imageRepo = "localhost/healthdns"

const (
	containerfile = "deploy/image/Containerfile"
	imageCorefile = "deploy/image/Corefile"
	buildScript   = "deploy/image/build.sh"
)

// Address plan: TestImage's coredns serves on 127.0.13.1 and probes 127.0.13.2 and 127.0.13.3;
// its exec check's backend is 127.0.13.4, in a container with no network (127.0.13.0/24 is
// reserved for issue 27's container image).
const (
	imageServer      = "127.0.13.1"
	imageBackendA    = "127.0.13.2"
	imageBackendB    = "127.0.13.3"
	imageExecBackend = "127.0.13.4"
)

// capNetBindService and capNetRaw are the two capabilities the image is run with, as bits of
// /proc/PID/status's capability masks.
const (
	capNetBindService = 1 << 10
	capNetRaw         = 1 << 13
)

// dockerfile is a Containerfile's instructions, continuation lines joined, comments dropped.
func dockerfile(text string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		ins, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(ins), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// TestContainerfile checks what can be read without building: one stage from scratch, so that
// building pulls nothing; no RUN, so that it needs no runtime or emulator for other
// architectures; a numeric non-root user, which a runtime can check without an /etc/passwd; and
// every file build.sh puts in the context copied in.
func TestContainerfile(t *testing.T) {
	var from []string
	var user string
	var copied, exposed []string
	var entry string
	for _, in := range dockerfile(readFile(t, containerfile)) {
		switch in[0] {
		case "FROM":
			from = append(from, in[1])
		case "RUN", "ADD":
			t.Errorf("%s %s: the image must build offline from files on the host", in[0], in[1])
		case "USER":
			user = in[1]
		case "COPY":
			f := strings.Fields(in[1])
			copied = append(copied, f[:len(f)-1]...)
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in[1])...)
		case "ENTRYPOINT", "CMD":
			entry += in[1] + " "
		}
	}
	if !slices.Equal(from, []string{"scratch"}) {
		t.Errorf("FROM %v: want only scratch, which pulls nothing", from)
	}
	uid, gid, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root user", user)
	}
	if n, err := strconv.Atoi(gid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root group", user)
	}
	for _, p := range []string{"53/udp", "53/tcp"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	if !strings.Contains(entry, "/usr/local/bin/coredns") || !strings.Contains(entry, "/etc/coredns/Corefile") {
		t.Errorf("ENTRYPOINT and CMD %s: want /usr/local/bin/coredns run on /etc/coredns/Corefile", entry)
	}
	script := readFile(t, buildScript)
	for _, name := range copied {
		if !strings.Contains(script, `$context/`+name) && !strings.Contains(script, `"$here/`+name+`"`) {
			t.Errorf("COPY %s: %s does not put it in the context", name, buildScript)
		}
	}
}

// TestImageCorefileLoopbackOnly: the image's default Corefile listens and probes on loopback
// only, so that an image started without a Corefile of its own reaches no other host.
func TestImageCorefileLoopbackOnly(t *testing.T) {
	var bound bool
	for i, line := range strings.Split(readFile(t, imageCorefile), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "bind", "backend", "prometheus", "health", "ready":
		default:
			continue
		}
		bound = bound || f[0] == "bind"
		for _, arg := range f[1:] {
			host := arg
			if h, _, err := net.SplitHostPort(arg); err == nil {
				host = h
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				t.Errorf("%s:%d: %s %s is not a loopback address", imageCorefile, i+1, f[0], arg)
			}
		}
	}
	if !bound {
		t.Errorf("%s has no bind: its server would listen on every address", imageCorefile)
	}
}

// requireImageTools skips the test unless it runs as root with podman and buildah (rootless
// podman needs subordinate ids and a user session this test does not set up), except under CI,
// where .ci/run installed them and a test that skipped would pass without having run.
func requireImageTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: building and running the image takes half a minute or more")
	}
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	if os.Geteuid() != 0 {
		t.Skip("not root: the image test runs rootful podman")
	}
	for _, tool := range []string{"podman", "buildah", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s not found under CI: .ci/run should have installed it: %v", tool, err)
			}
			t.Skipf("%s not found (apt-get install podman buildah runc; .ci/run installs them as root): %v", tool, err)
		}
	}
}

// runFlags are what each podman run of the test adds for machines like the one the suite runs
// on. Podman raises a container's open files and processes limits (to 1048576 and 4194304)
// above this process's hard limits, which needs CAP_SYS_RESOURCE, which root lacks in a
// sandbox; and conmon, between podman and the runtime, holds processes to 32768 there. The
// container gets limits below all of those, and plenty for coredns. crun, podman's default
// runtime on Debian, refuses a host whose cgroups are a v1 and v2 hybrid ("cgroups in hybrid
// mode not supported"), where runc runs: runc is used when it is installed.
func runFlags(t *testing.T) []string {
	t.Helper()
	var flags []string
	for _, l := range []struct {
		name     string
		resource int
		enough   uint64
	}{{"nofile", unix.RLIMIT_NOFILE, 16384}, {"nproc", unix.RLIMIT_NPROC, 4096}} {
		var lim unix.Rlimit
		if err := unix.Getrlimit(l.resource, &lim); err != nil {
			t.Fatalf("getrlimit %s: %v", l.name, err)
		}
		n := min(lim.Max, l.enough)
		flags = append(flags, "--ulimit", fmt.Sprintf("%s=%d:%d", l.name, n, n))
	}
	if _, err := exec.LookPath("runc"); err == nil {
		flags = append(flags, "--runtime", "runc")
	}
	return append(flags, "--cap-drop=all", "--cap-add=NET_BIND_SERVICE,NET_RAW", "--read-only")
}

// imageConfig is what TestImage reads of `podman image inspect`.
type imageConfig struct {
	Architecture string
	Os           string
	Config       struct {
		User         string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
		Labels       map[string]string
	}
}

// TestImage builds the image with deploy/image/build.sh from the binary the tests built, loads
// its OCI archive as a user would, checks its configuration, and runs it twice: as it is, with
// no network but loopback, where it must bind port 53 and send pings as a non-root user with
// the two capabilities and nothing more; and on the host's network with a Corefile of the
// test's, which it serves, reloads on SIGUSR1, and stops on podman stop.
func TestImage(t *testing.T) {
	requireImageTools(t)
	// A tag of this process's own: another run of the suite beside this one removes its image,
	// and with it whatever container runs it, when it ends.
	version := fmt.Sprintf("v9.8.7-image%d", os.Getpid())
	image := imageRepo + ":" + version
	dir := t.TempDir()
	archive := filepath.Join(dir, "healthdns.oci.tar")
	t.Cleanup(func() { exec.Command("podman", "rmi", "--force", image).Run() })
	run(t, repoRoot(t), nil, "sh", buildScript, version, harness.Binary(t), archive)
	out := run(t, dir, nil, "podman", "load", "--input", archive)
	if !strings.Contains(out, "Loaded image: "+image) {
		t.Fatalf("podman load named the image otherwise than %s:\n%s", image, out)
	}

	var inspected []imageConfig
	if err := json.Unmarshal([]byte(run(t, dir, nil, "podman", "image", "inspect", image)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect %s: %d images, %v", image, len(inspected), err)
	}
	got := inspected[0]
	if got.Os != "linux" || got.Architecture != "amd64" {
		t.Errorf("image for %s/%s, want linux/amd64 (build.sh's default)", got.Os, got.Architecture)
	}
	if got.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", got.Config.User)
	}
	if entry := append(got.Config.Entrypoint, got.Config.Cmd...); !slices.Equal(entry, []string{"/usr/local/bin/coredns", "-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("runs %q, want coredns on /etc/coredns/Corefile", entry)
	}
	for _, p := range []string{"53/udp", "53/tcp", "9153/tcp"} {
		if _, ok := got.Config.ExposedPorts[p]; !ok {
			t.Errorf("exposed ports %v lack %s", got.Config.ExposedPorts, p)
		}
	}
	if v := got.Config.Labels["org.opencontainers.image.version"]; v != version {
		t.Errorf("label org.opencontainers.image.version %q, want %s", v, version)
	}

	t.Run("default", func(t *testing.T) { imageDefault(t, image) })
	t.Run("reload", func(t *testing.T) { imageReload(t, image) })
	t.Run("exec", func(t *testing.T) { imageExec(t, image) })
}

// leaver is an exec check's script that leaves a child behind: it starts itself again, as a
// child that sleeps for an hour, and exits 0 without waiting for it.
const leaver = `package main

import (
	"os"
	"os/exec"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		time.Sleep(time.Hour)
		return
	}
	if err := exec.Command("/proc/self/exe", "child").Start(); err != nil {
		os.Exit(1)
	}
}
`

// imageExec runs the image, which has no init, with an exec check whose script leaves a
// child running: coredns, as PID 1, must kill it and reap it, so that nothing is left in the
// container but coredns between probes.
func imageExec(t *testing.T, image string) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "leaver.go"), leaver)
	checks := filepath.Join(dir, "checks")
	if err := os.Mkdir(checks, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, dir, []string{"CGO_ENABLED=0"}, "go", "build", "-o", filepath.Join(checks, "leaver"), "leaver.go")
	confDir := filepath.Join(dir, "conf")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(confDir, "Corefile"), fmt.Sprintf("app.lan {\n bind 127.0.0.1\n%s errors\n}\n",
		harness.Pool("", []string{imageExecBackend}, "check exec /checks/leaver", "interval 1s", "timeout 500ms")))
	name := startContainer(t, image, "--network", "none",
		"--volume", confDir+":/etc/coredns:ro", "--volume", checks+":/checks:ro")
	pid := strings.TrimSpace(run(t, "", nil, "podman", "inspect", "--format", "{{.State.Pid}}", name))
	ns, err := os.Readlink("/proc/" + pid + "/ns/pid")
	if err != nil {
		t.Fatalf("coredns (pid %s) is not running: %v", pid, err)
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
		return strings.Contains(string(logs), "backend "+imageExecBackend+" (app.lan.): up")
	}, "the exec check to pass")

	// Between probes the container holds coredns alone: a leftover child still running, or
	// killed and never reaped (a zombie), stays, and this never comes true.
	var others []string
	if !harness.Poll(30*time.Second, 25*time.Millisecond, func() bool {
		others = others[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == pid {
				continue
			}
			if link, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && link == ns {
				stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
				if f := strings.Fields(string(stat)); len(f) > 3 {
					others = append(others, fmt.Sprintf("pid %s %s state %s parent %s", f[0], f[1], f[2], f[3]))
				}
			}
		}
		return len(others) == 0
	}) {
		t.Fatalf("the container holds processes besides coredns after 30s of probes:\n%s", strings.Join(others, "\n"))
	}
}

// startContainer runs image detached under a name of the test's and returns the name; the
// test's cleanup removes the container.
func startContainer(t *testing.T, image string, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("healthdns-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
			t.Logf("podman logs %s:\n%s", name, logs)
		}
		exec.Command("podman", "rm", "--force", "--time", "0", name).Run()
	})
	full := append([]string{"run", "--detach", "--name", name}, runFlags(t)...)
	full = append(full, args...)
	run(t, "", nil, "podman", append(full, image)...)
	return name
}

// imageDefault runs the image as it is, with nothing but loopback (--network none), and asks
// it for app.lan from inside its network namespace.
func imageDefault(t *testing.T, image string) {
	name := startContainer(t, image, "--network", "none")
	pid := strings.TrimSpace(run(t, "", nil, "podman", "inspect", "--format", "{{.State.Pid}}", name))
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("coredns (pid %s) is not running: %v", pid, err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fields[k] = strings.TrimSpace(v)
	}
	if uid := strings.Fields(fields["Uid"]); len(uid) == 0 || slices.ContainsFunc(uid, func(id string) bool { return id != "65532" }) {
		t.Errorf("coredns runs as uids %q, want 65532 only", fields["Uid"])
	}
	if eff, err := strconv.ParseUint(fields["CapEff"], 16, 64); err != nil || eff != capNetBindService|capNetRaw {
		t.Errorf("coredns's effective capabilities are %s, want NET_BIND_SERVICE and NET_RAW only (%x)", fields["CapEff"], capNetBindService|capNetRaw)
	}

	ns := "healthdns-test-" + pid
	run(t, "", nil, "ip", "netns", "attach", ns, pid)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	var last string
	answered := harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		var r *dns.Msg
		err := netlab.InNamespace(ns, func() error {
			conn, err := net.DialTimeout("udp", "127.0.0.1:53", time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			m := new(dns.Msg)
			m.SetQuestion("app.lan.", dns.TypeA)
			c := dns.Client{Timeout: time.Second}
			r, _, err = c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
			return err
		})
		if err != nil {
			last = err.Error()
			return false
		}
		last = r.String()
		return harness.SameSet(harness.AnswerAddrs(r), "127.0.0.1")
	})
	if !answered {
		t.Fatalf("the image's default Corefile did not answer app.lan with 127.0.0.1 on port 53 within 30s; last: %s", last)
	}
}

// imageReload runs the image on the host's network with the test's Corefile mounted, checks
// that it serves it, changes the Corefile, reloads with SIGUSR1 and sees the change, and stops
// the container.
func imageReload(t *testing.T, image string) {
	backendPort, _ := harness.StartBackends(t, imageBackendA, imageBackendB)
	dnsPort := harness.FreePort(t, imageServer)
	confDir := t.TempDir()
	if err := os.Chmod(confDir, 0o755); err != nil { // the container's user is not root
		t.Fatal(err)
	}
	corefile := func(backends ...string) string {
		return fmt.Sprintf("app.lan:%d {\n bind %s\n%s errors\n}\n", dnsPort, imageServer,
			harness.TCPPool("", backendPort, "500ms", "400ms", backends, "answers 8"))
	}
	writeFile(t, filepath.Join(confDir, "Corefile"), corefile(imageBackendA))
	name := startContainer(t, image, "--network", "host", "--volume", confDir+":/etc/coredns:ro")

	server := net.JoinHostPort(imageServer, strconv.Itoa(dnsPort))
	answers := func(want ...string) bool {
		m := new(dns.Msg)
		m.SetQuestion("app.lan.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, server)
		return err == nil && harness.SameSet(harness.AnswerAddrs(r), want...)
	}
	harness.Eventually(t, 30*time.Second, func() bool { return answers(imageBackendA) }, "the container to answer app.lan with ", imageBackendA)

	writeFile(t, filepath.Join(confDir, "Corefile"), corefile(imageBackendA, imageBackendB))
	run(t, "", nil, "podman", "kill", "--signal", "USR1", name)
	harness.Eventually(t, 30*time.Second, func() bool { return answers(imageBackendA, imageBackendB) },
		"the reloaded container to answer app.lan with ", imageBackendA, " and ", imageBackendB)

	run(t, "", nil, "podman", "stop", "--time", "20", name)
	state := strings.TrimSpace(run(t, "", nil, "podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name))
	if state != "exited 0" {
		t.Errorf("after podman stop the container is %q, want exited 0", state)
	}
	logs := run(t, "", nil, "podman", "logs", name)
	if !strings.Contains(logs, "SIGTERM") {
		t.Errorf("coredns did not log the SIGTERM podman stop sends:\n%s", logs)
	}
}
