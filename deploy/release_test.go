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

type releaseTarget struct {
	suffix  string // of the binary's name
	machine elf.Machine
	goarch  string
	goarm   string
	debArch string // of its Debian package
}

// releaseTargets are the release script's targets: RELEASE_TARGETS's value, as the script
// reads it, and the elf machine, GOARCH and GOARM each binary must have.
var releaseTargets = map[string]releaseTarget{
	"amd64": {"linux-amd64", elf.EM_X86_64, "amd64", "", "amd64"},
	"arm64": {"linux-arm64", elf.EM_AARCH64, "arm64", "", "arm64"},
	"arm/7": {"linux-armv7", elf.EM_ARM, "arm", "7", "armhf"},
}

// TestRelease runs the release script for one target, this machine's (amd64 elsewhere), whose
// binary it can run: a full build of coredns takes a minute or more on a busy machine, and the
// script is the same for every target. The release itself builds all three; to check them all
// here, as before a release, give them:
//
//	RELEASE_TARGETS="amd64 arm64 arm/7" go test -count=1 -run TestRelease ./deploy
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the release builds coredns (seconds on a warm build cache, minutes on a cold one)")
	}
	chosen := os.Getenv("RELEASE_TARGETS")
	if chosen == "" {
		chosen = "amd64"
		for target, spec := range releaseTargets {
			if runtime.GOOS == "linux" && spec.goarch == runtime.GOARCH {
				chosen = target
			}
		}
	}
	const version = "v9.8.7-test"
	dist := t.TempDir()
	run(t, repoRoot(t), []string{"RELEASE_TARGETS=" + chosen}, "sh", "deploy/release.sh", version, dist)

	targets := map[string]releaseTarget{} // by binary name
	debs := map[string]string{}           // the Debian package of each binary: its architecture
	for _, target := range strings.Fields(chosen) {
		spec, ok := releaseTargets[target]
		if !ok {
			t.Fatalf("RELEASE_TARGETS names %q, which the script would have refused", target)
		}
		targets["coredns-healthdns-"+version+"-"+spec.suffix] = spec
		// v9.8.7-test is a pre-release: 9.8.7~test sorts before 9.8.7.
		debs["healthdns_9.8.7~test-1_"+spec.debArch+".deb"] = spec.debArch
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
	for deb, arch := range debs {
		if !listed[deb] {
			t.Errorf("SHA256SUMS does not list %s", deb)
			continue
		}
		fields := run(t, dist, nil, "dpkg-deb", "--field", deb, "Package", "Version", "Architecture")
		if want := "Package: healthdns\nVersion: 9.8.7~test-1\nArchitecture: " + arch + "\n"; fields != want {
			t.Errorf("%s's control file says\n%swant\n%s", deb, fields, want)
		}
	}

	if len(listed) != len(targets)+len(debs) {
		t.Errorf("SHA256SUMS lists %d files, want the %d binaries and %d packages built", len(listed), len(targets), len(debs))
	}

	native := ""
	for name, spec := range targets {
		if runtime.GOOS == "linux" && spec.goarch == runtime.GOARCH {
			native = name
		}
	}
	if native == "" {
		t.Skipf("no binary built for %s/%s (RELEASE_TARGETS=%q) to run for its version", runtime.GOOS, runtime.GOARCH, chosen)
	}
	out, err := exec.Command(filepath.Join(dist, native), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("-version: %v\n%s", err, out)
	}
	if first := strings.SplitN(string(out), "\n", 2)[0]; !strings.HasPrefix(first, "CoreDNS-") || !strings.HasSuffix(first, "+healthdns-"+version) {
		t.Errorf("-version printed %q first, want CoreDNS-<version>+healthdns-%s", first, version)
	}
}
