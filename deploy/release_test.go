package deploy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRelease runs the release script: it cross-compiles the three targets, so it also shows
// that healthdns builds for arm64 and arm/v7 without cgo.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the release builds coredns for three platforms (seconds each on a warm build cache, minutes on a cold one)")
	}
	const version = "v9.8.7-test"
	dist := t.TempDir()
	run(t, repoRoot(t), nil, "sh", "deploy/release.sh", version, dist)

	targets := map[string]struct {
		machine elf.Machine
		goarch  string
		goarm   string
	}{
		"coredns-healthdns-" + version + "-linux-amd64": {elf.EM_X86_64, "amd64", ""},
		"coredns-healthdns-" + version + "-linux-arm64": {elf.EM_AARCH64, "arm64", ""},
		"coredns-healthdns-" + version + "-linux-armv7": {elf.EM_ARM, "arm", "7"},
	}
	for name, want := range targets {
		path := filepath.Join(dist, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if f.Machine != want.machine {
			t.Errorf("%s: machine %s, want %s", name, f.Machine, want.machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not static", name)
			}
		}
		f.Close()
		info, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["GOARCH"] != want.goarch || settings["GOARM"] != want.goarm {
			t.Errorf("%s built with %v", name, settings)
		}
		// -trimpath keeps -ldflags out of the build info: look for the stamped string itself.
		if b, err := os.ReadFile(path); err != nil || !bytes.Contains(b, []byte(version)) {
			t.Errorf("%s: version %s not stamped (%v)", name, version, err)
		}
	}

	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: cannot read %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatalf("SHA256SUMS lists %s: %v", name, err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	for name := range targets {
		if !listed[name] {
			t.Errorf("SHA256SUMS does not list %s", name)
		}
	}

	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("cannot run the amd64 binary on %s/%s to read its version", runtime.GOOS, runtime.GOARCH)
	}
	out, err := exec.Command(filepath.Join(dist, "coredns-healthdns-"+version+"-linux-amd64"), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("-version: %v\n%s", err, out)
	}
	if first := strings.SplitN(string(out), "\n", 2)[0]; !strings.HasPrefix(first, "CoreDNS-") || !strings.HasSuffix(first, "+healthdns-"+version) {
		t.Errorf("-version printed %q first, want CoreDNS-<version>+healthdns-%s", first, version)
	}
}
