package deploy

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"io"
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
	variant string // of the image's platform
	debArch string // of its Debian package
}

// releaseTargets are the release script's targets: RELEASE_TARGETS's value, as the script
// reads it, and the elf machine, GOARCH and GOARM each binary must have.
var releaseTargets = map[string]releaseTarget{
	"amd64": {"linux-amd64", elf.EM_X86_64, "amd64", "", "", "amd64"},
	"arm64": {"linux-arm64", elf.EM_AARCH64, "arm64", "", "", "arm64"},
	"arm/7": {"linux-armv7", elf.EM_ARM, "arm", "7", "v7", "armhf"},
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
	// Windows's zips are left out unless WINDOWS_TARGETS names them: TestWindowsWine builds
	// the .exe, and two more full builds would double this test's minutes.
	windows := os.Getenv("WINDOWS_TARGETS")
	run(t, repoRoot(t), []string{"RELEASE_TARGETS=" + chosen, "WINDOWS_TARGETS=" + windows}, "sh", "deploy/release.sh", version, dist)

	targets := map[string]releaseTarget{} // by binary name
	images := map[string]releaseTarget{}  // by archive name, where buildah or podman can build them
	_, buildah := exec.LookPath("buildah")
	_, podman := exec.LookPath("podman")
	debs := map[string]string{} // the Debian package of each binary: its architecture
	var ctls []string           // healthdnsctl beside each binary
	for _, target := range strings.Fields(chosen) {
		spec, ok := releaseTargets[target]
		if !ok {
			t.Fatalf("RELEASE_TARGETS names %q, which the script would have refused", target)
		}
		targets["coredns-healthdns-"+version+"-"+spec.suffix] = spec
		if buildah == nil || podman == nil {
			images["healthdns-image-"+version+"-"+spec.suffix+".oci.tar"] = spec
		}
		// v9.8.7-test is a pre-release: 9.8.7~test sorts before 9.8.7.
		debs["healthdns_9.8.7~test-1_"+spec.debArch+".deb"] = spec.debArch
		ctls = append(ctls, "healthdnsctl-"+version+"-"+spec.suffix)
	}
	for name, want := range images {
		checkImageArchive(t, filepath.Join(dist, name), imageRepo+":"+version, want)
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
	for name := range images {
		if !listed[name] {
			t.Errorf("SHA256SUMS does not list %s", name)
		}
	}

	for _, name := range ctls {
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
		if contents := run(t, dist, nil, "dpkg-deb", "--contents", deb); !strings.Contains(contents, "./usr/bin/healthdnsctl\n") {
			t.Errorf("%s holds no /usr/bin/healthdnsctl:\n%s", deb, contents)
		}
	}

	zips := strings.Fields(windows)
	for _, arch := range zips {
		checkWindowsZip(t, filepath.Join(dist, "coredns-healthdns-"+version+"-windows-"+arch+".zip"), arch, version)
		if name := "coredns-healthdns-" + version + "-windows-" + arch + ".zip"; !listed[name] {
			t.Errorf("SHA256SUMS does not list %s", name)
		}
	}
	if len(listed) != len(targets)+len(ctls)+len(images)+len(zips)+len(debs) {
		t.Errorf("SHA256SUMS lists %d files, want the %d binaries, %d healthdnsctl, %d images, %d zips and %d packages built", len(listed), len(targets), len(ctls), len(images), len(zips), len(debs))
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

// checkImageArchive reads an OCI archive of the release: one image, named ref, for the target's
// architecture and variant.
func checkImageArchive(t *testing.T, path, ref string, want releaseTarget) {
	t.Helper()
	blobs := map[string][]byte{} // the archive's files, by name
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("image archive: %v", err)
		return
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if h.Typeflag == tar.TypeReg && (h.Name == "index.json" || strings.HasPrefix(h.Name, "blobs/sha256/") && h.Size < 1<<20) {
			if blobs[h.Name], err = io.ReadAll(tr); err != nil {
				t.Errorf("%s: %s: %v", path, h.Name, err)
				return
			}
		}
	}
	type descriptor struct {
		Digest      string
		Annotations map[string]string
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Errorf("%s: index.json holds %d images (%v), want one", path, len(index.Manifests), err)
		return
	}
	if name := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; name != ref {
		t.Errorf("%s: the image is named %q, want %s", path, name, ref)
	}
	blob := func(digest string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")] }
	var manifest struct{ Config descriptor }
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil {
		t.Errorf("%s: manifest: %v", path, err)
		return
	}
	var config struct{ OS, Architecture, Variant string }
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Errorf("%s: config: %v", path, err)
		return
	}
	if config.OS != "linux" || config.Architecture != want.goarch || config.Variant != want.variant {
		t.Errorf("%s: image for %s/%s/%s, want linux/%s/%s", path, config.OS, config.Architecture, config.Variant, want.goarch, want.variant)
	}
}

// checkWindowsZip checks that a release zip holds the README, healthdnsctl.exe and a Windows
// executable for arch, stamped with version.
func checkWindowsZip(t *testing.T, path, arch, version string) {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	defer z.Close()
	exe := strings.TrimSuffix(filepath.Base(path), ".zip") + ".exe"
	machine := map[string]uint16{"amd64": pe.IMAGE_FILE_MACHINE_AMD64, "arm64": pe.IMAGE_FILE_MACHINE_ARM64}[arch]
	found := map[string]bool{}
	for _, f := range z.File {
		found[f.Name] = true
		if f.Name != exe {
			continue
		}
		r, err := f.Open()
		if err != nil {
			t.Fatalf("%s: %s: %v", path, exe, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %s: %v", path, exe, err)
		}
		p, err := pe.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s: %s is not a Windows executable: %v", path, exe, err)
			continue
		}
		if p.Machine != machine {
			t.Errorf("%s: %s is for machine %#x, want %#x (%s)", path, exe, p.Machine, machine, arch)
		}
		if !bytes.Contains(b, []byte(version)) {
			t.Errorf("%s: %s: version %s not stamped", path, exe, version)
		}
	}
	for _, want := range []string{exe, "healthdnsctl.exe", "README.md"} {
		if !found[want] {
			t.Errorf("%s holds no %s", path, want)
		}
	}
}
