package test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// firstReplies asks for name's A over UDP in a tight loop from the moment it is started (before
// the server listens: those queries get no reply), until a reply carries an address. It counts
// the NOERROR replies without an answer that came before: a NODATA for a pool whose list or
// first verdicts are not in yet, which a resolver would cache for the SOA minimum.
type firstReplies struct {
	mu       sync.Mutex
	empty    int
	answered bool
	stop     chan struct{}
	done     chan struct{}
}

func watchFirstReplies(s *harness.Server, name string) *firstReplies {
	w := &firstReplies{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			r, err := s.Try("udp", name, dns.TypeA, 50*time.Millisecond)
			if err != nil {
				time.Sleep(time.Millisecond) // not listening yet: the kernel refuses at once
				continue
			}
			w.mu.Lock()
			switch {
			case len(harness.AnswerAddrs(r)) > 0:
				w.answered = true
			case r.Rcode == dns.RcodeSuccess:
				w.empty++
			}
			answered := w.answered
			w.mu.Unlock()
			if answered {
				return
			}
		}
	}()
	return w
}

// result stops the loop and returns the empty replies counted, and whether an address came.
func (w *firstReplies) result() (int, bool) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.empty, w.answered
}

func (w *firstReplies) isAnswered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answered
}

// checkFirstReplies fails the test when w counted a NODATA before the first address, unless the
// server said it stopped waiting: startup waits for etcd's list and the first verdicts only so
// long (docs/DESIGN.md), and a machine busy enough to make it give up, which it logs, is not
// the defect this looks for.
func checkFirstReplies(t *testing.T, w *firstReplies, output string, what ...any) {
	t.Helper()
	empty, _ := w.result()
	if empty == 0 {
		return
	}
	for _, gaveUp := range []string{"first probes still running after", "no list from the etcd", "no list from it yet"} {
		if strings.Contains(output, gaveUp) {
			t.Logf("%s: %d NOERROR replies without an address, after the server stopped waiting (%q) on a busy machine",
				fmt.Sprint(what...), empty, gaveUp)
			return
		}
	}
	t.Errorf("%s: %d NOERROR replies without an address before the first address; the server's output:\n%s",
		fmt.Sprint(what...), empty, output)
}

// TestBackendsEtcdFirstAnswer: a pool whose only backends are in etcd, with etcd up, answers
// nothing before its list and its backends' first verdicts are in, at startup and when a reload
// adds it: no NODATA comes before the first address. The window was a few milliseconds (the
// list's read), so the server is started three times and the pool added by three reloads.
func TestBackendsEtcdFirstAnswer(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const listed, static = "127.0.2.21", "127.0.2.22"
	port, _ := harness.StartBackends(t, listed, static)
	etcd := harness.StartEtcd(t)
	put(t, etcd.Client(t), "/healthdns/etcdfirst.lan/"+listed, "")
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n" + etcdPool("etcdfirst.lan", etcd.Endpoint(), port) + "}\n"

	const tries = 3
	for i := range tries {
		var w *firstReplies
		s := harness.LaunchWatched(t, conf,
			func(s *harness.Server) {
				if w != nil { // a port clash: Launch starts another process
					w.result()
				}
				w = watchFirstReplies(s, "etcdfirst.lan.")
			},
			func(*harness.Server) bool { return w.isAnswered() })
		checkFirstReplies(t, w, s.Output(), "start ", i+1, " of ", tries)
	}

	without := ".:{{PORT}} {\n bind 127.0.0.1\n" + harness.TCPPool("static.lan", port, "100ms", "50ms", []string{static}) + "}\n"
	with := ".:{{PORT}} {\n bind 127.0.0.1\n" + harness.TCPPool("static.lan", port, "100ms", "50ms", []string{static}) +
		etcdPool("etcdfirst.lan", etcd.Endpoint(), port) + "}\n"
	s := harness.Start(t, without)
	for i := range tries {
		mark := len(s.Output())
		w := watchFirstReplies(s, "etcdfirst.lan.")
		if err := s.Reload(t, with); err != nil {
			t.Fatalf("reload %d adding the etcd pool: %v", i+1, err)
		}
		harness.Eventually(t, 10*time.Second, w.isAnswered, "reload ", i+1, ": an address for etcdfirst.lan.")
		checkFirstReplies(t, w, s.Output()[mark:], "reload ", i+1, " of ", tries)
		if err := s.Reload(t, without); err != nil {
			t.Fatalf("reload %d dropping the etcd pool: %v", i+1, err)
		}
		// Until the dropped pool's last reply, which a query sent before the reload may get.
		harness.Eventually(t, 10*time.Second, func() bool {
			r, err := s.Try("udp", "etcdfirst.lan.", dns.TypeA, time.Second)
			return err == nil && r.Rcode != dns.RcodeSuccess
		}, "etcdfirst.lan. no longer answered after reload ", i+1)
	}
	if n := strings.Count(s.Output(), "no list from the etcd"); n > 0 {
		t.Errorf("startup gave up waiting for etcd's list %d times, with etcd up:\n%s", n, s.Output())
	}
}
