package lab

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// The fleet's lab has a prefix and addresses of its own, apart from the other scenarios' world.
const (
	fleetPrefix  = "hdfleet"
	etcdAddr     = "198.18.0.30"
	primaryAddr  = "198.18.0.41"
	standbyAddr  = "198.18.0.42"
	fleetClient  = "198.18.0.101"
	fleetZone    = "fleet.lan"
	splitZone    = "split.lan"  // the same pool without nopreempt: nothing is agreed
	quorumZone   = "quorum.lan" // the same pool with nopreempt and the default fleet_quorum
	etcdEndpoint = "http://" + etcdAddr + ":2379"
)

var fleetDNSAddrs = []string{"198.18.0.21", "198.18.0.22", "198.18.0.23"}

// fleet is three healthdns servers sharing one etcd, a primary and a standby serving HTTP, and
// a client that asks every server.
type fleet struct {
	*world
	servers []*netlab.Host
	procs   []*netlab.Process
	kv      *clientv3.Client // from the client host
	web     map[string]*netlab.Service

	etcdHost *netlab.Host
	etcdData string
	etcd     *netlab.Process // nil while stopped
}

// The fleet-wide failover decision on a real network. A route on a DNS host makes the primary
// unreachable from there alone, as a broken link or firewall between one site and the primary
// would: its probes of the primary fail while the other servers' succeed. Under nopreempt with
// backends_etcd the servers agree on one serving group through etcd, so they all answer the
// same backend; split.lan, the same pool without nopreempt (so without agreement), shows the
// split each server's own decision would make of the same network.
func TestFleetAgreement(t *testing.T) {
	f := newFleet(t)
	groupKey := "/healthdns/" + fleetZone + "/_group/ipv4"
	f.cut(1, 2)
	f.startServers()

	f.settle(fleetZone, "only dns1 reaches the primary", standbyAddr, standbyAddr, standbyAddr)
	f.settle(splitZone, "only dns1 reaches the primary, without agreement", primaryAddr, standbyAddr, standbyAddr)
	f.hold("only dns1 reaches the primary", map[string][]string{
		fleetZone: {standbyAddr, standbyAddr, standbyAddr},
		splitZone: {primaryAddr, standbyAddr, standbyAddr},
	})
	if g := f.get(groupKey); g != "100" {
		t.Errorf("%s = %q in etcd, want 100", groupKey, g)
	}

	// The primary reachable from everywhere: split.lan's servers prefer it again, which shows
	// that each server sees it healthy; under nopreempt the fleet stays on the standby.
	f.mend(1, 2)
	f.settle(splitZone, "the primary reachable from everywhere, without agreement", primaryAddr, primaryAddr, primaryAddr)
	f.hold("the primary reachable from everywhere (nopreempt)", map[string][]string{
		fleetZone: {standbyAddr, standbyAddr, standbyAddr},
		splitZone: {primaryAddr, primaryAddr, primaryAddr},
	})

	// The operator's fail-back, written to etcd.
	f.put(groupKey, "200")
	f.settle(fleetZone, "fail-back written to etcd", primaryAddr, primaryAddr, primaryAddr)
	f.hold("after the fail-back", map[string][]string{fleetZone: {primaryAddr, primaryAddr, primaryAddr}})

	// Only dns1 loses the primary: the whole fleet follows it to the standby.
	seen := make([]int, len(f.procs))
	for i, p := range f.procs {
		seen[i] = len(p.Output())
	}
	f.cut(0)
	f.settle(fleetZone, "only dns1 loses the primary", standbyAddr, standbyAddr, standbyAddr)
	f.settle(splitZone, "only dns1 loses the primary, without agreement", standbyAddr, primaryAddr, primaryAddr)
	f.hold("only dns1 loses the primary", map[string][]string{
		fleetZone: {standbyAddr, standbyAddr, standbyAddr},
		splitZone: {standbyAddr, primaryAddr, primaryAddr},
	})
	if g := f.get(groupKey); g != "100" {
		t.Errorf("%s = %q in etcd after dns1 lost the primary, want 100", groupKey, g)
	}
	followed := regexp.MustCompile(`zone ` + regexp.QuoteMeta(fleetZone) + `\.: ipv4 now served by priority group 100 \(was 200\): agreed by the fleet`)
	for i := 1; i < len(f.procs); i++ {
		since := f.procs[i].Output()[seen[i]:]
		if lines := harness.LinesMatching(since, followed); len(lines) == 0 {
			t.Errorf("%s does not log that it followed the fleet to the standby; since dns1's cut it logged:\n%s", f.servers[i].Name, since)
		} else {
			t.Logf("%s: %s", f.servers[i].Name, strings.TrimSpace(lines[0]))
		}
	}
}

// An etcd outage under nopreempt, on a real network: the fleet agreed on the primary's group
// (200); etcd stops; the primary fails and every server moves to the standby on its own; the
// primary recovers and nopreempt keeps them there. When etcd returns, the key written before
// the outage must not move the fleet back: each server that switched proposes what it serves
// against the revision it last saw, one compare-and-swap wins and the others read the same
// group back. Only an operator's fail-back, or a failure, moves the fleet after that.
func TestFleetOutageReconciles(t *testing.T) {
	f := newFleet(t)
	groupKey := "/healthdns/" + fleetZone + "/_group/ipv4"
	f.startServers()
	all := func(addr string) []string { return []string{addr, addr, addr} }
	f.settle(fleetZone, "the primary healthy", all(primaryAddr)...)
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool { return f.get(groupKey) == "200" }) {
		t.Fatalf("%s = %q in etcd, want 200", groupKey, f.get(groupKey))
	}

	f.stopEtcd()
	for i, p := range f.procs {
		if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(p.Output(), "cut off from etcd") }) {
			t.Fatalf("%s does not log that it is cut off from etcd:\n%s", f.servers[i].Name, p.Output())
		}
	}
	f.web[primaryAddr].Stop()
	f.settle(fleetZone, "etcd away, the primary failed", all(standbyAddr)...)
	if err := f.web[primaryAddr].Start(); err != nil {
		t.Fatal(err)
	}
	// split.lan, without nopreempt, shows that every server sees the primary healthy again.
	f.settle(splitZone, "etcd away, the primary back, without nopreempt", all(primaryAddr)...)
	f.hold("etcd away, the primary back (nopreempt)", map[string][]string{fleetZone: all(standbyAddr)})

	seen := make([]int, len(f.procs))
	for i, p := range f.procs {
		seen[i] = len(p.Output())
	}
	f.startEtcd()
	connected := regexp.MustCompile(`zone ` + regexp.QuoteMeta(fleetZone) + `\.: backends_etcd: connected to`)
	for i, p := range f.procs {
		if !harness.Poll(20*time.Second, 50*time.Millisecond, func() bool { return len(harness.LinesMatching(p.Output()[seen[i]:], connected)) > 0 }) {
			t.Fatalf("%s does not reconnect to etcd:\n%s", f.servers[i].Name, p.Output()[seen[i]:])
		}
	}
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool { return f.get(groupKey) == "100" }) {
		t.Errorf("%s = %q in etcd after the outage, want 100: what the fleet did while etcd was away", groupKey, f.get(groupKey))
	}
	f.hold("etcd back", map[string][]string{fleetZone: all(standbyAddr)})
	back := regexp.MustCompile(`now served by priority group 200`)
	for i, p := range f.procs {
		since := p.Output()[seen[i]:]
		if lines := harness.LinesMatching(since, back); len(lines) > 0 {
			t.Errorf("%s moved back to the primary when etcd returned: %s", f.servers[i].Name, lines[0])
		}
		t.Logf("%s since etcd returned:\n%s", f.servers[i].Name, since)
	}

	// The operator's fail-back, written to etcd, is what moves the fleet back.
	f.put(groupKey, "200")
	f.settle(fleetZone, "fail-back written to etcd", all(primaryAddr)...)
}

// A fleet on a quorum of its views (fleet_quorum majority, the default), on a real network:
// the primary cut from dns1 alone is one view of three, and the fleet stays on it, dns1
// answering the standby meanwhile and saying so; cut from dns2 too, it is a quorum, and the
// fleet moves once. Mended, nopreempt keeps the fleet on the standby. Each state is seen by
// glibc too (getent, through each server in turn), as the sites' applications see it.
func TestFleetQuorum(t *testing.T) {
	f := newFleet(t)
	groupKey := "/healthdns/" + quorumZone + "/_group/ipv4"
	f.startServers()
	f.settle(quorumZone, "the primary healthy", primaryAddr, primaryAddr, primaryAddr)
	f.glibcSettle(quorumZone, "the primary healthy", primaryAddr, primaryAddr, primaryAddr)
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool { return f.get(groupKey) == "200" }) {
		t.Fatalf("%s = %q in etcd, want 200", groupKey, f.get(groupKey))
	}

	f.cut(0)
	f.settle(quorumZone, "only dns1 cut from the primary", standbyAddr, primaryAddr, primaryAddr)
	f.glibcSettle(quorumZone, "only dns1 cut from the primary", standbyAddr, primaryAddr, primaryAddr)
	f.hold("only dns1 cut from the primary", map[string][]string{
		quorumZone: {standbyAddr, primaryAddr, primaryAddr},
		fleetZone:  {standbyAddr, standbyAddr, standbyAddr}, // fleet_quorum any: one view moves it
	})
	if g := f.get(groupKey); g != "200" {
		t.Errorf("%s = %q after one server's false alarm, want 200", groupKey, g)
	}
	disagrees := regexp.MustCompile(`zone ` + regexp.QuoteMeta(quorumZone) + `\.: ipv4: the fleet serves priority group 200, which this server sees with no healthy backend`)
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool { return len(harness.LinesMatching(f.procs[0].Output(), disagrees)) == 1 }) {
		t.Errorf("dns1 does not log its disagreement once:\n%s", f.procs[0].Output())
	}

	f.cut(1)
	f.settle(quorumZone, "dns1 and dns2 cut from the primary", standbyAddr, standbyAddr, standbyAddr)
	f.glibcSettle(quorumZone, "dns1 and dns2 cut from the primary", standbyAddr, standbyAddr, standbyAddr)
	if g := f.get(groupKey); g != "100" {
		t.Errorf("%s = %q after two servers lost the primary, want 100", groupKey, g)
	}
	f.mend(0, 1)
	f.hold("the primary reachable from everywhere (nopreempt)", map[string][]string{quorumZone: {standbyAddr, standbyAddr, standbyAddr}})
	f.glibcSettle(quorumZone, "the primary reachable from everywhere (nopreempt)", standbyAddr, standbyAddr, standbyAddr)
	agreed := regexp.MustCompile(`zone ` + regexp.QuoteMeta(quorumZone) + `\.: ipv4: priority group 100 agreed for the fleet`)
	writes := 0
	for _, p := range f.procs {
		writes += len(harness.LinesMatching(p.Output(), agreed))
	}
	if writes != 1 {
		t.Errorf("the move to the standby was written %d times, want once", writes)
	}
}

// newFleet builds the lab, starts etcd and the two backends, and lists them in etcd for both
// zones, the primary in group 200 and the standby in 100; the DNS servers start later, once the
// network is as the test wants it at their start. It skips the test where the lab cannot run.
func newFleet(t *testing.T) *fleet {
	t.Helper()
	harness.RequireEtcd(t)
	lab := openLab(t, fleetPrefix)
	host := func(name, addr string) *netlab.Host {
		t.Helper()
		h, err := lab.Host(name, addr)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	f := &fleet{world: &world{t: t, lab: lab}}
	for i, addr := range fleetDNSAddrs {
		f.servers = append(f.servers, host(fmt.Sprintf("dns%d", i+1), addr))
	}
	f.client = host("client", fleetClient)
	f.web = map[string]*netlab.Service{}
	for _, b := range []*netlab.Host{host("primary", primaryAddr), host("standby", standbyAddr)} {
		svc, err := b.Serve(webPort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
		f.web[b.Addr.String()] = svc
	}
	f.etcdHost, f.etcdData = host("etcd", etcdAddr), filepath.Join(t.TempDir(), "etcd")
	t.Cleanup(func() {
		if f.etcd != nil {
			f.etcd.Stop()
			if t.Failed() {
				t.Logf("etcd output:\n%s", f.etcd.Output())
			}
		}
		if f.kv != nil {
			f.kv.Close()
		}
	})
	f.startEtcd()
	for _, zone := range []string{fleetZone, splitZone, quorumZone} {
		f.put("/healthdns/"+zone+"/"+primaryAddr, "priority 200")
		f.put("/healthdns/"+zone+"/"+standbyAddr, "priority 100")
	}
	return f
}

// startEtcd runs Debian's etcd on its host, on the data it kept if it ran before, and connects
// the test's client to it from the client host.
func (f *fleet) startEtcd() {
	t := f.t
	t.Helper()
	args := harness.EtcdArgs("healthdns-lab", f.etcdData, etcdEndpoint, "http://"+etcdAddr+":2380")
	p, err := f.etcdHost.StartProcessEnv(harness.EtcdEnv(), harness.EtcdBinary, args...)
	if err != nil {
		t.Fatal(err)
	}
	f.etcd = p
	// A client per try: one that found the port closed would wait out gRPC's reconnect backoff.
	serves := func() bool {
		c, err := clientFrom(f.client)
		if err != nil {
			return false
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = c.Get(ctx, "healthdns-probe")
		return err == nil
	}
	if err := p.AwaitReady(30*time.Second, serves); err != nil {
		t.Fatal(err)
	}
	if f.kv != nil {
		f.kv.Close() // it would wait out gRPC's reconnect backoff
	}
	if f.kv, err = clientFrom(f.client); err != nil {
		t.Fatal(err)
	}
}

// stopEtcd stops etcd, keeping its data for startEtcd.
func (f *fleet) stopEtcd() {
	f.t.Helper()
	if err := f.etcd.Stop(); err != nil {
		f.t.Logf("stopping etcd: %v", err)
	}
	f.etcd = nil
}

// clientFrom is an etcd client whose connections are opened inside host. gRPC dials on its own
// goroutines, so the dialer itself enters the namespace.
func clientFrom(host *netlab.Host) (*clientv3.Client, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		timeout := 2 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		return host.Dial("tcp", addr, timeout)
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{etcdEndpoint},
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
}

func (f *fleet) put(key, value string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.kv.Put(ctx, key, value); err != nil {
		f.t.Fatalf("etcd put %s: %v", key, err)
	}
}

func (f *fleet) get(key string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := f.kv.Get(ctx, key)
	if err != nil {
		f.t.Fatalf("etcd get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return ""
	}
	return string(r.Kvs[0].Value)
}

// startServers runs healthdns on every DNS host, with fleet.lan and split.lan both fed by etcd.
func (f *fleet) startServers() {
	f.t.Helper()
	pool := func(zone string, extra ...string) string {
		return harness.Pool(zone, nil, append([]string{
			"backends_etcd {\n   endpoint " + etcdEndpoint + "\n  }",
			fmt.Sprintf("check tcp %d", webPort), "interval 200ms", "timeout 100ms", "rise 2", "fall 2",
		}, extra...)...)
	}
	// fleet_quorum any: one server's view moves the fleet, as these tests show.
	body := pool(fleetZone, "nopreempt", "fleet_quorum any") + pool(splitZone) + pool(quorumZone, "nopreempt")
	for _, h := range f.servers {
		f.procs = append(f.procs, f.startDNS(h, body))
	}
	f.t.Cleanup(func() {
		if f.t.Failed() {
			for i, p := range f.procs {
				f.t.Logf("%s output:\n%s", f.servers[i].Name, p.Output())
			}
		}
	})
}

// cut makes the primary unreachable from the DNS servers numbered (0 is dns1): a route in their
// namespace, not in the primary's, so that only their probes fail.
func (f *fleet) cut(servers ...int) { f.route("add", servers) }

// mend removes the routes cut added.
func (f *fleet) mend(servers ...int) { f.route("del", servers) }

func (f *fleet) route(op string, servers []int) {
	f.t.Helper()
	for _, i := range servers {
		h := f.servers[i]
		if out, err := h.Command("ip", "route", op, "unreachable", primaryAddr+"/32").CombinedOutput(); err != nil {
			f.t.Fatalf("ip route %s unreachable %s on %s: %v: %s", op, primaryAddr, h.Name, err, out)
		}
	}
}

// addrs asks server i for zone's A records from the client host.
func (f *fleet) addrs(i int, zone string) ([]string, error) {
	r, err := f.client.Query(f.servers[i].Addr.String(), zone, dns.TypeA, time.Second)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return ips, nil
}

// settle waits until server i answers zone with want[i] alone, for every server, and logs when
// each did.
func (f *fleet) settle(zone, what string, want ...string) {
	f.t.Helper()
	start := time.Now()
	var took []string
	for i := range f.servers {
		var got []string
		var err error
		ok := harness.Poll(10*time.Second, 20*time.Millisecond, func() bool {
			got, err = f.addrs(i, zone)
			return err == nil && harness.SameSet(got, want[i])
		})
		if !ok {
			f.t.Fatalf("%s: %s does not answer %s with %s within 10s; last %v, %v", what, f.servers[i].Name, zone, want[i], got, err)
		}
		took = append(took, fmt.Sprintf("%s %s after %v", f.servers[i].Name, want[i], time.Since(start).Round(time.Millisecond)))
	}
	f.t.Logf("%s: %s: %s", what, zone, strings.Join(took, ", "))
}

// glibcSettle waits until glibc on the client host, pointed at server i alone, resolves zone
// to want[i] alone, for every server: what an application of a site served by that server
// sees. getent ahostsv4 asks for A records only; resolv.conf gives one server, one try.
func (f *fleet) glibcSettle(zone, what string, want ...string) {
	f.t.Helper()
	for i, h := range f.servers {
		if err := f.client.SetResolvConf("nameserver " + h.Addr.String() + "\noptions timeout:1 attempts:1\n"); err != nil {
			f.t.Fatal(err)
		}
		var got []string
		var out []byte
		var err error
		ok := harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
			out, err = f.client.Command("getent", "ahostsv4", zone).CombinedOutput()
			got = nil
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if fields := strings.Fields(line); len(fields) > 0 && !slices.Contains(got, fields[0]) {
					got = append(got, fields[0])
				}
			}
			return err == nil && harness.SameSet(got, want[i])
		})
		if !ok {
			f.t.Fatalf("%s: getent ahostsv4 %s through %s does not give %s alone within 10s; last %v (%v): %s", what, zone, h.Name, want[i], got, err, out)
		}
	}
	f.t.Logf("%s: glibc on the client resolves %s through each server as %v", what, zone, want)
}

// hold checks every 100ms for 3s that every server still answers each zone as want says: no
// server drifts back to what it sees alone.
func (f *fleet) hold(what string, want map[string][]string) {
	f.t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for zone, ips := range want {
			for i := range f.servers {
				if got, err := f.addrs(i, zone); err != nil || !harness.SameSet(got, ips[i]) {
					f.t.Fatalf("%s: %s answers %s with %v (%v), want %s", what, f.servers[i].Name, zone, got, err, ips[i])
				}
			}
		}
	}
}
