// Command removal measures how long a dead backend stays in healthdns's answers: one coredns
// serves several pools that differ only in their check timing (with and without fast_interval),
// each over its own pair of TCP backends on 127.0.1.0/24, so that no two pools share a probe
// loop's target. In each trial one backend of every pool dies at the same random moment, and
// every zone is queried every -poll until that backend has left its answers; the backends are
// then restored, and the next trial waits until every pool answers with both again.
//
//	go run ./bench/removal -trials 30
//
// A backend dies in one of two ways. Refused: its listener is closed, so a probe is refused at
// once, as in the peers' figure (research/anchors-measured.md). Silent: its port is taken by a
// listener whose accept queue is kept full, so the kernel drops every SYN and a probe costs its
// whole timeout, as a host that is down would. Each variant of -variant is measured both ways.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

// variants is the repeatable -variant flag: NAME=LINE,LINE,... (Corefile lines added to the
// pool's block).
type variants []variant

type variant struct {
	name  string
	lines []string
}

func (v *variants) String() string { return fmt.Sprint(*v) }

func (v *variants) Set(s string) error {
	name, lines, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=LINE,LINE,..., got %q", s)
	}
	var vr variant
	vr.name = name
	for _, l := range strings.Split(lines, ",") {
		if l = strings.TrimSpace(l); l != "" {
			vr.lines = append(vr.lines, l)
		}
	}
	*v = append(*v, vr)
	return nil
}

func main() {
	var vs variants
	var (
		trials   = flag.Int("trials", 30, "trials")
		interval = flag.Duration("interval", time.Second, "probe interval of every pool")
		timeout  = flag.String("timeout", "200ms", "probe timeout of a pool whose variant sets none")
		fall     = flag.Int("fall", 2, "fall of every pool")
		rise     = flag.Int("rise", 2, "rise of every pool")
		poll     = flag.Duration("poll", 10*time.Millisecond, "how often each zone is queried")
		silent   = flag.Bool("silent", true, "measure every variant with a silent backend too")
		binary   = flag.String("coredns", "", "coredns binary (default: build ./build)")
		noRaw    = flag.Bool("noraw", false, "run coredns without CAP_NET_RAW (as root: setpriv), so TCP checks connect instead of probing half-open")
	)
	flag.Var(&vs, "variant", "a pool's extra lines, NAME=LINE,LINE (repeatable; default: plain= and fast=fast_interval 250ms)")
	flag.Parse()
	log.SetFlags(0)
	if len(vs) == 0 {
		vs.Set("plain=")
		vs.Set("fast=fast_interval 250ms")
	}

	work, err := os.MkdirTemp("", "healthdns-removal")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	if *binary == "" {
		if *binary, err = netlab.BuildCoreDNS(work); err != nil {
			log.Fatalf("building ./build (run inside the module): %v", err)
		}
	}

	kinds := []string{"refused"}
	if *silent {
		kinds = append(kinds, "silent")
	}
	var pools []*pool
	for _, kind := range kinds {
		for _, v := range vs {
			n := len(pools)
			p := &pool{
				name:   v.name + "/" + kind,
				zone:   fmt.Sprintf("p%d.removal.lan.", n),
				silent: kind == "silent",
				victim: fmt.Sprintf("127.0.1.%d", 2*n+1),
				keeper: fmt.Sprintf("127.0.1.%d", 2*n+2),
				lines:  v.lines,
			}
			pools = append(pools, p)
		}
	}
	var ips []string
	for _, p := range pools {
		ips = append(ips, p.victim, p.keeper)
	}
	port, err := harness.TakePort(ips...)
	if err != nil {
		log.Fatal(err)
	}
	dnsPort, err := harness.TakePort()
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pools {
		p.port = port
		p.keeperLn = mustListen(p.keeper, port)
		p.revive()
	}

	var conf strings.Builder
	fmt.Fprintf(&conf, ".:%d {\n bind 127.0.0.1\n", dnsPort)
	for _, p := range pools {
		lines := []string{fmt.Sprintf("check tcp %d", port), "interval " + interval.String(),
			fmt.Sprintf("rise %d", *rise), fmt.Sprintf("fall %d", *fall), "answers 2"}
		if !slices.ContainsFunc(p.lines, func(l string) bool { return strings.HasPrefix(l, "timeout ") }) {
			lines = append(lines, "timeout "+*timeout)
		}
		conf.WriteString(harness.Pool(strings.TrimSuffix(p.zone, "."), []string{p.victim, p.keeper}, append(lines, p.lines...)...))
	}
	conf.WriteString("}\n")
	confPath := filepath.Join(work, "Corefile")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		log.Fatal(err)
	}

	args := []string{*binary, "-conf", confPath}
	if *noRaw {
		args = append([]string{"setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"}, args...)
	}
	out := &netlab.Buffer{}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); <-exited }
	fail := func(format string, args ...any) {
		stop()
		log.Fatalf(format+"\ncoredns output:\n%s", append(args, out.String())...)
	}
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))

	fmt.Printf("%s, coredns %s, interval %s, rise %d, fall %d, %d trials, polled every %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), *binary, *interval, *rise, *fall, *trials, *poll)
	for _, p := range pools {
		fmt.Printf("  %s: %s\n", p.name, strings.Join(p.lines, "; "))
	}
	for trial := range *trials {
		if !harness.Poll(30*time.Second, 20*time.Millisecond, func() bool { return allAnswer(server, pools) }) {
			fail("trial %d: the pools did not all answer with both backends within 30s", trial+1)
		}
		// A random moment, unrelated to any pool's probe phase, after the victims have been
		// steady for a while.
		time.Sleep(*interval + rand.N(*interval))
		var wg sync.WaitGroup
		for _, p := range pools {
			p.kill()
		}
		for _, p := range pools {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.waitGone(server, *poll, 20*time.Second)
			}()
		}
		wg.Wait()
		var row []string
		for _, p := range pools {
			row = append(row, fmt.Sprintf("%s %4d ms", p.name, p.times[len(p.times)-1].Milliseconds()))
			p.revive()
		}
		fmt.Printf("trial %2d: %s\n", trial+1, strings.Join(row, ", "))
	}
	stop()

	fmt.Printf("\n| pool | extra lines | death | median | p90 | max | min | not removed within 20 s |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range pools {
		name, kind, _ := strings.Cut(p.name, "/")
		s := slices.Clone(p.times)
		slices.Sort(s)
		fmt.Printf("| %s | %s | %s | %d ms | %d ms | %d ms | %d ms | %d |\n", name, strings.Join(p.lines, ", "), kind,
			quantile(s, 0.5).Milliseconds(), quantile(s, 0.9).Milliseconds(), s[len(s)-1].Milliseconds(), s[0].Milliseconds(), p.missed)
	}
}

// pool is one healthdns block of two backends, victim and keeper; only the victim dies.
type pool struct {
	name, zone     string
	silent         bool
	victim, keeper string
	port           int
	lines          []string

	keeperLn net.Listener
	victimLn net.Listener // while alive
	dead     *silentPort  // while dead, if silent
	killed   time.Time
	times    []time.Duration
	missed   int
}

// kill makes the victim refuse, or, if the pool is silent, drop SYNs.
func (p *pool) kill() {
	p.victimLn.Close()
	p.victimLn = nil
	p.killed = time.Now()
	if p.silent {
		s, err := listenSilent(p.victim, p.port)
		if err != nil {
			log.Fatalf("%s: %v", p.name, err)
		}
		p.dead = s
	}
}

// revive makes the victim accept connections again.
func (p *pool) revive() {
	if p.dead != nil {
		p.dead.Close()
		p.dead = nil
	}
	p.victimLn = mustListen(p.victim, p.port)
}

// waitGone queries the pool's zone every poll until the victim is not in the answer, and
// records the time since the kill.
func (p *pool) waitGone(server string, poll, limit time.Duration) {
	for {
		r, err := query(server, p.zone)
		now := time.Now()
		if err == nil && len(r.Answer) > 0 && !slices.Contains(harness.AnswerAddrs(r), p.victim) {
			p.times = append(p.times, now.Sub(p.killed))
			return
		}
		if now.Sub(p.killed) > limit {
			p.times = append(p.times, limit)
			p.missed++
			return
		}
		time.Sleep(poll)
	}
}

func allAnswer(server string, pools []*pool) bool {
	for _, p := range pools {
		r, err := query(server, p.zone)
		if err != nil || !harness.SameSet(harness.AnswerAddrs(r), p.victim, p.keeper) {
			return false
		}
	}
	return true
}

func query(server, zone string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(zone, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	r, _, err := c.Exchange(m, server)
	return r, err
}

// mustListen starts a backend on ip:port that accepts connections and closes them.
func mustListen(ip string, port int) net.Listener {
	var ln net.Listener
	var err error
	for range 250 { // a port just released can take a moment to be bindable again
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		log.Fatalf("backend %s:%d: %v", ip, port, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// silentPort is a listener with room for one connection in its accept queue, filled and never
// accepted: the kernel then drops every further SYN to the port, so a probe, by connect or by a
// half-open SYN, gets no answer (as test/startup_test.go's silentBackend).
type silentPort struct {
	fd     int
	filler net.Conn
}

func listenSilent(ip string, port int) (*silentPort, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("silent %s:%d: %w", ip, port, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	filler, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("silent %s:%d: filling its accept queue: %w", ip, port, err)
	}
	return &silentPort{fd: fd, filler: filler}, nil
}

func (s *silentPort) Close() {
	s.filler.Close()
	syscall.Close(s.fd)
}

// quantile is the nearest-rank quantile of sorted s.
func quantile(s []time.Duration, q float64) time.Duration {
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
