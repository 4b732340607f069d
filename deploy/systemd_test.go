package deploy

import (
	"bufio"
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
		"ExecReload":              "/bin/kill -USR1 $MAINPID",
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
