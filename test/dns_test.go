package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// dnsCorefile serves every row of DESIGN.md's DNS table from one server. Backends 127.0.0.11 and
// .12 (and ::1, and .21-.60 for big.lan) listen on the check port; .13 and .71-.73 do not.
func dnsCorefile(port int) corefile {
	var big strings.Builder
	for i := 21; i <= 60; i++ {
		fmt.Fprintf(&big, "  backend 127.0.0.%d\n", i)
	}
	check := fmt.Sprintf("check tcp %d\n  interval 200ms\n  timeout 100ms", port)
	return corefile(fmt.Sprintf(`.:{{DNS}} {
 bind 127.0.0.1
 prometheus 127.0.0.1:{{HTTP}}
 healthdns app.lan {
  backend 127.0.0.11
  backend 127.0.0.12
  backend 127.0.0.13
  answers 8
  %[1]s
 }
 healthdns sub.app.lan {
  backend 127.0.0.12
  %[1]s
 }
 healthdns v6.lan {
  backend ::1
  %[1]s
 }
 healthdns big.lan {
%[2]s  answers 40
  %[1]s
 }
 healthdns ft.lan {
  backend 127.0.0.11
  fallthrough
  %[1]s
 }
 healthdns nsz.lan {
  backend 127.0.0.11
  ns ns1.nsz.lan 127.0.0.53
  %[1]s
 }
 healthdns dead.lan {
  backend 127.0.0.71
  all_down servfail
  %[1]s
 }
 healthdns open.lan {
  backend 127.0.0.72
  all_down serve_all
  %[1]s
 }
 healthdns onward.lan {
  backend 127.0.0.73
  all_down fallthrough
  %[1]s
 }
 hosts {
  127.0.0.99 static.lan
  fallthrough
 }
 whoami
}
`, check, big.String()))
}

func TestDNSBehaviour(t *testing.T) {
	ips := []string{"127.0.0.11", "127.0.0.12", "::1"}
	for i := 21; i <= 60; i++ {
		ips = append(ips, fmt.Sprintf("127.0.0.%d", i))
	}
	port := backendPort(t, ips...)
	for _, ip := range ips {
		newBackend(t, ip, port)
	}
	s := startServer(t, dnsCorefile(port))

	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			q := func(name string, qtype uint16) *dns.Msg {
				t.Helper()
				return s.query(proto, name, qtype)
			}
			t.Run("apex and subdomains answered from the healthy set", func(t *testing.T) {
				for _, name := range []string{"app.lan.", "x.app.lan.", "a.b.c.app.lan."} {
					r := q(name, dns.TypeA)
					mustAuthoritative(t, r, dns.RcodeSuccess)
					got := addrs(r)
					if len(got) != 2 || !contains(got, "127.0.0.11") || !contains(got, "127.0.0.12") {
						t.Errorf("%s: %v, want exactly the healthy 127.0.0.11 and .12", name, got)
					}
					for _, rr := range r.Answer {
						if rr.Header().Ttl != 5 || rr.Header().Name != name {
							t.Errorf("%s: record %v, want TTL 5 and the question's name", name, rr)
						}
					}
				}
			})
			t.Run("case is matched insensitively and echoed", func(t *testing.T) {
				r := q("WwW.ApP.LaN.", dns.TypeA)
				mustAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) == 0 || r.Answer[0].Header().Name != "WwW.ApP.LaN." {
					t.Errorf("answer %v does not echo the question's case", r.Answer)
				}
			})
			t.Run("NODATA with SOA for a family without backends and other types", func(t *testing.T) {
				for _, c := range []struct {
					name  string
					qtype uint16
					zone  string
				}{
					{"app.lan.", dns.TypeAAAA, "app.lan."},
					{"x.app.lan.", dns.TypeMX, "app.lan."},
					{"x.app.lan.", dns.TypeTXT, "app.lan."},
					{"x.app.lan.", dns.TypeSRV, "app.lan."},
					{"x.app.lan.", dns.TypeNS, "app.lan."},
					{"v6.lan.", dns.TypeA, "v6.lan."},
				} {
					r := q(c.name, c.qtype)
					mustNoData(t, r, c.zone)
				}
			})
			t.Run("IPv6 backends answer AAAA", func(t *testing.T) {
				r := q("v6.lan.", dns.TypeAAAA)
				mustAuthoritative(t, r, dns.RcodeSuccess)
				if got := addrs(r); len(got) != 1 || got[0] != "::1" {
					t.Errorf("AAAA v6.lan: %v", got)
				}
			})
			t.Run("SOA and NS at the apex", func(t *testing.T) {
				r := q("app.lan.", dns.TypeSOA)
				mustAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) != 1 {
					t.Fatalf("SOA answer %v", r.Answer)
				}
				soa := r.Answer[0].(*dns.SOA)
				if soa.Ns != "ns.dns.app.lan." || soa.Mbox != "hostmaster.app.lan." || soa.Expire < 604800 || soa.Minttl != 5 ||
					soa.Refresh <= soa.Retry {
					t.Errorf("SOA %v", soa)
				}
				r = q("app.lan.", dns.TypeNS)
				mustAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns.dns.app.lan." {
					t.Fatalf("NS answer %v", r.Answer)
				}
				if got := addrs(q("ns.dns.app.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.1" {
					t.Errorf("the NS host resolves to %v, want the server's own 127.0.0.1", got)
				}
			})
			t.Run("ns override", func(t *testing.T) {
				r := q("nsz.lan.", dns.TypeSOA)
				if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Ns != "ns1.nsz.lan." {
					t.Fatalf("SOA %v", r.Answer)
				}
				if got := addrs(q("ns1.nsz.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.53" {
					t.Errorf("ns1.nsz.lan: %v, want 127.0.0.53", got)
				}
			})
			t.Run("most specific zone wins", func(t *testing.T) {
				if got := addrs(q("x.sub.app.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.12" {
					t.Errorf("x.sub.app.lan: %v, want the sub.app.lan pool", got)
				}
			})
			t.Run("names outside every zone go to the next plugin", func(t *testing.T) {
				if got := addrs(q("static.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.99" {
					t.Errorf("static.lan: %v, want the hosts plugin's 127.0.0.99", got)
				}
				mustWhoami(t, q("other.lan.", dns.TypeA))
				mustWhoami(t, q("xapp.lan.", dns.TypeA))
			})
			t.Run("fallthrough passes NODATA on", func(t *testing.T) {
				mustWhoami(t, q("x.ft.lan.", dns.TypeTXT))
				if got := addrs(q("x.ft.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.11" {
					t.Errorf("A x.ft.lan: %v", got)
				}
			})
			t.Run("all down", func(t *testing.T) {
				if r := q("x.dead.lan.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
					t.Errorf("all_down servfail: rcode %s", dns.RcodeToString[r.Rcode])
				}
				if got := addrs(q("x.open.lan.", dns.TypeA)); len(got) != 1 || got[0] != "127.0.0.72" {
					t.Errorf("all_down serve_all: %v, want the configured 127.0.0.72", got)
				}
				mustWhoami(t, q("x.onward.lan.", dns.TypeA))
			})
			t.Run("EDNS0", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("app.lan.", dns.TypeA)
				m.SetEdns0(1232, false)
				r := s.exchange(proto, m)
				if r.IsEdns0() == nil {
					t.Error("no OPT in the reply to an EDNS0 query")
				}
				mustAuthoritative(t, r, dns.RcodeSuccess)
			})
			t.Run("answers N", func(t *testing.T) {
				r := q("big.lan.", dns.TypeA)
				if proto == "udp" {
					if !r.Truncated {
						t.Errorf("40 answers in a 512-byte UDP reply: TC not set (%d answers)", len(r.Answer))
					}
					return
				}
				got := addrs(r)
				seen := map[string]bool{}
				for _, a := range got {
					seen[a] = true
				}
				if r.Truncated || len(got) != 40 || len(seen) != 40 {
					t.Errorf("TCP: %d answers (%d distinct), tc=%v; want 40 distinct", len(got), len(seen), r.Truncated)
				}
			})
		})
	}

	t.Run("odd queries get an answer and do no harm", func(t *testing.T) {
		noQuestion := new(dns.Msg)
		noQuestion.Id = dns.Id()
		two := new(dns.Msg)
		two.SetQuestion("app.lan.", dns.TypeA)
		two.Question = append(two.Question, dns.Question{Name: "x.app.lan.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		anyQ := new(dns.Msg)
		anyQ.SetQuestion("app.lan.", dns.TypeANY)
		chaos := new(dns.Msg)
		chaos.SetQuestion("app.lan.", dns.TypeTXT)
		chaos.Question[0].Qclass = dns.ClassCHAOS
		long := new(dns.Msg)
		long.SetQuestion(strings.Repeat("a.", 125)+"app.lan.", dns.TypeA)
		for name, m := range map[string]*dns.Msg{"no question": noQuestion, "two questions": two, "ANY": anyQ, "CHAOS": chaos, "long name": long} {
			for _, proto := range []string{"udp", "tcp"} {
				r := s.exchange(proto, m)
				if r.Id != m.Id {
					t.Errorf("%s over %s: reply id %d for query %d", name, proto, r.Id, m.Id)
				}
			}
		}
		if r := q0(s, "app.lan."); len(addrs(r)) == 0 {
			t.Error("no answer after the odd queries")
		}
	})
}

func q0(s *server, name string) *dns.Msg { return s.query("udp", name, dns.TypeA) }

func mustAuthoritative(t *testing.T, r *dns.Msg, rcode int) {
	t.Helper()
	if r.Rcode != rcode || !r.Authoritative {
		t.Errorf("%v: rcode %s aa=%v, want %s and AA", r.Question, dns.RcodeToString[r.Rcode], r.Authoritative, dns.RcodeToString[rcode])
	}
}

func mustNoData(t *testing.T, r *dns.Msg, zone string) {
	t.Helper()
	mustAuthoritative(t, r, dns.RcodeSuccess)
	if len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("%v: answer %v authority %v, want NODATA with one SOA", r.Question, r.Answer, r.Ns)
		return
	}
	if soa, ok := r.Ns[0].(*dns.SOA); !ok || soa.Hdr.Name != zone {
		t.Errorf("%v: authority %v, want the SOA of %s", r.Question, r.Ns[0], zone)
	}
}

// mustWhoami checks that the whoami plugin, last in the chain, answered: its reply carries the
// client's address and port in the additional section and is not authoritative.
func mustWhoami(t *testing.T, r *dns.Msg) {
	t.Helper()
	for _, rr := range r.Extra {
		if _, ok := rr.(*dns.SRV); ok {
			return
		}
	}
	t.Errorf("%v: not answered by the next plugin (whoami): %v", r.Question, r)
}
