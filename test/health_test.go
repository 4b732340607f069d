package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func fastPool(zone string, port int, extra string, backends ...string) string {
	return fmt.Sprintf(` healthdns %s {
  backend %s
  check tcp %d
  interval 200ms
  timeout 100ms
  fall 2
  rise 2
  answers 8
  %s
 }
`, zone, strings.Join(backends, "\n  backend "), port, extra)
}

// TestFailover stops a backend's service and watches it leave the answers, then starts it and
// watches it return. It logs the measured removal time: the bound is fall × interval + timeout
// (500ms here) plus up to one interval of phase.
func TestFailover(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.41", "127.0.0.42")
	newBackend(t, "127.0.0.41", port)
	victim := newBackend(t, "127.0.0.42", port)
	s := startServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n prometheus 127.0.0.1:{{HTTP}}\n"+fastPool("fo.lan", port, "", "127.0.0.41", "127.0.0.42")+"}\n"))

	if got := s.addrs("fo.lan."); len(got) != 2 {
		t.Fatalf("before: %v", got)
	}
	victim.stop()
	stopped := time.Now()
	var removal time.Duration
	for {
		got := s.addrs("fo.lan.")
		if !contains(got, "127.0.0.42") {
			removal = time.Since(stopped)
			if !contains(got, "127.0.0.41") {
				t.Fatalf("the live backend left too: %v", got)
			}
			break
		}
		if time.Since(stopped) > 5*time.Second {
			t.Fatalf("dead backend still answered after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("failover: %s (interval 200ms, timeout 100ms, fall 2)", removal.Round(time.Millisecond))

	victim.start()
	eventually(t, 5*time.Second, "the backend to return", func() bool { return contains(s.addrs("fo.lan."), "127.0.0.42") })

	out := s.out.String()
	if n := strings.Count(out, "backend 127.0.0.42: down:"); n != 1 {
		t.Errorf("%d down lines for 127.0.0.42, want 1", n)
	}
	if n := strings.Count(out, "backend 127.0.0.42: up:"); n != 1 {
		t.Errorf("%d up lines for 127.0.0.42, want 1", n)
	}
	check := fmt.Sprintf("tcp :%d", port)
	for _, to := range []string{"down", "up"} {
		if v, _ := s.metric(fmt.Sprintf(`coredns_healthdns_transitions_total{backend="127.0.0.42",check="%s",to="%s"}`, check, to)); v != 1 {
			t.Errorf("transitions to %s: %v, want 1", to, v)
		}
	}
}

// TestFirstAnswerIsTrue queries from the moment the process starts: the first answer it gives
// must already leave out the backend that is down.
func TestFirstAnswerIsTrue(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.43", "127.0.0.44")
	newBackend(t, "127.0.0.43", port) // 127.0.0.44 never listens
	s := newServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n"+fastPool("first.lan", port, "", "127.0.0.43", "127.0.0.44")+"}\n"))
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	c := &dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("first.lan.", dns.TypeA)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, _, err := c.Exchange(m, s.addr)
		if err == nil {
			if got := addrs(r); len(got) != 1 || got[0] != "127.0.0.43" {
				t.Fatalf("first answer %v, want only the live 127.0.0.43", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer: %v", err)
		}
	}
}

// TestAllDownThenBack takes every backend down, then brings one back.
func TestAllDownThenBack(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.45", "127.0.0.46")
	a := newBackend(t, "127.0.0.45", port)
	b := newBackend(t, "127.0.0.46", port)
	s := startServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n prometheus 127.0.0.1:{{HTTP}}\n"+
		fastPool("alldown.lan", port, "all_down servfail", "127.0.0.45", "127.0.0.46")+
		fastPool("allopen.lan", port, "all_down serve_all", "127.0.0.45", "127.0.0.46")+"}\n"))

	a.stop()
	b.stop()
	eventually(t, 5*time.Second, "SERVFAIL with every backend down", func() bool {
		return s.query("udp", "alldown.lan.", dns.TypeA).Rcode == dns.RcodeServerFailure
	})
	if got := s.addrs("allopen.lan."); len(got) != 2 {
		t.Errorf("serve_all with every backend down: %v, want both configured", got)
	}
	for _, zone := range []string{"alldown.lan.", "allopen.lan."} {
		if v, _ := s.metric(`coredns_healthdns_all_down_total{family="ipv4",zone="` + zone + `"}`); v != 1 {
			t.Errorf("all_down_total for %s: %v, want 1", zone, v)
		}
	}
	if !strings.Contains(s.out.String(), "zone alldown.lan.: every ipv4 backend is down (2 configured): all_down servfail") {
		t.Error("the all-down event was not logged")
	}

	b.start()
	eventually(t, 5*time.Second, "answers again", func() bool {
		r := s.query("udp", "alldown.lan.", dns.TypeA)
		return r.Rcode == dns.RcodeSuccess && len(addrs(r)) == 1 && addrs(r)[0] == "127.0.0.46"
	})
	if got := s.addrs("allopen.lan."); len(got) != 1 || got[0] != "127.0.0.46" {
		t.Errorf("serve_all after one came back: %v, want only 127.0.0.46", got)
	}
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.47", "127.0.0.48", "127.0.0.49")
	for _, ip := range []string{"127.0.0.47", "127.0.0.48", "127.0.0.49"} {
		newBackend(t, ip, port)
	}
	s := startServer(t, corefile(fmt.Sprintf(`.:{{DNS}} {
 bind 127.0.0.1
 healthdns rr.lan {
  backend 127.0.0.47
  backend 127.0.0.48
  backend 127.0.0.49
  check tcp %[1]d
  policy round_robin
 }
 healthdns w.lan {
  backend 127.0.0.47 weight 9
  backend 127.0.0.48 weight 1
  check tcp %[1]d
  policy weighted
 }
}
`, port)))

	t.Run("round_robin cycles", func(t *testing.T) {
		var order []string
		for range 12 {
			got := s.addrs("rr.lan.")
			if len(got) != 1 {
				t.Fatalf("answer %v", got)
			}
			order = append(order, got[0])
		}
		for i := 3; i < len(order); i++ {
			if order[i] != order[i-3] || order[i] == order[i-1] {
				t.Fatalf("not a cycle of 3: %v", order)
			}
		}
	})
	t.Run("weighted 9:1", func(t *testing.T) {
		counts := map[string]int{}
		const n = 1000
		for range n {
			counts[s.addrs("w.lan.")[0]]++
		}
		// Expected 0.9, standard deviation 0.0095 over 1000 draws: ±5 sd.
		if share := float64(counts["127.0.0.47"]) / n; share < 0.85 || share > 0.95 {
			t.Errorf("weight 9 got %.3f of answers (%v), want about 0.9", share, counts)
		}
	})
}

func TestReady(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.50")
	newBackend(t, "127.0.0.50", port)
	s := startServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n ready 127.0.0.1:{{HTTP}}\n"+fastPool("ready.lan", port, "", "127.0.0.50")+"}\n"))
	eventually(t, 5*time.Second, "/ready to return 200", func() bool {
		resp, err := http.Get("http://" + s.httpAddr + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
