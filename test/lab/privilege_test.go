package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The least-privilege lab has its own prefix and its own addresses, 198.18.23.0/24, so that it
// never shares a host or a backend with the other labs of this package.
const (
	privPrefix   = "hdpriv"
	privDNS      = "198.18.23.2"
	privClient   = "198.18.23.100"
	privStranger = "198.18.23.50" // answers pings and port 8080, and no Corefile names it
	nobody       = 65534          // nobody and nogroup
	metricsPort  = 9153
)

var privBackends = []string{"198.18.23.11", "198.18.23.12"}

// unitFile is the shipped systemd unit, whose ambient capabilities the first run grants.
const unitFile = "../../deploy/systemd/healthdns.service"

// capNumbers are the capabilities this test knows how to grant; the unit may grant no other.
var capNumbers = map[string]uintptr{
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE,
	"CAP_NET_RAW":          unix.CAP_NET_RAW,
}

// unitCapabilities reads the unit's AmbientCapabilities.
func unitCapabilities(t *testing.T) []uintptr {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		value, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "AmbientCapabilities=")
		if !ok {
			continue
		}
		for _, name := range strings.Fields(value) {
			n, known := capNumbers[name]
			if !known {
				t.Fatalf("%s grants %s: more than a DNS server on port 53 that pings needs", unitFile, name)
			}
			caps = append(caps, n)
		}
	}
	if len(caps) == 0 {
		t.Fatalf("%s: no AmbientCapabilities", unitFile)
	}
	return caps
}

// TestLeastPrivilege runs the real coredns as nobody, on port 53 of a DNS host, probing two
// backends by ICMP and by TCP: once with exactly the capabilities the shipped systemd unit grants
// (in a namespace whose sysctls refuse nobody both port 53 and ping sockets, so that only the
// capabilities can make it work), and once with none at all, where the namespace's own
// sysctls, as a container's, let it bind port 53 (net.ipv4.ip_unprivileged_port_start=53) and
// ping (net.ipv4.ping_group_range holding nogroup). Each run answers, takes out the backend whose
// check fails, and says at startup which probing mode it runs and why.
//
// Every frame the DNS host sends during a run is captured in its namespace: probes go only to
// the addresses and ports the Corefile names (a host beside them, which answers pings and
// connections, is never probed), and the rest are DNS replies and metrics to the client, and
// ARP. A reload that drops a backend, made as nobody too, ends its probes.
func TestLeastPrivilege(t *testing.T) {
	unitCaps := unitCapabilities(t)
	lab := openLab(t, privPrefix)
	must := func(h *netlab.Host, err error) *netlab.Host {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	dnsHost := must(lab.Host("dns", privDNS))
	client := must(lab.Host("client", privClient))
	var backends []*netlab.Host
	var services []*netlab.Service
	for i, addr := range append(slices.Clone(privBackends), privStranger) {
		h := must(lab.Host(fmt.Sprintf("b%d", i+1), addr))
		svc, err := h.Serve(webPort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
		backends, services = append(backends, h), append(services, svc)
	}
	// No IPv6 on the DNS host, so that each frame it sends is one the test accounts for: its
	// kernel's neighbour discovery and multicast reports would be neither probes nor replies.
	if err := dnsHost.Sysctl("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		t.Fatal(err)
	}
	bin, dir := nobodysCopy(t)

	for _, run := range []struct {
		name              string
		caps              []uintptr
		sysctls           []string
		icmpMode, tcpMode string
		halfOpen          bool // no handshake completes: the SYN-ACK is answered with a reset
	}{
		{
			name:     "the systemd unit's capabilities",
			caps:     unitCaps,
			sysctls:  []string{"net.ipv4.ip_unprivileged_port_start=1024", "net.ipv4.ping_group_range=1 0"},
			icmpMode: "icmp checks: raw sockets (CAP_NET_RAW)",
			tcpMode:  "tcp checks: half-open, SYNs from a raw socket (CAP_NET_RAW)",
			halfOpen: true,
		},
		{
			name:     "no capabilities",
			sysctls:  []string{"net.ipv4.ip_unprivileged_port_start=53", fmt.Sprintf("net.ipv4.ping_group_range=%d %d", nobody, nobody)},
			icmpMode: "icmp checks: unprivileged ping sockets",
			tcpMode:  "tcp checks: connects, closed with a reset, not half-open: no raw TCP socket: operation not permitted",
		},
	} {
		t.Run(run.name, func(t *testing.T) {
			if err := dnsHost.Sysctl(run.sysctls...); err != nil {
				t.Fatal(err)
			}
			// Every backend healthy again, after the run before.
			for i, h := range backends {
				if err := errors.Join(h.Sysctl("net.ipv4.icmp_echo_ignore_all=0"), services[i].Start()); err != nil {
					t.Fatal(err)
				}
			}
			capture, err := dnsHost.CaptureOutgoing()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { capture.Stop() }) // for a run cut short; a second Stop does nothing
			conf := filepath.Join(dir, "Corefile")
			privCorefile(t, conf, dnsHost, privBackends)
			p := startAsNobody(t, dnsHost, client, bin, conf, run.caps)

			// The process is nobody's, with the capabilities given and no other.
			wantCaps := uint64(0)
			for _, c := range run.caps {
				wantCaps |= 1 << c
			}
			status := procStatus(t, p.Pid())
			for _, field := range []string{"Uid", "Gid"} {
				if want := strings.Repeat(strconv.Itoa(nobody)+" ", 4); status[field]+" " != want {
					t.Errorf("%s: %q, want nobody's (%d) everywhere", field, status[field], nobody)
				}
			}
			for _, field := range []string{"CapEff", "CapPrm", "CapAmb"} {
				if got, _ := strconv.ParseUint(status[field], 16, 64); got != wantCaps {
					t.Errorf("%s: %s, want %016x", field, status[field], wantCaps)
				}
			}

			ask := func(zone string, want ...string) {
				t.Helper()
				var last []string
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					if last = privAnswer(client, zone); slices.Equal(last, want) {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				t.Fatalf("%s: %v, want %v, within 30s; log:\n%s", zone, last, want, p.Output())
			}
			ask("icmp.lan.", privBackends...)
			ask("tcp.lan.", privBackends...)
			// The first backend stops answering pings, the second's service dies: each leaves
			// the zone whose check it fails, and only that one.
			if err := backends[0].Sysctl("net.ipv4.icmp_echo_ignore_all=1"); err != nil {
				t.Fatal(err)
			}
			services[1].Stop()
			ask("icmp.lan.", privBackends[1])
			ask("tcp.lan.", privBackends[0])

			// A reload drops the second backend. Once its probe series are gone its loops have
			// stopped (Observer.Stopped), and from then on it is not probed, while the first
			// goes on being probed.
			privCorefile(t, conf, dnsHost, privBackends[:1])
			if err := syscall.Kill(p.Pid(), syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			probes := func(m *harness.Metrics, backend, check string) float64 {
				n, _ := m.Value("coredns_healthdns_probes_total", map[string]string{"backend": backend, "check": check})
				return n
			}
			var dropped time.Time
			var kept *harness.Metrics
			awaitMetrics(t, p, client, "the dropped backend's probe series gone", func(m *harness.Metrics) bool {
				if len(m.Find("coredns_healthdns_probes_total", map[string]string{"backend": privBackends[1]})) > 0 {
					return false
				}
				dropped, kept = time.Now(), m
				return true
			})
			awaitMetrics(t, p, client, "three more probes of the kept backend by each check", func(m *harness.Metrics) bool {
				for _, check := range []string{"icmp", fmt.Sprintf("tcp :%d", webPort)} {
					if probes(m, privBackends[0], check) < probes(kept, privBackends[0], check)+3 {
						return false
					}
				}
				return true
			})

			p.Stop() // and its output is all read
			for _, mode := range []string{run.icmpMode, run.tcpMode} {
				if !strings.Contains(p.Output(), mode) {
					t.Errorf("no %q in the log:\n%s", mode, p.Output())
				}
			}
			frames, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			rules := sendRules{
				self:    netip.MustParseAddr(privDNS),
				client:  netip.MustParseAddr(privClient),
				metrics: metricsPort,
				icmp:    map[netip.Addr]bool{},
				tcp:     map[netip.AddrPort]bool{},
			}
			for _, b := range privBackends {
				a := netip.MustParseAddr(b)
				rules.icmp[a] = true
				rules.tcp[netip.AddrPortFrom(a, webPort)] = true
			}
			kinds := map[string]int{}
			var strays []string
			for _, f := range frames {
				kind, err := rules.judge(f.Data)
				if err != nil {
					strays = append(strays, err.Error())
					continue
				}
				kinds[kind]++
			}
			t.Logf("the DNS host sent %d frames: %v", len(frames), kinds)
			if len(strays) > 0 {
				t.Errorf("%d frames the DNS host should not have sent, the first: %q", len(strays), strays[:min(len(strays), 10)])
			}
			// Nothing is judged if nothing was captured: each kind of traffic must be there.
			for _, kind := range []string{"icmp echo request", "tcp syn", "dns reply"} {
				if kinds[kind] == 0 {
					t.Errorf("no %s among the captured frames: the capture missed the run", kind)
				}
			}
			if acks := kinds["tcp ack"]; run.halfOpen != (acks == 0) {
				t.Errorf("%d segments completed or closed a TCP handshake; half-open: %v", acks, run.halfOpen)
			}
			// Engine's Ticket.Unschedule: once it returns, a loop starts no probe of the
			// target but one it had already taken out. A loop still running would have sent
			// three of each.
			late := map[string]int{}
			for _, f := range frames {
				if kind, _ := rules.judge(f.Data); f.At.After(dropped) && ipv4Dst(f.Data) == netip.MustParseAddr(privBackends[1]) {
					late[kind]++
				}
			}
			t.Logf("frames to the dropped backend after its loops stopped: %v", late)
			if late["icmp echo request"] > 1 || late["tcp syn"] > 1 {
				t.Errorf("the backend the reload dropped was probed after its loops stopped: %v", late)
			}
		})
	}
}

// nobodysCopy places coredns, and returns a directory, where nobody may read and run them: the
// harness's build sits in a directory only root may enter.
func nobodysCopy(t *testing.T) (bin, dir string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "healthdns-priv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "coredns")
	data, err := os.ReadFile(harness.Binary(t))
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// privCorefile serves icmp.lan (ICMP checks) and tcp.lan (TCP checks on webPort) over
// backends on port 53 of host, with its metrics on metricsPort.
func privCorefile(t *testing.T, conf string, host *netlab.Host, backends []string) {
	t.Helper()
	// A generous timeout: a probe late on a loaded machine must not flap a backend.
	timing := []string{"interval 300ms", "timeout 250ms", "rise 1", "fall 2", "answers 2"}
	corefile := fmt.Sprintf(".:53 {\n bind %s\n errors\n prometheus %s:%d\n%s%s}\n", host.Addr, host.Addr, metricsPort,
		harness.Pool("icmp.lan", backends, append([]string{"check icmp"}, timing...)...),
		harness.Pool("tcp.lan", backends, append([]string{fmt.Sprintf("check tcp %d", webPort)}, timing...)...))
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startAsNobody runs coredns as nobody with the ambient capabilities caps (none when empty), on
// the Corefile conf, and waits until it answers the client.
func startAsNobody(t *testing.T, host, client *netlab.Host, bin, conf string, caps []uintptr) *netlab.Process {
	t.Helper()
	attr := &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		AmbientCaps: caps,
	}
	p, err := host.StartProcessAs(attr, []string{"PATH=/usr/bin:/bin"}, bin, "-conf", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	answers := func() bool {
		_, err := client.Query(host.Addr.String(), "lab.probe.", dns.TypeSOA, time.Second)
		return err == nil // any answer, an error code included
	}
	if err := p.AwaitReady(30*time.Second, answers); err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitMetrics scrapes the DNS host's metrics from the client until cond holds, for 30s.
func awaitMetrics(t *testing.T, p *netlab.Process, client *netlab.Host, what string, cond func(*harness.Metrics) bool) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return client.Dial(network, addr, 5*time.Second)
		},
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(privDNS, strconv.Itoa(metricsPort)))
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := hc.Get(url)
		if err == nil {
			var m *harness.Metrics
			m, err = harness.ParseMetrics(resp.Body)
			resp.Body.Close()
			if err == nil && cond(m) {
				return
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within 30s (last error: %v); log:\n%s", what, last, p.Output())
}

// ipv4Dst is the destination of an Ethernet frame's IPv4 packet, or the zero address.
func ipv4Dst(d []byte) netip.Addr {
	if len(d) < 34 || binary.BigEndian.Uint16(d[12:14]) != unix.ETH_P_IP {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(d[30:34]))
}

// procStatus reads /proc/PID/status into field → value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return fields
}

// privAnswer is the sorted A records of name from the least-privilege lab's DNS host.
func privAnswer(client *netlab.Host, name string) []string {
	r, err := client.Query(privDNS, name, dns.TypeA, time.Second)
	if err != nil {
		return nil
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return ips
}

// sendRules says what the DNS host may send: probes to the addresses (and ports) the Corefile
// names, DNS replies to the client (and "port unreachable" before the server listens), and ARP
// for either.
type sendRules struct {
	self, client netip.Addr
	metrics      uint16                  // the port the client scrapes
	icmp         map[netip.Addr]bool     // ICMP checks' backends
	tcp          map[netip.AddrPort]bool // TCP checks' backends and ports
}

// judge names what an Ethernet frame the DNS host sent is, or says why it should not have been
// sent.
func (r sendRules) judge(d []byte) (string, error) {
	if len(d) < 14 {
		return "", fmt.Errorf("a frame of %d bytes", len(d))
	}
	typ, d := binary.BigEndian.Uint16(d[12:14]), d[14:]
	switch typ {
	case unix.ETH_P_ARP:
		return r.judgeARP(d)
	case unix.ETH_P_IP:
		return r.judgeIPv4(d)
	}
	return "", fmt.Errorf("a frame of ethertype %#04x", typ)
}

func (r sendRules) judgeARP(d []byte) (string, error) {
	if len(d) < 28 {
		return "", fmt.Errorf("an ARP packet of %d bytes", len(d))
	}
	op := binary.BigEndian.Uint16(d[6:8])
	sender, _ := netip.AddrFromSlice(d[14:18])
	target, _ := netip.AddrFromSlice(d[24:28])
	switch {
	case sender != r.self:
		return "", fmt.Errorf("ARP as %s", sender)
	case op == 2:
		return "arp reply", nil
	case op == 1 && (target == r.client || r.icmp[target] || r.named(target)):
		return "arp request", nil
	}
	return "", fmt.Errorf("ARP (op %d) for %s, which the Corefile does not name", op, target)
}

// quotesQuery reports whether an ICMP error quotes a datagram from the client to port 53.
func (r sendRules) quotesQuery(d []byte) bool {
	if len(d) < 20 || d[0]>>4 != 4 || d[9] != unix.IPPROTO_UDP || len(d) < int(d[0]&0xf)*4+4 {
		return false
	}
	src, _ := netip.AddrFromSlice(d[12:16])
	udp := d[int(d[0]&0xf)*4:]
	return src == r.client && binary.BigEndian.Uint16(udp[2:4]) == 53
}

// named reports whether a TCP check names addr, on any port.
func (r sendRules) named(addr netip.Addr) bool {
	for ap := range r.tcp {
		if ap.Addr() == addr {
			return true
		}
	}
	return false
}

func (r sendRules) judgeIPv4(d []byte) (string, error) {
	if len(d) < 20 || d[0]>>4 != 4 || int(d[0]&0xf)*4 < 20 || len(d) < int(d[0]&0xf)*4 {
		return "", fmt.Errorf("a malformed IPv4 packet (% x)", d[:min(len(d), 20)])
	}
	proto := d[9]
	src, _ := netip.AddrFromSlice(d[12:16])
	dst, _ := netip.AddrFromSlice(d[16:20])
	l4 := d[int(d[0]&0xf)*4:]
	if src != r.self {
		return "", fmt.Errorf("IPv4 from %s to %s", src, dst)
	}
	switch proto {
	case unix.IPPROTO_ICMP:
		switch {
		case len(l4) < 8:
			return "", fmt.Errorf("an ICMP message of %d bytes to %s", len(l4), dst)
		case l4[0] == 8 && r.icmp[dst]:
			return "icmp echo request", nil
		case l4[0] == 8:
			return "", fmt.Errorf("an echo request to %s, which no ICMP check names", dst)
		case l4[0] == 3 && l4[1] == 3 && dst == r.client && r.quotesQuery(l4[8:]):
			// The kernel's answer to the client's queries of before the server listened.
			return "port unreachable", nil
		}
		return "", fmt.Errorf("ICMP (type %d) to %s", l4[0], dst)
	case unix.IPPROTO_TCP:
		if len(l4) < 20 {
			return "", fmt.Errorf("a TCP segment of %d bytes to %s", len(l4), dst)
		}
		to := netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		flags := l4[13]
		switch {
		case dst == r.client && binary.BigEndian.Uint16(l4[0:2]) == r.metrics && r.metrics != 0:
			return "metrics reply", nil
		case !r.tcp[to]:
			return "", fmt.Errorf("TCP (flags %#02x) to %s, which no TCP check names", flags, to)
		case flags&0x12 == 0x02: // SYN without ACK
			return "tcp syn", nil
		case flags&0x04 != 0:
			return "tcp reset", nil
		}
		return "tcp ack", nil // completing a handshake, or closing
	case unix.IPPROTO_UDP:
		if len(l4) < 8 {
			return "", fmt.Errorf("a UDP datagram of %d bytes to %s", len(l4), dst)
		}
		from, to := binary.BigEndian.Uint16(l4[0:2]), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		var m dns.Msg
		switch {
		case from != 53 || dst != r.client:
			return "", fmt.Errorf("UDP from port %d to %s", from, to)
		case m.Unpack(l4[8:]) != nil || !m.Response:
			return "", fmt.Errorf("UDP from port 53 to %s that is not a DNS reply", to)
		}
		return "dns reply", nil
	}
	return "", fmt.Errorf("IP protocol %d to %s", proto, dst)
}

// The rules of what the DNS host may send refuse what the lab must never see: a probe of an
// address or a port that no check names, a datagram that is not a DNS reply to the client,
// ARP for a stranger, IPv6 at all.
func TestSendRules(t *testing.T) {
	rules := sendRules{
		self:   netip.MustParseAddr(privDNS),
		client: netip.MustParseAddr(privClient),
		icmp:   map[netip.Addr]bool{netip.MustParseAddr("198.18.23.11"): true},
		tcp:    map[netip.AddrPort]bool{netip.MustParseAddrPort("198.18.23.12:8080"): true},
	}
	reply := new(dns.Msg).SetReply(new(dns.Msg).SetQuestion("icmp.lan.", dns.TypeA))
	replyWire, _ := reply.Pack()
	query, _ := new(dns.Msg).SetQuestion("icmp.lan.", dns.TypeA).Pack()
	echo := []byte{8, 0, 0, 0, 0, 1, 0, 1}
	tcp := func(port uint16, flags byte) []byte {
		seg := make([]byte, 20)
		binary.BigEndian.PutUint16(seg[0:2], 40000)
		binary.BigEndian.PutUint16(seg[2:4], port)
		seg[12], seg[13] = 5<<4, flags
		return seg
	}
	udp := func(from, to uint16, payload []byte) []byte {
		h := make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:2], from)
		binary.BigEndian.PutUint16(h[2:4], to)
		return append(h, payload...)
	}
	quoted := ipv4Packet(unix.IPPROTO_UDP, privClient, privDNS, udp(40000, 53, query))
	for _, tc := range []struct {
		name  string
		frame []byte
		kind  string // "" for a frame that must be refused
	}{
		{"an echo request to an ICMP check's backend", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privDNS, "198.18.23.11", echo)), "icmp echo request"},
		{"an echo request to a TCP check's backend", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privDNS, "198.18.23.12", echo)), ""},
		{"an echo request to a stranger", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privDNS, privStranger, echo)), ""},
		{"a SYN to a TCP check's port", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_TCP, privDNS, "198.18.23.12", tcp(8080, 0x02))), "tcp syn"},
		{"a reset to a TCP check's port", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_TCP, privDNS, "198.18.23.12", tcp(8080, 0x04))), "tcp reset"},
		{"a SYN to another port of the backend", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_TCP, privDNS, "198.18.23.12", tcp(22, 0x02))), ""},
		{"a SYN to an ICMP check's backend", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_TCP, privDNS, "198.18.23.11", tcp(8080, 0x02))), ""},
		{"a DNS reply to the client", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_UDP, privDNS, privClient, udp(53, 40000, replyWire))), "dns reply"},
		{"a DNS query from port 53", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_UDP, privDNS, privClient, udp(53, 40000, query))), ""},
		{"a DNS reply to a stranger", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_UDP, privDNS, privStranger, udp(53, 40000, replyWire))), ""},
		{"a datagram from another port", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_UDP, privDNS, privClient, udp(5353, 40000, replyWire))), ""},
		{"port unreachable for an early query", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privDNS, privClient, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted...))), "port unreachable"},
		{"port unreachable to a stranger", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privDNS, privStranger, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted...))), ""},
		{"a packet from another address", ethernet(unix.ETH_P_IP, ipv4Packet(unix.IPPROTO_ICMP, privStranger, "198.18.23.11", echo)), ""},
		{"ARP for a backend", ethernet(unix.ETH_P_ARP, arp(1, privDNS, "198.18.23.11")), "arp request"},
		{"ARP for the client", ethernet(unix.ETH_P_ARP, arp(1, privDNS, privClient)), "arp request"},
		{"ARP for a stranger", ethernet(unix.ETH_P_ARP, arp(1, privDNS, privStranger)), ""},
		{"IPv6", ethernet(unix.ETH_P_IPV6, make([]byte, 40)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, err := rules.judge(tc.frame)
			switch {
			case tc.kind == "" && err == nil:
				t.Errorf("taken as %s, want refused", kind)
			case tc.kind != "" && (err != nil || kind != tc.kind):
				t.Errorf("%q, %v, want %s", kind, err, tc.kind)
			}
		})
	}
}

func ethernet(typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	binary.BigEndian.PutUint16(f[12:14], typ)
	return append(f, payload...)
}

func ipv4Packet(proto byte, src, dst string, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:4], uint16(20+len(payload)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return append(p, payload...)
}

func arp(op uint16, sender, target string) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], unix.ETH_P_IP)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], op)
	s, t := netip.MustParseAddr(sender).As4(), netip.MustParseAddr(target).As4()
	copy(p[14:18], s[:])
	copy(p[24:28], t[:])
	return p
}
