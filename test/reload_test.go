package test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestReloadKeepsServing reloads the binary with SIGUSR1 while a client queries without pause:
// every query is answered, added backends appear, removed ones disappear with their metrics,
// and goroutines do not grow across reloads.
func TestReloadKeepsServing(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.81", "127.0.0.82", "127.0.0.83"}
	port := backendPort(t, ips...)
	for _, ip := range ips {
		newBackend(t, ip, port)
	}
	conf := func(backends ...string) corefile {
		return corefile(".:{{DNS}} {\n bind 127.0.0.1\n prometheus 127.0.0.1:{{HTTP}}\n" + fastPool("reload.lan", port, "", backends...) + "}\n")
	}
	s := startServer(t, conf("127.0.0.81", "127.0.0.82"))

	var queries, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &dns.Client{Net: "udp", Timeout: time.Second}
		m := new(dns.Msg)
		m.SetQuestion("reload.lan.", dns.TypeA)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, _, err := c.Exchange(m, s.addr)
			queries.Add(1)
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
				failures.Add(1)
			}
		}
	}()

	s.reload(conf("127.0.0.81", "127.0.0.82", "127.0.0.83"))
	eventually(t, 5*time.Second, "the added backend to answer", func() bool { return len(s.addrs("reload.lan.")) == 3 })
	goroutines, _ := s.metric("go_goroutines ")

	for range 5 {
		s.reload(conf("127.0.0.81", "127.0.0.83"))
		s.reload(conf("127.0.0.81", "127.0.0.82", "127.0.0.83"))
	}
	s.reload(conf("127.0.0.81", "127.0.0.83"))
	if got := s.addrs("reload.lan."); len(got) != 2 || contains(got, "127.0.0.82") {
		t.Errorf("after removing 127.0.0.82: %v", got)
	}
	if _, ok := s.metric(`coredns_healthdns_backend_up{backend="127.0.0.82"`); ok {
		t.Error("the removed backend's backend_up series is still exported")
	}
	if v, ok := s.metric(`coredns_healthdns_backend_up{backend="127.0.0.81",zone="reload.lan."}`); !ok || v != 1 {
		t.Errorf("backend_up of a kept backend: %v %v", v, ok)
	}
	close(stop)
	wg.Wait()

	// Same configuration as when first counted; allow for the runtime's own noise.
	s.reload(conf("127.0.0.81", "127.0.0.82", "127.0.0.83"))
	var after float64
	eventually(t, 5*time.Second, "goroutines to settle", func() bool {
		after, _ = s.metric("go_goroutines ")
		return after <= goroutines+5
	})
	t.Logf("%d queries during 12 reloads, %d failed; goroutines %v before, %v after", queries.Load(), failures.Load(), goroutines, after)
	if failures.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads", failures.Load(), queries.Load())
	}
	if n := countLines(s.out.String(), "backend 127.0.0.81: up (first probe"); n != 1 {
		t.Errorf("127.0.0.81 was probed cold %d times; a reload must adopt its loop", n)
	}
}

// TestReloadWithBadCorefileKeepsServing reloads onto a broken Corefile: the reload fails, the
// old configuration keeps answering.
func TestReloadWithBadCorefileKeepsServing(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.84")
	newBackend(t, "127.0.0.84", port)
	s := startServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n"+fastPool("bad.lan", port, "", "127.0.0.84")+"}\n"))
	s.write(corefile(".:{{DNS}} {\n bind 127.0.0.1\n healthdns bad.lan {\n  backend 127.0.0.300\n }\n}\n"))
	s.cmd.Process.Signal(sigReload)
	eventually(t, 10*time.Second, "the failed reload to be logged", func() bool {
		return containsText(s.out.String(), "invalid address '127.0.0.300'")
	})
	if got := s.addrs("bad.lan."); len(got) != 1 || got[0] != "127.0.0.84" {
		t.Errorf("after a failed reload: %v", got)
	}
}
