package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestDNS checks every row of docs/DESIGN.md's DNS table against one server, over UDP and TCP.
//
// Zones and backends (one TCP check port P; .11, .12, .21-.60 and ::1 listen on P, .13 does not):
//
//	app.lan      .11 .12 .13, answers 8, ttl 7
//	sub.app.lan  .12
//	three.lan    .21 .22 .23, answers 2
//	v6.lan       ::1
//	big.lan      .21-.60, answers 40
//	ft.lan       .11, fallthrough; the file plugin behind it serves x.ft.lan TXT
//	nsz.lan      .11, ns ns1.nsz.lan 127.0.0.53
//
// hosts behind healthdns answers static.lan and xapp.lan (a name that shares app.lan's suffix
// but is outside it).
func TestDNS(t *testing.T) {
	t.Parallel()
	live := []string{"127.0.0.11", "127.0.0.12", "::1"}
	var big []string
	for i := 21; i <= 60; i++ {
		big = append(big, fmt.Sprintf("127.0.0.%d", i))
	}
	port, _ := harness.StartBackends(t, append(live, big...)...)

	zoneFile := filepath.Join(t.TempDir(), "db.ft.lan")
	if err := os.WriteFile(zoneFile, []byte(`$ORIGIN ft.lan.
@ 3600 IN SOA ns.ft.lan. hostmaster.ft.lan. 1 7200 3600 1209600 3600
@ 3600 IN NS ns.ft.lan.
x 60 IN TXT "from-file"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Generous timing: this test is about answers, not about how fast health changes show.
	pool := func(zone string, backends []string, extra ...string) string {
		return harness.TCPPool(zone, port, "500ms", "400ms", backends, extra...)
	}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		pool("app.lan", []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}, "answers 8", "ttl 7")+
		pool("sub.app.lan", []string{"127.0.0.12"})+
		pool("three.lan", big[:3], "answers 2")+
		pool("v6.lan", []string{"::1"})+
		pool("big.lan", big, "answers 40")+
		pool("ft.lan", []string{"127.0.0.11"}, "fallthrough")+
		pool("nsz.lan", []string{"127.0.0.11"}, "ns ns1.nsz.lan 127.0.0.53")+
		" hosts {\n  127.0.0.99 static.lan\n  127.0.0.97 xapp.lan\n  fallthrough\n }\n"+
		" file "+zoneFile+" ft.lan\n"+
		"}\n")

	// A probe can lose a race with a loaded machine at startup; wait for the steady state the
	// assertions below describe instead of assuming the first round was perfect.
	harness.Eventually(t, 10*time.Second, func() bool {
		return harness.SameSet(s.Addrs(t, "udp", "app.lan.", dns.TypeA), "127.0.0.11", "127.0.0.12") &&
			len(s.Addrs(t, "tcp", "big.lan.", dns.TypeA)) == 40 &&
			harness.SameSet(s.Addrs(t, "udp", "v6.lan.", dns.TypeAAAA), "::1") &&
			harness.SameSet(s.Addrs(t, "udp", "sub.app.lan.", dns.TypeA), "127.0.0.12") &&
			harness.SameSet(s.Addrs(t, "udp", "ft.lan.", dns.TypeA), "127.0.0.11") &&
			harness.SameSet(s.Addrs(t, "udp", "nsz.lan.", dns.TypeA), "127.0.0.11") &&
			len(s.Addrs(t, "udp", "three.lan.", dns.TypeA)) == 2
	}, "every live backend to be up")

	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			q := func(t *testing.T, name string, qtype uint16) *dns.Msg {
				t.Helper()
				return s.Query(t, proto, name, qtype)
			}

			t.Run("A at the apex and below: healthy backends only, AA, TTL", func(t *testing.T) {
				for _, name := range []string{"app.lan.", "x.app.lan.", "a.b.c.app.lan."} {
					r := q(t, name, dns.TypeA)
					wantAuthoritative(t, r, dns.RcodeSuccess)
					if got := harness.AnswerAddrs(r); !harness.SameSet(got, "127.0.0.11", "127.0.0.12") {
						t.Errorf("%s: %v, want exactly the healthy 127.0.0.11 and 127.0.0.12", name, got)
					}
					for _, rr := range r.Answer {
						if rr.Header().Ttl != 7 || rr.Header().Name != name || rr.Header().Rrtype != dns.TypeA {
							t.Errorf("%s: record %q, want an A record named %s with TTL 7", name, rr, name)
						}
					}
				}
			})

			t.Run("AAAA from IPv6 backends", func(t *testing.T) {
				r := q(t, "v6.lan.", dns.TypeAAAA)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if got := harness.AnswerAddrs(r); !harness.SameSet(got, "::1") {
					t.Errorf("AAAA v6.lan.: %v, want [::1]", got)
				}
				if len(r.Answer) == 1 && r.Answer[0].Header().Ttl != 5 {
					t.Errorf("AAAA v6.lan.: TTL %d, want the default 5", r.Answer[0].Header().Ttl)
				}
			})

			t.Run("answers N gives min(N, healthy) distinct addresses", func(t *testing.T) {
				for range 10 {
					got := s.Addrs(t, proto, "three.lan.", dns.TypeA)
					if len(got) != 2 || harness.Distinct(got) != 2 {
						t.Fatalf("three.lan. (answers 2, 3 healthy): %v, want 2 distinct", got)
					}
					for _, a := range got {
						if !slices.Contains(big[:3], a) {
							t.Fatalf("three.lan.: %s is not one of its backends", a)
						}
					}
				}
				// app.lan: answers 8 with 2 healthy is checked above (exactly 2).
			})

			t.Run("case-insensitive, question case echoed", func(t *testing.T) {
				for _, name := range []string{"ApP.LaN.", "WwW.aPp.LAN."} {
					if r := q(t, name, dns.TypeTXT); len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
						t.Errorf("TXT %s: %v, want NODATA with SOA", name, r)
					}
					r := q(t, name, dns.TypeA)
					wantAuthoritative(t, r, dns.RcodeSuccess)
					if len(r.Answer) == 0 {
						t.Fatalf("%s: no answer", name)
					}
					for _, rr := range r.Answer {
						if rr.Header().Name != name {
							t.Errorf("%s: owner %q does not echo the question", name, rr.Header().Name)
						}
					}
				}
			})

			t.Run("NODATA with the zone's SOA", func(t *testing.T) {
				for _, c := range []struct {
					name  string
					qtype uint16
					zone  string
				}{
					{"app.lan.", dns.TypeAAAA, "app.lan."}, // only IPv4 backends
					{"x.app.lan.", dns.TypeAAAA, "app.lan."},
					{"v6.lan.", dns.TypeA, "v6.lan."}, // only IPv6 backends
					{"x.app.lan.", dns.TypeMX, "app.lan."},
					{"x.app.lan.", dns.TypeTXT, "app.lan."},
					{"x.app.lan.", dns.TypeSRV, "app.lan."},
					{"app.lan.", dns.TypeTXT, "app.lan."},
					{"app.lan.", dns.TypeMX, "app.lan."},
					{"x.app.lan.", dns.TypeNS, "app.lan."}, // NS below the apex
					{"x.app.lan.", dns.TypeSOA, "app.lan."},
					{"x.sub.app.lan.", dns.TypeTXT, "sub.app.lan."},
				} {
					wantNoData(t, q(t, c.name, c.qtype), c.zone)
				}
			})

			t.Run("SOA and NS at a mixed-case apex echo the case", func(t *testing.T) {
				for _, qt := range []uint16{dns.TypeSOA, dns.TypeNS} {
					r := q(t, "ApP.LaN.", qt)
					wantAuthoritative(t, r, dns.RcodeSuccess)
					if len(r.Answer) != 1 || r.Answer[0].Header().Name != "ApP.LaN." || r.Answer[0].Header().Rrtype != qt {
						t.Errorf("%s ApP.LaN.: %v, want one record owned by ApP.LaN.", dns.TypeToString[qt], r.Answer)
					}
				}
			})

			t.Run("SOA at the apex", func(t *testing.T) {
				r := q(t, "app.lan.", dns.TypeSOA)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) != 1 {
					t.Fatalf("SOA app.lan.: answer %v, want one SOA", r.Answer)
				}
				soa, ok := r.Answer[0].(*dns.SOA)
				if !ok {
					t.Fatalf("SOA app.lan.: answer %v is not a SOA", r.Answer[0])
				}
				if soa.Hdr.Name != "app.lan." || soa.Ns != "ns.dns.app.lan." || soa.Mbox != "hostmaster.app.lan." {
					t.Errorf("SOA %q: want owner app.lan., MNAME ns.dns.app.lan., RNAME hostmaster.app.lan.", soa)
				}
				if soa.Expire < 604800 {
					t.Errorf("SOA expire %d, want at least a week (604800)", soa.Expire)
				}
				// RFC 1912 §2.2 / RIPE-203: a secondary retries more often than it refreshes, and
				// gives up (expire) long after both.
				if soa.Retry >= soa.Refresh || soa.Expire <= soa.Refresh || soa.Serial == 0 {
					t.Errorf("SOA timers %q: want serial > 0, retry < refresh < expire", soa)
				}
				if soa.Minttl != 7 {
					t.Errorf("SOA minimum %d, want the zone's ttl 7", soa.Minttl)
				}
			})

			t.Run("NS at the apex names a host that is the server itself", func(t *testing.T) {
				r := q(t, "app.lan.", dns.TypeNS)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) != 1 {
					t.Fatalf("NS app.lan.: answer %v, want one NS", r.Answer)
				}
				ns, ok := r.Answer[0].(*dns.NS)
				if !ok || ns.Ns != "ns.dns.app.lan." {
					t.Fatalf("NS app.lan.: %v, want ns.dns.app.lan.", r.Answer[0])
				}
				for range 5 { // a backend would show up in some answers under the random policy
					r := q(t, "ns.dns.app.lan.", dns.TypeA)
					wantAuthoritative(t, r, dns.RcodeSuccess)
					if got := harness.AnswerAddrs(r); !harness.SameSet(got, "127.0.0.1") {
						t.Fatalf("A ns.dns.app.lan.: %v, want only the server's own 127.0.0.1", got)
					}
				}
			})

			t.Run("ns NAME ADDRESS overrides the NS host", func(t *testing.T) {
				r := q(t, "nsz.lan.", dns.TypeSOA)
				if len(r.Answer) != 1 {
					t.Fatalf("SOA nsz.lan.: %v", r.Answer)
				}
				if soa, ok := r.Answer[0].(*dns.SOA); !ok || soa.Ns != "ns1.nsz.lan." || soa.Mbox != "hostmaster.nsz.lan." {
					t.Errorf("SOA nsz.lan.: %v, want MNAME ns1.nsz.lan.", r.Answer[0])
				}
				r = q(t, "nsz.lan.", dns.TypeNS)
				if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns1.nsz.lan." {
					t.Errorf("NS nsz.lan.: %v, want one NS ns1.nsz.lan.", r.Answer)
				}
				r = q(t, "ns1.nsz.lan.", dns.TypeA)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if got := harness.AnswerAddrs(r); !harness.SameSet(got, "127.0.0.53") {
					t.Errorf("A ns1.nsz.lan.: %v, want 127.0.0.53", got)
				}
			})

			t.Run("most specific zone wins", func(t *testing.T) {
				for _, name := range []string{"sub.app.lan.", "x.sub.app.lan."} {
					for range 5 {
						if got := s.Addrs(t, proto, name, dns.TypeA); !harness.SameSet(got, "127.0.0.12") {
							t.Fatalf("%s: %v, want the sub.app.lan pool's 127.0.0.12 only", name, got)
						}
					}
				}
			})

			t.Run("names outside every zone go to the next plugin", func(t *testing.T) {
				for name, want := range map[string]string{"static.lan.": "127.0.0.99", "xapp.lan.": "127.0.0.97"} {
					if got := s.Addrs(t, proto, name, dns.TypeA); !harness.SameSet(got, want) {
						t.Errorf("%s: %v, want hosts' %s", name, got, want)
					}
				}
				r := q(t, "elsewhere.example.", dns.TypeA)
				if len(r.Answer) != 0 || (r.Rcode == dns.RcodeSuccess && r.Authoritative) {
					t.Errorf("elsewhere.example.: %s aa=%v %v, want no healthdns answer", dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
				}
			})

			t.Run("fallthrough passes NODATA to the next plugin", func(t *testing.T) {
				r := q(t, "x.ft.lan.", dns.TypeTXT)
				if len(r.Answer) != 1 {
					t.Fatalf("TXT x.ft.lan.: %v, want the file plugin's record", r)
				}
				if txt, ok := r.Answer[0].(*dns.TXT); !ok || strings.Join(txt.Txt, "") != "from-file" {
					t.Errorf("TXT x.ft.lan.: %v, want \"from-file\" from the file plugin", r.Answer[0])
				}
				if got := s.Addrs(t, proto, "x.ft.lan.", dns.TypeA); !harness.SameSet(got, "127.0.0.11") {
					t.Errorf("A x.ft.lan.: %v, want healthdns' 127.0.0.11", got)
				}
			})

			t.Run("ANY gets RFC 8482's HINFO", func(t *testing.T) {
				r := q(t, "x.app.lan.", dns.TypeANY)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if len(r.Answer) != 1 {
					t.Fatalf("ANY x.app.lan.: %v, want one HINFO", r.Answer)
				}
				if h, ok := r.Answer[0].(*dns.HINFO); !ok || h.Cpu != "RFC8482" || h.Os != "" || h.Hdr.Ttl != 7 {
					t.Errorf("ANY x.app.lan.: %v, want HINFO \"RFC8482\" \"\" with the zone's TTL 7", r.Answer[0])
				}
			})

			t.Run("zone transfers are refused", func(t *testing.T) {
				for _, qt := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
					m := new(dns.Msg)
					m.SetQuestion("app.lan.", qt)
					if qt == dns.TypeIXFR {
						m.SetIxfr("app.lan.", 1, "ns.dns.app.lan.", "hostmaster.app.lan.")
					}
					if r := s.Exchange(t, proto, m); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
						t.Errorf("%s app.lan.: %s %v, want REFUSED", dns.TypeToString[qt], dns.RcodeToString[r.Rcode], r.Answer)
					}
				}
			})

			t.Run("EDNS0 query gets OPT in the reply", func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion("app.lan.", dns.TypeA)
				m.SetEdns0(1232, false)
				r := s.Exchange(t, proto, m)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if r.IsEdns0() == nil {
					t.Errorf("no OPT in the reply to a query with OPT: %v", r)
				}
				if !harness.SameSet(harness.AnswerAddrs(r), "127.0.0.11", "127.0.0.12") {
					t.Errorf("EDNS0 A app.lan.: %v", harness.AnswerAddrs(r))
				}
			})

			t.Run("answers 40", func(t *testing.T) {
				r := q(t, "big.lan.", dns.TypeA)
				got := harness.AnswerAddrs(r)
				if proto == "udp" {
					// 40 A records need about 680 bytes: more than the 512 of plain DNS over UDP.
					if !r.Truncated {
						t.Errorf("UDP without EDNS0: TC not set, %d answers, packed size %d", len(got), r.Len())
					}
					r.Compress = true // as sent: Len counts uncompressed names otherwise
					if r.Len() > 512 || len(got) >= 40 {
						t.Errorf("UDP without EDNS0: %d answers in %d bytes, want fewer than 40 within 512", len(got), r.Len())
					}
					// With room for them, the same answer is whole.
					m := new(dns.Msg)
					m.SetQuestion("big.lan.", dns.TypeA)
					m.SetEdns0(1232, false)
					r = s.Exchange(t, proto, m)
					if got := harness.AnswerAddrs(r); r.Truncated || len(got) != 40 || harness.Distinct(got) != 40 {
						t.Errorf("UDP with EDNS0 1232: %d answers (%d distinct), tc=%v; want 40 distinct", len(got), harness.Distinct(got), r.Truncated)
					}
					return
				}
				if r.Truncated || len(got) != 40 || harness.Distinct(got) != 40 {
					t.Errorf("TCP: %d answers (%d distinct), tc=%v; want 40 distinct", len(got), harness.Distinct(got), r.Truncated)
				}
			})
		})
	}

	t.Run("odd queries get a reply and do no harm", func(t *testing.T) {
		noQuestion := new(dns.Msg)
		noQuestion.Id = dns.Id()
		noQuestion.RecursionDesired = true

		two := new(dns.Msg)
		two.SetQuestion("app.lan.", dns.TypeA)
		two.Question = append(two.Question, dns.Question{Name: "x.app.lan.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})

		anyQ := new(dns.Msg)
		anyQ.SetQuestion("app.lan.", dns.TypeANY)

		chaos := new(dns.Msg)
		chaos.SetQuestion("app.lan.", dns.TypeTXT)
		chaos.Question[0].Qclass = dns.ClassCHAOS

		// 255 octets on the wire: the longest name DNS allows.
		long := new(dns.Msg)
		label := strings.Repeat("a", 61) + "."
		long.SetQuestion(label+label+label+strings.Repeat("b", 59)+".app.lan.", dns.TypeA)

		cases := []struct {
			name string
			m    *dns.Msg
		}{{"QDCOUNT 0", noQuestion}, {"two questions", two}, {"ANY", anyQ}, {"CHAOS class", chaos}, {"very long name", long}}
		for _, c := range cases {
			for _, proto := range []string{"udp", "tcp"} {
				r := s.Exchange(t, proto, c.m) // fails the test if no reply comes
				if r.Id != c.m.Id {
					t.Errorf("%s over %s: reply id %d for query %d", c.name, proto, r.Id, c.m.Id)
				}
				t.Logf("%s over %s: %s, %d answers", c.name, proto, dns.RcodeToString[r.Rcode], len(r.Answer))
				if !s.Alive() {
					t.Fatalf("coredns died after %s over %s", c.name, proto)
				}
			}
		}
		if r := s.Exchange(t, "udp", long); r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			for _, rr := range r.Answer {
				if rr.Header().Name != long.Question[0].Name {
					t.Errorf("long name: owner %q", rr.Header().Name)
				}
			}
		}
		if r := s.Exchange(t, "udp", anyQ); len(harness.AnswerAddrs(r)) > 0 && r.Rcode != dns.RcodeSuccess {
			t.Errorf("ANY: addresses with rcode %s", dns.RcodeToString[r.Rcode])
		}
		if got := s.Addrs(t, "udp", "app.lan.", dns.TypeA); !harness.SameSet(got, "127.0.0.11", "127.0.0.12") {
			t.Errorf("after the odd queries: %v", got)
		}
	})
}

// writeZone writes a zone file in a test's temporary directory and returns its absolute path.
func writeZone(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBesideZoneFile runs healthdns beside the file plugin. app.lan is README's layout: the pool
// on a sub-zone (web.app.lan) of the file's zone. own.lan is the pool on the file's own zone with
// fallthrough: healthdns answers every A and AAAA, the file everything else, and the zone shows
// the file's SOA only, and never NXDOMAIN for a name that has addresses.
func TestBesideZoneFile(t *testing.T) {
	t.Parallel()
	const web, own = "127.0.0.140", "127.0.0.141"
	port, _ := harness.StartBackends(t, web, own)
	soaLine := func(zone string) string {
		return "@ 3600 IN SOA ns1." + zone + " admin." + zone + " 2024010101 7200 3600 1209600 300\n"
	}
	appDB := writeZone(t, "db.app.lan", "$ORIGIN app.lan.\n"+soaLine("app.lan.")+`@ 3600 IN NS ns1
@ 3600 IN MX 10 mail
ns1 3600 IN A 192.0.2.53
mail 3600 IN A 192.0.2.25
`)
	ownDB := writeZone(t, "db.own.lan", "$ORIGIN own.lan.\n"+soaLine("own.lan.")+`@ 3600 IN NS ns1
ns1 3600 IN A 192.0.2.53
mail 3600 IN A 192.0.2.25
mail 3600 IN TXT "from-file"
`)
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("web.app.lan", port, "500ms", "400ms", []string{web})+
		harness.TCPPool("own.lan", port, "500ms", "400ms", []string{own}, "fallthrough")+
		" file "+appDB+" app.lan\n file "+ownDB+" own.lan\n}\n")
	harness.Eventually(t, 10*time.Second, func() bool {
		return harness.SameSet(s.Addrs(t, "udp", "web.app.lan.", dns.TypeA), web) && harness.SameSet(s.Addrs(t, "udp", "own.lan.", dns.TypeA), own)
	}, "both backends up")

	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto+" pool on a sub-zone", func(t *testing.T) {
			for name, want := range map[string]string{"mail.app.lan.": "192.0.2.25", "ns1.app.lan.": "192.0.2.53", "web.app.lan.": web, "x.web.app.lan.": web} {
				r := s.Query(t, proto, name, dns.TypeA)
				wantAuthoritative(t, r, dns.RcodeSuccess)
				if got := harness.AnswerAddrs(r); !harness.SameSet(got, want) {
					t.Errorf("A %s: %v, want %s", name, got, want)
				}
			}
			if r := s.Query(t, proto, "app.lan.", dns.TypeMX); len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mail.app.lan." {
				t.Errorf("MX app.lan.: %v, want the file's", r.Answer)
			}
			wantFileSOA(t, s.Query(t, proto, "app.lan.", dns.TypeSOA), "app.lan.")
			wantNoData(t, s.Query(t, proto, "web.app.lan.", dns.TypeAAAA), "web.app.lan.")
			if r := s.Query(t, proto, "nothing.app.lan.", dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Errorf("A nothing.app.lan.: %s, want the file's NXDOMAIN", dns.RcodeToString[r.Rcode])
			}
		})

		t.Run(proto+" fallthrough over the pool's zone", func(t *testing.T) {
			for _, name := range []string{"own.lan.", "web.own.lan.", "mail.own.lan."} {
				if got := s.Addrs(t, proto, name, dns.TypeA); !harness.SameSet(got, own) {
					t.Errorf("A %s: %v, want the backend %s (healthdns answers every A of its zone)", name, got, own)
				}
			}
			if r := s.Query(t, proto, "mail.own.lan.", dns.TypeTXT); len(r.Answer) != 1 {
				t.Errorf("TXT mail.own.lan.: %v, want the file's", r.Answer)
			}
			for _, c := range []struct {
				name  string
				qtype uint16
			}{
				{"web.own.lan.", dns.TypeAAAA}, // NXDOMAIN from the file before
				{"web.own.lan.", dns.TypeTXT},
				{"a.b.own.lan.", dns.TypeMX},
				{"own.lan.", dns.TypeAAAA},
				{"own.lan.", dns.TypeSOA},
				{"own.lan.", dns.TypeNS},
				{"ns.dns.own.lan.", dns.TypeAAAA},
			} {
				r := s.Query(t, proto, c.name, c.qtype)
				if r.Rcode != dns.RcodeSuccess {
					t.Errorf("%s %s: %s, want NOERROR: healthdns answers the name's addresses", dns.TypeToString[c.qtype], c.name, dns.RcodeToString[r.Rcode])
				}
				wantFileSOA(t, r, "own.lan.")
			}
			wantFileSOA(t, s.Query(t, proto, "own.lan.", dns.TypeSOA), "own.lan.")
			if r := s.Query(t, proto, "own.lan.", dns.TypeNS); len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns1.own.lan." {
				t.Errorf("NS own.lan.: %v, want the file's ns1.own.lan.", r.Answer)
			}
		})
	}
}

// wantFileSOA checks that every SOA of a reply is the zone file's (TestBesideZoneFile's), never
// the one healthdns synthesizes.
func wantFileSOA(t *testing.T, r *dns.Msg, zone string) {
	t.Helper()
	for _, rr := range append(append([]dns.RR(nil), r.Answer...), r.Ns...) {
		if soa, ok := rr.(*dns.SOA); ok && (soa.Serial != 2024010101 || soa.Ns != "ns1."+zone || soa.Hdr.Name != zone) {
			t.Errorf("%v: SOA %q, want the zone file's (ns1.%s, serial 2024010101)", r.Question, soa, zone)
		}
	}
}

// TestSerialIsTheConfiguration: two instances running the same Corefile show the same SOA
// serial, and a changed configuration shows another.
func TestSerialIsTheConfiguration(t *testing.T) {
	t.Parallel()
	port, _ := harness.StartBackends(t, "127.0.0.142")
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n" + harness.TCPPool("app.lan", port, "1s", "500ms", []string{"127.0.0.142"},
		"ns ns.app.lan 127.0.0.1 127.0.0.2") + "}\n"
	changed := strings.Replace(conf, "interval 1s", "interval 2s", 1)
	if changed == conf {
		t.Fatalf("the test's Corefile has no 'interval 1s' to change:\n%s", conf)
	}
	var serials []uint32
	for _, conf := range []string{conf, conf, changed} {
		s := harness.Start(t, conf)
		r := s.Query(t, "udp", "app.lan.", dns.TypeSOA)
		if len(r.Answer) != 1 {
			t.Fatalf("SOA app.lan.: %v", r)
		}
		serials = append(serials, r.Answer[0].(*dns.SOA).Serial)
	}
	if serials[0] != serials[1] {
		t.Errorf("two instances of one Corefile: serials %d and %d", serials[0], serials[1])
	}
	if serials[2] == serials[0] {
		t.Errorf("a changed interval kept serial %d: the serial does not follow the configuration", serials[0])
	}
}

// TestNoNextPlugin: with healthdns last in the chain, a name outside its zone gets CoreDNS's own
// failure reply (REFUSED or SERVFAIL), promptly, and never a healthdns answer.
func TestNoNextPlugin(t *testing.T) {
	t.Parallel()
	port, _ := harness.StartBackends(t, "127.0.0.118")
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("app.lan", port, "1s", "500ms", []string{"127.0.0.118"})+"}\n")
	for _, proto := range []string{"udp", "tcp"} {
		for _, name := range []string{"other.lan.", "xapp.lan.", "lan."} {
			start := time.Now()
			r := s.Query(t, proto, name, dns.TypeA)
			if len(r.Answer) != 0 || r.Rcode == dns.RcodeSuccess {
				t.Errorf("%s %s: %s aa=%v %v, want a failure rcode and no answer", proto, name, dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
			}
			t.Logf("%s %s: %s in %s", proto, name, dns.RcodeToString[r.Rcode], time.Since(start).Round(time.Millisecond))
		}
		if got := s.Addrs(t, proto, "app.lan.", dns.TypeA); !harness.SameSet(got, "127.0.0.118") {
			t.Errorf("%s app.lan.: %v", proto, got)
		}
	}
}

// TestPolicies checks round_robin's cycle and weighted's split end to end.
func TestPolicies(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.107", "127.0.0.108", "127.0.0.109"}
	port, _ := harness.StartBackends(t, ips...)
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("all.lan", port, "1s", "500ms", ips, "answers 3")+
		harness.TCPPool("rr.lan", port, "1s", "500ms", ips, "policy round_robin")+
		" healthdns w.lan {\n  backend 127.0.0.107 weight 9\n  backend 127.0.0.108 weight 1\n"+
		fmt.Sprintf("  check tcp %d\n  policy weighted\n }\n", port)+
		"}\n")
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "all.lan.", dns.TypeA), ips...) },
		"all three backends up")

	t.Run("round_robin cycles through all backends", func(t *testing.T) {
		var seq []string
		for i := range 30 {
			proto := []string{"udp", "tcp"}[i%2]
			got := s.Addrs(t, proto, "rr.lan.", dns.TypeA)
			if len(got) != 1 {
				t.Fatalf("rr.lan.: %v, want one address (answers 1)", got)
			}
			seq = append(seq, got[0])
		}
		for i := 0; i+3 <= len(seq); i++ {
			if harness.Distinct(seq[i:i+3]) != 3 {
				t.Fatalf("queries %d-%d gave %v: not a cycle through all 3 (sequence %v)", i, i+2, seq[i:i+3], seq)
			}
		}
	})

	t.Run("weighted 9:1", func(t *testing.T) {
		const n = 1000
		counts := map[string]int{}
		for range n {
			got := s.Addrs(t, "udp", "w.lan.", dns.TypeA)
			if len(got) != 1 {
				t.Fatalf("w.lan.: %v", got)
			}
			counts[got[0]]++
		}
		share := float64(counts["127.0.0.107"]) / n
		t.Logf("weight 9 got %.3f of %d answers: %v", share, n, counts)
		if share < 0.80 || share > 0.97 || counts["127.0.0.108"] == 0 {
			t.Errorf("weight 9 got %.3f of answers (%v), want 0.80-0.97 and some for weight 1", share, counts)
		}
	})
}

func wantAuthoritative(t *testing.T, r *dns.Msg, rcode int) {
	t.Helper()
	if r.Rcode != rcode || !r.Authoritative {
		t.Errorf("%v: rcode %s aa=%v, want %s with AA", r.Question, dns.RcodeToString[r.Rcode], r.Authoritative, dns.RcodeToString[rcode])
	}
}

func wantNoData(t *testing.T, r *dns.Msg, zone string) {
	t.Helper()
	wantAuthoritative(t, r, dns.RcodeSuccess)
	if len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("%v: answer %v authority %v, want NODATA: no answer and one SOA", r.Question, r.Answer, r.Ns)
		return
	}
	if soa, ok := r.Ns[0].(*dns.SOA); !ok || soa.Hdr.Name != zone {
		t.Errorf("%v: authority %v, want the SOA of %s", r.Question, r.Ns[0], zone)
	}
}
