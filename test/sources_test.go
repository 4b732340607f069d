package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// TestBackendsFile runs the real binary on a backends_file and changes the file in every way an
// operator or a config manager does: each change is answered within a second or so (the time
// each took is logged), and a file that breaks or disappears keeps the last good list.
func TestBackendsFile(t *testing.T) {
	t.Parallel()
	const a, b, c, d = "127.0.1.100", "127.0.1.101", "127.0.1.102", "127.0.1.103"
	port, backends := harness.StartBackends(t, a, b, c, d)
	dir := t.TempDir()
	list := filepath.Join(dir, "live.lan.backends")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(list, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# the first list\n" + a + "\n\n" + b + " weight 2 # trailing comment\n")
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.TCPPool("live.lan", port, "100ms", "50ms", nil, "backends_file "+list, "answers 8")+"}\n")
	serving := func() []string { return s.Addrs(t, "udp", "live.lan.", dns.TypeA) }
	seen := func(what string, ips ...string) {
		t.Helper()
		start := time.Now()
		harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(serving(), ips...) }, what, ": want ", ips)
		t.Logf("%s: answered after %s", what, time.Since(start).Round(time.Millisecond))
	}
	seen("the first list", a, b)

	write(a + "\n" + b + "\n" + c + "\n")
	seen("a backend added in place", a, b, c)

	transitions := func(ip string) float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_transitions_total", map[string]string{"backend": ip, "to": "down"})
		return v
	}
	backends[c].Stop()
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(serving(), a, b) }, "the stopped backend out")
	downs := transitions(c)
	if downs != 1 {
		t.Fatalf("%s went down %v times, want 1", c, downs)
	}

	// Replaced by an atomic rename, as editors and config managers write: a is removed, the
	// stopped c stays (with its state: down, its transition counted once), d is new.
	tmp := filepath.Join(dir, ".live.lan.backends.tmp")
	if err := os.WriteFile(tmp, []byte(b+"\n"+c+" weight 3\n"+d+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, list); err != nil {
		t.Fatal(err)
	}
	seen("an atomic rename removing one, adding one", b, d)
	if got := transitions(c); got != downs {
		t.Errorf("the staying backend %s's down transitions went from %v to %v: its state was not kept", c, downs, got)
	}
	m := s.Scrape(t)
	if got := m.Find("coredns_healthdns_backend_up", map[string]string{"backend": a}); len(got) != 0 {
		t.Errorf("the removed backend %s still has backend_up series: %v", a, got)
	}
	backends[c].Start()
	seen("the stopped backend back", b, c, d)

	// Priority: only the highest group serves. Then a drain with an end in a few seconds.
	write(b + "\n" + c + " priority 200\n" + d + " priority 200\n")
	seen("a priority change", c, d)
	until := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	write(b + "\n" + c + " priority 200 drain until " + until.Format(time.RFC3339) + " kernel upgrade\n" + d + " priority 200\n")
	seen("a drain with an end", d)
	info := s.Scrape(t).Find("coredns_healthdns_backend_drain_info", map[string]string{"zone": "live.lan", "backend": c})
	if len(info) != 1 || info[0].Labels["reason"] != "kernel upgrade" || info[0].Labels["until"] != until.Format(time.RFC3339) || info[0].Labels["by"] != "config" {
		t.Errorf("backend_drain_info of the drained %s: %+v, want its reason and end", c, info)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), c, d) }, "the drain to end at ", until)
	if time.Now().Before(until) {
		t.Errorf("the drained backend was answered before its drain's end %s", until)
	}
	write(b + "\n" + c + " priority 200 drain\n" + d + " priority 200 drain\n")
	seen("a drain without end of the whole group: the next group serves", b)
	if info := s.Scrape(t).Find("coredns_healthdns_backend_drain_info", map[string]string{"zone": "live.lan", "backend": c}); len(info) != 1 || info[0].Labels["until"] != "" || info[0].Labels["reason"] != "" {
		t.Errorf("backend_drain_info after the drain changed: %+v, want one series, with neither reason nor end", info)
	}

	// A broken file keeps the last good list, and says where it is broken.
	errorsTotal := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_source_errors_total", map[string]string{"zone": "live.lan.", "source": "file"})
		return v
	}
	write(b + "\n" + a + " weight heavy\n")
	harness.Eventually(t, 5*time.Second, func() bool { return errorsTotal() == 1 }, "the broken file counted")
	if !harness.SameSet(serving(), b) {
		t.Errorf("after a broken file: %v, want the last good list's %s", serving(), b)
	}
	// The log comes through a pipe the harness reads on its own goroutine: waited for, as the
	// metric may come first.
	badLine := regexp.MustCompile(regexp.QuoteMeta(list + ":2: invalid weight 'heavy'"))
	if !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return len(harness.LinesMatching(s.Output(), badLine)) > 0 }) {
		t.Errorf("no log line names the file, line and error:\n%s", s.Output())
	}
	if err := os.Remove(list); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return errorsTotal() == 2 }, "the deleted file counted")
	if !harness.SameSet(serving(), b) {
		t.Errorf("after the file was deleted: %v, want the last good list's %s", serving(), b)
	}
	write(a + "\n")
	seen("the file written again", a)
	if v, ok := s.Scrape(t).Value("coredns_healthdns_source_last_load_timestamp_seconds", map[string]string{"zone": "live.lan.", "source": "file"}); !ok || time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("source_last_load_timestamp_seconds %v (found %v), want a moment ago", v, ok)
	}
	if !strings.Contains(s.Output(), "[ERROR] plugin/healthdns: zone live.lan.: backends_file: ") {
		t.Errorf("no error line for the failed loads")
	}
	if v, ok := s.Scrape(t).Value("coredns_healthdns_source_last_error_timestamp_seconds", map[string]string{"zone": "live.lan.", "source": "file"}); !ok || time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("source_last_error_timestamp_seconds %v (found %v), want a moment ago", v, ok)
	}
}

// TestBackendsFileBadAtStartup: a backends file that does not parse fails startup, naming the
// Corefile's line and the file's.
func TestBackendsFileBadAtStartup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	list := filepath.Join(dir, "bad.backends")
	if err := os.WriteFile(list, []byte("127.0.1.104\n127.0.1.105 priority 300\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "Corefile")
	text := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n healthdns bad.lan {\n  backends_file %s\n }\n}\n", harness.FreePort(t), list)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, exited, err := runCoreDNS(t, 10*time.Second, "-conf", conf)
	if !exited || err == nil {
		t.Fatalf("coredns started on a bad backends file (exited %v, %v):\n%s", exited, err, out)
	}
	for _, want := range []string{conf + ":4", list + ":2: invalid priority '300'"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	t.Log(harness.LastLine(out))
}

// TestBackendsFileRewrittenInPlace: a writer that truncates the file and pauses before writing
// the new list (a shell's `>` redirection, then a slow command) changes the answers from the old
// list to the new one, without a NODATA in between: the truncation alone is not applied.
func TestBackendsFileRewrittenInPlace(t *testing.T) {
	t.Parallel()
	const a, b, c = "127.0.6.1", "127.0.6.2", "127.0.6.3"
	port, _ := harness.StartBackends(t, a, b, c)
	list := filepath.Join(t.TempDir(), "inplace.lan.backends")
	if err := os.WriteFile(list, []byte(a+"\n"+b+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("inplace.lan", port, "100ms", "50ms", nil, "backends_file "+list, "answers 8")+"}\n")
	serving := func() []string { return s.Addrs(t, "udp", "inplace.lan.", dns.TypeA) }
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), a, b) }, "the first list: want ", a, " and ", b)

	// Queries in a loop, from before the truncation until the new list is answered.
	stop, done := make(chan struct{}), make(chan struct{})
	var queries, nodata, failed int
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := s.Try("udp", "inplace.lan.", dns.TypeA, time.Second)
			queries++
			switch {
			case err != nil:
				failed++ // a lost datagram on a busy machine says nothing of the answers
			case r.Rcode == dns.RcodeSuccess && len(r.Answer) == 0:
				nodata++
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	out, err := os.OpenFile(list, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A writer that is slow between truncating and writing, not a wait for a state: far longer
	// than the 50 ms the watcher waits for a burst of writes to settle.
	time.Sleep(500 * time.Millisecond)
	if _, err := out.WriteString(a + "\n" + b + "\n" + c + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), a, b, c) }, "the rewritten list: want ", a, ", ", b, " and ", c)
	close(stop)
	<-done
	t.Logf("%d queries during the rewrite, %d unanswered", queries, failed)
	if nodata > 0 {
		t.Errorf("%d of %d queries got NODATA while the file was rewritten in place", nodata, queries)
	}
}

// TestBackendsFileReplacedByAFIFO: a FIFO renamed over the backends file, which nobody writes,
// once blocked the source in open(): the reload that followed never finished, and SIGTERM went
// unanswered. Now the FIFO is refused and logged while the last good list serves, a reload
// fails at the backends_file line instead of hanging, the list comes back when a regular file
// does, and the server stops on SIGTERM (the harness's cleanup fails the test if it does not).
func TestBackendsFileReplacedByAFIFO(t *testing.T) {
	t.Parallel()
	const a, b = "127.0.7.1", "127.0.7.2"
	port, _ := harness.StartBackends(t, a, b)
	dir := t.TempDir()
	list := filepath.Join(dir, "fifo.lan.backends")
	if err := os.WriteFile(list, []byte(a+"\n"+b+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n" +
		harness.TCPPool("fifo.lan", port, "100ms", "50ms", nil, "backends_file "+list, "answers 8") + "}\n"
	s := harness.Start(t, conf)
	serving := func() []string { return s.Addrs(t, "udp", "fifo.lan.", dns.TypeA) }
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), a, b) }, "the first list: want ", a, " and ", b)

	fifo := filepath.Join(dir, ".fifo.lan.backends.tmp")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, list); err != nil {
		t.Fatal(err)
	}
	// Should coredns block in open() anyway, a writer that comes and goes at the end releases
	// it, so that the test fails on its assertions rather than hanging the cleanup.
	t.Cleanup(func() {
		if f, err := os.OpenFile(list, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	refused := regexp.MustCompile(regexp.QuoteMeta("[ERROR] plugin/healthdns: zone fifo.lan.: backends_file: " + list + " is a named pipe (FIFO): not a regular file; keeping the last good list (2 from it)"))
	if !harness.Poll(10*time.Second, 10*time.Millisecond, func() bool { return len(harness.LinesMatching(s.Output(), refused)) > 0 }) {
		t.Fatalf("no log line refuses the FIFO and keeps the last good list")
	}
	if got := serving(); !harness.SameSet(got, a, b) {
		t.Errorf("with a FIFO at the path: %v, want the last good list's %s and %s", got, a, b)
	}

	// The new instance reads the file at setup: the reload fails there, and the running one
	// keeps serving.
	err := s.Reload(t, conf)
	if err == nil || !strings.Contains(err.Error(), "backends_file: "+list+" is a named pipe (FIFO)") {
		t.Fatalf("reload with a FIFO at the backends file: %v, want it refused at the backends_file line", err)
	}
	if got := serving(); !harness.SameSet(got, a, b) {
		t.Errorf("after the failed reload: %v, want the last good list's %s and %s", got, a, b)
	}

	// A regular file again: the running source and the next reload both take it.
	tmp := filepath.Join(dir, ".fifo.lan.backends.new")
	if err := os.WriteFile(tmp, []byte(a+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, list); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), a) }, "the regular file's list: want ", a)
	if err := s.Reload(t, conf); err != nil {
		t.Fatalf("reload with a regular backends file: %v", err)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(serving(), a) }, "after the reload: want ", a)
}
