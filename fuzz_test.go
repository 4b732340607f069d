package healthdns

import (
	"context"
	"io"
	golog "log"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/pool"
)

// parseErrorAt is how every refusal of a Corefile starts: the file and the line to look at.
var parseErrorAt = regexp.MustCompile(`^Testfile:([0-9]+) - Error during parsing: `)

// FuzzParseCorefile: any text inside a healthdns block gives a config or an error that names
// the file and a line of the text; every backend of a config is an address the text names. Only
// the parse runs: nothing is probed, started or listened on.
func FuzzParseCorefile(f *testing.F) {
	for _, body := range []string{
		"backend 10.0.0.1",
		"backend 10.0.0.1 weight 9\nbackend 2001:db8::1 priority 200\nbackend ::ffff:10.0.0.2 priority 50 weight 2\ncheck tcp 8080\ninterval 200ms\ntimeout 100ms\nrise 3\nfall 1\npolicy weighted\nanswers 3\nttl 0\nall_down fallthrough\nns ns1.app.lan 192.0.2.53 2001:db8::53\nfallthrough other.lan",
		"backend 10.0.0.1 drain until 2026-12-24T18:00:00Z kernel upgrade\ncheck http 80 /healthz expect 200-299 body ok",
		"backend 10.0.0.1\nbackend 10.0.0.1",
		"backend \"10.0.0.1\" {\n}\npolicy consistent_hash\nhash_prefix 24 64",
		"backends_etcd http://127.0.0.1:2379 {\nprefix /healthdns/app/\n}\nbackend 10.0.0.7",
		"backend 10.0.0.1\nnopreempt\npreempt_delay 30s\nexec_concurrency 4",
		"backend 10.0.0.1\ncheck icmp\ncheck tcp 22\ncheck https 443 / host app.lan\ntls_insecure",
		"backend 10.0.0.1 weight 0\nbackend 10.0.0.2 priority 256",
		"backend fe80::1%eth0",
		"}\n{",
	} {
		f.Add(body)
	}
	golog.SetOutput(io.Discard) // the warnings of a parse that succeeds
	f.Cleanup(func() { golog.SetOutput(os.Stderr) })
	f.Fuzz(func(t *testing.T, body string) {
		// A fuzzed path to a device or a FIFO would test the machine's files, not the parser
		// (the backends-file and token readers refuse those by their own tests).
		for _, special := range []string{"/dev", "/proc", "/sys"} {
			if strings.Contains(body, special) {
				t.Skip()
			}
		}
		corefile := "healthdns app.lan {\n" + body + "\n}"
		cfgs, err := parse(caddy.NewTestController("dns", corefile))
		if err != nil {
			m := parseErrorAt.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q names no file and line", err)
			}
			if n, _ := strconv.Atoi(m[1]); n < 1 || n > strings.Count(corefile, "\n")+1 {
				t.Fatalf("error %q names line %s of a text of %d lines", err, m[1], strings.Count(corefile, "\n")+1)
			}
			return
		}
		named := map[netip.Addr]bool{}
		d := caddyfile.NewDispenser("Testfile", strings.NewReader(corefile))
		for d.Next() {
			if a, err := pool.ParseAddr(d.Val()); err == nil {
				named[a] = true
			}
		}
		for _, cfg := range cfgs {
			if len(cfg.Backends) == 0 && cfg.Source.Kind == pool.SourceNone {
				t.Fatalf("zone %s has no backend and no source", cfg.Zone)
			}
			for _, b := range cfg.Backends {
				if !named[b.Addr] {
					t.Fatalf("backend %s is not an address of the text:\n%s", b.Addr, corefile)
				}
			}
		}
	})
}

// FuzzServeDNS: any message that unpacks gets a reply that packs, with the query's ID and
// question and QR set, and a sane rcode; or a returned rcode that lets CoreDNS answer. The
// addresses of an A or AAAA answer are backends of the zone that are up, but in all_down
// serve_all, which serves them all.
func FuzzServeDNS(f *testing.F) {
	openAll := testConfig("open.lan.", "10.9.0.1", "10.9.0.2")
	openAll.AllDown = pool.AllDownServeAll
	closed := testConfig("closed.lan.", "10.9.0.1")
	closed.AllDown = pool.AllDownServfail
	h := newTestHandler(f,
		testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::9"),
		testConfig("sub.app.lan.", "10.1.0.1"),
		openAll, closed,
	)
	// May answer, per zone: the backends that are up, or all of them under serve_all.
	mayAnswer := map[string]map[netip.Addr]bool{}
	for zone, p := range h.pools {
		mayAnswer[zone] = map[netip.Addr]bool{}
		for _, b := range p.cfg.Backends {
			if !dead[b.Addr] || p.cfg.AllDown == pool.AllDownServeAll {
				mayAnswer[zone][b.Addr] = true
			}
		}
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"app.lan.", dns.TypeA}, {"X.App.Lan.", dns.TypeAAAA}, {"ns.dns.app.lan.", dns.TypeA}, {"app.lan.", dns.TypeSOA},
		{"app.lan.", dns.TypeNS}, {"app.lan.", dns.TypeANY}, {"app.lan.", dns.TypeAXFR}, {"x.sub.app.lan.", dns.TypeA},
		{"a.open.lan.", dns.TypeA}, {"closed.lan.", dns.TypeA}, {"other.lan.", dns.TypeA}, {"app.lan.", dns.TypeMX},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		wire, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := new(dns.Msg)
		if r.Unpack(wire) != nil {
			return
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, err := h.ServeDNS(context.Background(), rec, r)
		if rec.Msg == nil {
			// Nothing written: the rcode is CoreDNS's to write, or the next plugin's word.
			switch {
			case err == errNext:
			case err == nil && (rcode == dns.RcodeServerFailure || rcode == dns.RcodeRefused || rcode == dns.RcodeFormatError):
			default:
				t.Fatalf("nothing written, and rcode %s, error %v", dns.RcodeToString[rcode], err)
			}
			return
		}
		reply := rec.Msg
		if _, err := reply.Pack(); err != nil {
			t.Fatalf("the reply does not pack: %v\n%s", err, reply)
		}
		if reply.Id != r.Id || !reply.Response || len(reply.Question) != len(r.Question) || (len(r.Question) == 1 && reply.Question[0] != r.Question[0]) {
			t.Fatalf("reply\n%s\nto\n%s", reply, r)
		}
		switch reply.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeRefused:
		default:
			t.Fatalf("rcode %s written:\n%s", dns.RcodeToString[reply.Rcode], reply)
		}
		q := r.Question[0]
		p := h.match(strings.ToLower(q.Name))
		for _, rr := range reply.Answer {
			var addr netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				addr, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				addr, _ = netip.AddrFromSlice(rr.AAAA)
			default:
				continue
			}
			if strings.EqualFold(q.Name, p.cfg.nsName) {
				continue // the name server's own address, not a backend
			}
			if !mayAnswer[p.cfg.Zone][addr] {
				t.Fatalf("answer %s is no backend of %s that may answer:\n%s", addr, p.cfg.Zone, reply)
			}
		}
	})
}
