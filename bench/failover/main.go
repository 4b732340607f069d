// Command failover measures, in a lab of network namespaces (test/netlab), how long clients keep
// being sent to a backend host after its link goes down, and how often a healthy but lossy
// backend is taken out, for healthdns and for the systems it replaces or competes with:
// Keepalived (a VRRP virtual IP), gdnsd (multifo with a tcp_connect monitor) and PowerDNS
// Authoritative (LUA records with ifportup). Each system runs on the same hosts in the same run.
//
//	go run ./bench/failover [-trials 10] [-loss 60s] [-systems healthdns,keepalived,...]
//
// It needs root and iproute2; keepalived, gdnsd and pdns_server are measured when installed
// (bench/failover/run.sh installs them). The lab uses 198.18.0.0/24 inside its namespaces only.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

const (
	prefix  = "hdbench"
	dnsAddr = "198.18.0.2"
	b1Addr  = "198.18.0.11"
	b2Addr  = "198.18.0.12"
	clAddr  = "198.18.0.100"
	vipAddr = "198.18.0.50"
	webPort = 8080
	zone    = "app.lan"
	// pollEvery is the client's query or connection rate while it watches for the failover: the
	// figures carry up to this much of it.
	pollEvery = 10 * time.Millisecond
)

// system is one way of sending clients to healthy hosts.
type system struct {
	name     string
	settings string
	needs    string // a program that must be installed
	// start runs the system in the lab; the lab's Close stops what it started.
	start func(l *lab) error
	// vip: clients connect to a virtual IP; otherwise they ask the DNS host for the zone.
	vip bool
	// single: the zone answers one backend at a time (b1 while it is healthy), as a VIP does.
	single bool
}

// lab is the bench's world: a DNS host, two backends (b1 impairable), a client.
type lab struct {
	*netlab.Lab
	dir                string
	coredns            string
	dnsHost, b1, b2, c *netlab.Host
	procs              []*netlab.Process // the system's servers, whose output explains a failure
	closers            []func()          // the backends' services, which live in this process
}

// Close stops the backends' services and removes the lab.
func (l *lab) Close() error {
	for _, c := range l.closers {
		c()
	}
	return l.Lab.Close()
}

// start runs a system's server on a host.
func (l *lab) start(h *netlab.Host, name string, args ...string) (*netlab.Process, error) {
	p, err := h.StartProcess(name, args...)
	if err == nil {
		l.procs = append(l.procs, p)
	}
	return p, err
}

// logs is the tail of every server's output.
func (l *lab) logs() string {
	var b strings.Builder
	for _, p := range l.procs {
		lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s on %s:\n%s\n", p.Name, p.Host.Name, strings.Join(lines, "\n"))
	}
	return b.String()
}

func main() {
	trials := flag.Int("trials", 10, "link-down trials per system")
	lossFor := flag.Duration("loss", 60*time.Second, "how long each system watches a backend behind a 30% lossy link (0: skip)")
	only := flag.String("systems", "", "comma-separated system names to run (default: all installed)")
	flag.Parse()

	if err := netlab.Available(); err != nil {
		fatal(err)
	}
	dir, err := os.MkdirTemp("", "healthdns-failover-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := netlab.BuildCoreDNS(dir)
	if err != nil {
		fatal(err)
	}

	var rows []row
	for _, s := range systems() {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), s.name) {
			continue
		}
		if _, err := exec.LookPath(s.needs); s.needs != "" && err != nil {
			fmt.Fprintf(os.Stderr, "%s: skipped, %s is not installed\n", s.name, s.needs)
			continue
		}
		r, err := measure(s, dir, bin, *trials, *lossFor)
		if err != nil {
			fatal(fmt.Errorf("%s (%s): %w", s.name, s.settings, err))
		}
		rows = append(rows, r)
	}
	printTable(os.Stdout, rows, *trials, *lossFor)
}

type row struct {
	s      system
	steer  []time.Duration // per trial: link down to first client steered to the live host
	flaps  int             // times the lossy (healthy) backend was taken out
	polled int             // client observations during the loss window
}

func measure(s system, dir, bin string, trials int, lossFor time.Duration) (row, error) {
	l, err := newLab(dir, bin)
	if err != nil {
		return row{}, err
	}
	defer l.Close()
	stop := l.CloseOnSignal()
	defer stop()
	r, err := run(l, s, trials, lossFor)
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, l.logs())
	}
	return r, err
}

func run(l *lab, s system, trials int, lossFor time.Duration) (r row, err error) {
	r.s = s
	if err := s.start(l); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "%s (%s): waiting for both backends\n", s.name, s.settings)
	if err := l.waitSteady(s, 60*time.Second); err != nil {
		return r, err
	}
	for i := 0; i < trials; i++ {
		// A random moment (0–2 s), so that trials sample every phase of the probe interval.
		time.Sleep(time.Duration(rand.Int64N(int64(2 * time.Second))))
		down := time.Now()
		if err := l.b1.LinkDown(); err != nil {
			return r, err
		}
		steered, err := l.waitSteered(s, down, 60*time.Second)
		if err != nil {
			return r, fmt.Errorf("trial %d: %w", i+1, err)
		}
		r.steer = append(r.steer, steered)
		fmt.Fprintf(os.Stderr, "%s trial %d: steered after %v\n", s.name, i+1, steered.Round(time.Millisecond))
		if err := l.b1.LinkUp(); err != nil {
			return r, err
		}
		if err := l.waitSteady(s, 120*time.Second); err != nil {
			return r, fmt.Errorf("trial %d: b1 did not come back: %w", i+1, err)
		}
	}
	if lossFor > 0 {
		r.flaps, r.polled, err = l.countFlaps(s, lossFor)
		if err != nil {
			return r, err
		}
		fmt.Fprintf(os.Stderr, "%s: %d flaps in %v of 30%% loss\n", s.name, r.flaps, lossFor)
	}
	return r, nil
}

func newLab(dir, bin string) (*lab, error) {
	nl, err := netlab.New(prefix)
	if err != nil {
		return nil, err
	}
	// A directory per lab: daemons refuse to start over an earlier run's pid files.
	runDir, err := os.MkdirTemp(dir, "lab-")
	if err != nil {
		nl.Close()
		return nil, err
	}
	l := &lab{Lab: nl, dir: runDir, coredns: bin}
	for _, h := range []struct {
		dst  **netlab.Host
		add  func(string, string) (*netlab.Host, error)
		name string
		addr string
	}{
		{&l.dnsHost, nl.Host, "dns", dnsAddr},
		{&l.b1, nl.ImpairableHost, "b1", b1Addr},
		{&l.b2, nl.Host, "b2", b2Addr},
		{&l.c, nl.Host, "client", clAddr},
	} {
		if *h.dst, err = h.add(h.name, h.addr); err != nil {
			nl.Close()
			return nil, err
		}
	}
	for _, b := range []*netlab.Host{l.b1, l.b2} {
		svc, err := b.Serve(webPort)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.closers = append(l.closers, svc.Stop)
		// A service on the VIP too, for Keepalived: whichever host holds the VIP answers on it.
		if err := l.serveAny(b); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// serveAny listens on every address of the host on another port, so that a VIP that moves to
// the host is served without a restart.
func (l *lab) serveAny(h *netlab.Host) error {
	ln, err := h.Listen("tcp", fmt.Sprintf(":%d", webPort+1))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, h.Name) })}
	l.closers = append(l.closers, func() { srv.Close() })
	go srv.Serve(ln)
	return nil
}

// observation is what one client request saw: the backends it was sent to ("b1", "b2"), or
// none when it got no answer in time.
type observation []string

// observe makes one client request: a DNS query for the zone (the backends in the answer) or, for
// a VIP, an HTTP request to it (the backend that served it).
func (l *lab) observe(s system) observation {
	if s.vip {
		return l.observeVIP()
	}
	r, err := l.c.Query(dnsAddr, zone, dns.TypeA, 250*time.Millisecond)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		return nil
	}
	var seen observation
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			switch a.A.String() {
			case b1Addr:
				seen = append(seen, "b1")
			case b2Addr:
				seen = append(seen, "b2")
			}
		}
	}
	return seen
}

func (l *lab) observeVIP() observation {
	client := http.Client{
		Timeout: 250 * time.Millisecond,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.c.Dial(network, addr, 250*time.Millisecond)
			},
		},
	}
	resp, err := client.Get(fmt.Sprintf("http://%s:%d/", vipAddr, webPort+1))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return observation{strings.TrimSpace(string(body))}
}

// steady is the state before a trial: b1 serves (for a VIP: holds it; for an active/standby
// zone: is answered alone; for other DNS: is answered together with b2).
func (o observation) steady(s system) bool {
	if s.vip || s.single {
		return slices.Equal(o, observation{"b1"})
	}
	return slices.Contains(o, "b1") && slices.Contains(o, "b2")
}

// steered says the client is sent to the live host only.
func (o observation) steered() bool {
	return len(o) > 0 && !slices.Contains(o, "b1")
}

func (l *lab) waitSteady(s system, within time.Duration) error {
	// Every DNS system answers with all its healthy backends, so one answer tells.
	if harness.Poll(within, 50*time.Millisecond, func() bool { return l.observe(s).steady(s) }) {
		return nil
	}
	return fmt.Errorf("not steady (b1 and b2 in service) within %v; last saw %v", within, l.observe(s))
}

func (l *lab) waitSteered(s system, since time.Time, within time.Duration) (time.Duration, error) {
	for time.Since(since) < within {
		if l.observe(s).steered() {
			return time.Since(since), nil
		}
		time.Sleep(pollEvery)
	}
	return 0, fmt.Errorf("clients still sent to b1 (or nowhere) %v after its link went down", within)
}

// countFlaps makes b1's link lose 30% of what b1 sends for the given time, with the client
// polling every 50ms, and counts how often the client was steered away from b1 although b1
// never died.
func (l *lab) countFlaps(s system, lossFor time.Duration) (flaps, polled int, err error) {
	if err := l.b1.Impair(netlab.Impairment{Loss: 0.3}); err != nil {
		return 0, 0, err
	}
	defer l.b1.Impair(netlab.Impairment{})
	away := false
	for end := time.Now().Add(lossFor); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		o := l.observe(s)
		if len(o) == 0 {
			continue // no answer (for a VIP through the lossy link, a lost reply): no verdict
		}
		polled++
		if o.steered() && !away {
			flaps++
		}
		away = o.steered()
	}
	return flaps, polled, nil
}

// writeFile writes content to dir/name and returns the path.
func writeFile(dir, name, content string) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(content), 0o644)
}

func printTable(w io.Writer, rows []row, trials int, lossFor time.Duration) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	fmt.Fprintf(bw, "\n| system | settings | link down → clients steered: median | max | flaps in %v of 30%% loss |\n", lossFor)
	fmt.Fprintln(bw, "|---|---|---|---|---|")
	for _, r := range rows {
		sorted := slices.Clone(r.steer)
		slices.Sort(sorted)
		med, max := "-", "-"
		if len(sorted) > 0 {
			med = ms(sorted[len(sorted)/2])
			max = ms(sorted[len(sorted)-1])
		}
		flaps := "-"
		if lossFor > 0 {
			flaps = fmt.Sprintf("%d (of %d polls)", r.flaps, r.polled)
		}
		fmt.Fprintf(bw, "| %s | %s | %s | %s | %s |\n", r.s.name, r.s.settings, med, max, flaps)
	}
	fmt.Fprintf(bw, "\n%d trials per system; the client polls every %v, which the figures include.\n", trials, pollEvery)
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "failover:", err)
	netlab.RemoveStale(prefix)
	os.Exit(1)
}
