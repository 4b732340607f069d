package deploy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const unitFile = "deploy/systemd/healthdns.service"

// unitSettings reads a unit file into section → key → values (a key may repeat).
func unitSettings(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	var section string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read %q", unitFile, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	text := readFile(t, unitFile)
	svc := unitSettings(t, text)["Service"]
	for key, want := range map[string]string{
		"ExecStart":               "/usr/local/bin/coredns -conf /etc/coredns/Corefile",
		"ExecReload":              `/bin/sh -c 'kill -USR1 "$MAINPID"'`,
		"Type":                    "exec",
		"Restart":                 "on-failure",
		"DynamicUser":             "yes",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE CAP_NET_RAW",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE CAP_NET_RAW",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
		// A bound on CoreDNS's threads and the processes its exec scripts start: a script
		// that forks without end takes the unit's tasks, not the host's.
		"TasksMax": "1024",
		// A credential named, not a path: systemd looks for it in /etc/credstore/ and starts
		// the unit without it when it is not there.
		"LoadCredential": "status.token",
		// The state file's directory: the only one the dynamic user may write, kept across
		// restarts.
		"StateDirectory": "healthdns",
	} {
		if got := svc[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter=%q, want @system-service among them", svc["SystemCallFilter"])
	}

	// systemd-analyze verify checks the unit as systemd would load it, and needs the binary of
	// ExecStart to exist: a copy of the unit runs a stub instead of /usr/local/bin/coredns.
	analyze := lookTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	stub := filepath.Join(dir, "coredns")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "healthdns.service")
	writeFile(t, unit, strings.ReplaceAll(text, "/usr/local/bin/coredns", stub))
	// It exits 0 on unknown keys and values it cannot parse, and says so: any line about the
	// unit is a failure.
	out := run(t, dir, []string{"SYSTEMD_LOG_COLOR=0"}, analyze, "verify", unit)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "healthdns.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// privilegeLeaks says what in a unit's [Service] would let the service hold more than
// CAP_NET_BIND_SERVICE and CAP_NET_RAW as a user of its own: test/lab's TestLeastPrivilege runs
// the binary with exactly the unit's AmbientCapabilities, so these are what it does not see.
func privilegeLeaks(svc map[string][]string) []string {
	var leaks []string
	want := "CAP_NET_BIND_SERVICE CAP_NET_RAW"
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if v := svc[key]; len(v) != 1 || strings.Join(strings.Fields(v[0]), " ") != want {
			leaks = append(leaks, fmt.Sprintf("%s=%q, want exactly %s", key, v, want))
		}
	}
	for key, want := range map[string]string{"DynamicUser": "yes", "NoNewPrivileges": "yes"} {
		if v := svc[key]; len(v) != 1 || v[0] != want {
			leaks = append(leaks, fmt.Sprintf("%s=%q, want %s", key, v, want))
		}
	}
	// A user named (root, or one with capabilities of its own), securebits that keep
	// capabilities across exec, or the old switch that ran the start as root.
	for _, key := range []string{"User", "Group", "SecureBits", "PermissionsStartOnly"} {
		if v, ok := svc[key]; ok {
			leaks = append(leaks, fmt.Sprintf("%s=%q is set", key, v))
		}
	}
	// A command prefixed + or ! runs with full privileges, whatever the unit's sandbox says.
	for key, cmds := range svc {
		if !strings.HasPrefix(key, "Exec") {
			continue
		}
		for _, cmd := range cmds {
			if prefix := strings.TrimLeft(cmd, "-:@|"); strings.HasPrefix(prefix, "+") || strings.HasPrefix(prefix, "!") {
				leaks = append(leaks, fmt.Sprintf("%s=%s runs with full privileges", key, cmd))
			}
		}
	}
	slices.Sort(leaks)
	return leaks
}

// The shipped unit grants the service CAP_NET_BIND_SERVICE and CAP_NET_RAW and nothing else, and
// the check refuses each way a unit could grant more.
func TestSystemdUnitLeastPrivilege(t *testing.T) {
	text := readFile(t, unitFile)
	if leaks := privilegeLeaks(unitSettings(t, text)["Service"]); len(leaks) > 0 {
		t.Errorf("%s grants more than it should:\n%s", unitFile, strings.Join(leaks, "\n"))
	}
	for _, change := range []struct{ from, to string }{
		{"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_NET_ADMIN"},
		{"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "AmbientCapabilities=CAP_NET_BIND_SERVICE"},
		{"CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW", "CapabilityBoundingSet=~CAP_SYS_ADMIN"},
		{"DynamicUser=yes", "User=root"},
		{"NoNewPrivileges=yes", "NoNewPrivileges=no"},
		{"ExecStart=/usr/local/bin/coredns", "ExecStart=+/usr/local/bin/coredns"},
		{"ExecReload=/bin/sh", "ExecReload=-!/bin/sh"},
		{"UMask=0077", "UMask=0077\nSecureBits=keep-caps"},
	} {
		if !strings.Contains(text, change.from) {
			t.Fatalf("%s no longer holds %q", unitFile, change.from)
		}
		changed := strings.Replace(text, change.from, change.to, 1)
		if leaks := privilegeLeaks(unitSettings(t, changed)["Service"]); len(leaks) == 0 {
			t.Errorf("a unit with %q passes", change.to)
		}
	}
}
