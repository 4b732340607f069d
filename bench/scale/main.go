// Command scale measures healthdns's probing cost as pools grow: it starts the real coredns
// binary on a Corefile of many zones and backends (all on 127.0.0.0/8), and reports the time to
// Ready, CPU, RSS, probe lateness, how evenly probes are spread, and the time a reload takes.
//
//	go run ./bench/scale -backends 10000 -zones 1000 -check tcp
//	go run ./bench/scale -backends 10000 -zones 1000 -check icmp   # needs root or ping_group_range
//	go run ./bench/scale -backends 1000 -zones 100 -check http
//
// With -check tcp or http it listens itself on every backend address (for http net/http
// answers every request with a bodiless 200), records when each SYN arrives, which shows the send-time
// distribution over the interval, and counts the sockets left in TIME_WAIT on either side. With -netns (root) the
// backends live in a network namespace instead of on loopback (see netns.go).
package main

import (
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/healthdns/healthdns/bench/internal/proc"
	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

func main() {
	var (
		backends = flag.Int("backends", 1000, "backends in all")
		zones    = flag.Int("zones", 100, "zones; backends are spread evenly over them")
		check    = flag.String("check", "tcp", "tcp, icmp or http")
		interval = flag.Duration("interval", time.Second, "probe interval")
		timeout  = flag.Duration("timeout", 500*time.Millisecond, "probe timeout")
		window   = flag.Duration("measure", 20*time.Second, "how long to measure steady state")
		binary   = flag.String("coredns", "", "coredns binary (default: build ./build)")
		cpu      = flag.String("cpu", "1", "CPU list to pin coredns to with taskset (empty: no pinning)")
		qps      = flag.Duration("qps", 0, "after measuring, run dnsperf (pinned to CPU 0) this long against a zone and report its QPS")
		profile  = flag.String("profile", "", "write a CPU profile of coredns over the measuring window to this file (go tool pprof -top FILE)")
		inNS     = flag.Bool("netns", false, "put the backends in a network namespace behind a veth (needs root) instead of on loopback")
		noRaw    = flag.Bool("noraw", false, "run coredns without CAP_NET_RAW (as root: setpriv), so TCP checks connect instead of probing half-open")
		pairs    = flag.Int("pairs", 0, "with -qps: then alternate this many times between 10 backends and all of them by reloading, running dnsperf after each, and report each pair's ratio")
	)
	flag.Parse()
	log.SetFlags(0)
	if *backends < *zones || *zones < 1 {
		log.Fatal("need at least one backend per zone")
	}
	proc.RaiseFileLimit()

	work, err := os.MkdirTemp("", "healthdns-scale")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	if *binary == "" {
		if *binary, err = netlab.BuildCoreDNS(work); err != nil {
			log.Fatalf("building ./build (run inside the module): %v", err)
		}
	}

	addrs, listen := backendAddrs(*backends), netListen
	if *inNS {
		remove, err := makeBackendNamespace()
		if err != nil {
			log.Fatal(err)
		}
		cleanups = append(cleanups, remove)
		defer remove()
		addrs, listen = namespaceAddrs(*backends), listenInNamespace
	}
	dnsPort, metricsPort, readyPort, backendPort := freePort(), freePort(), freePort(), freePort()
	pprofPort := 0
	if *profile != "" {
		pprofPort = freePort()
	}
	var arrivals *arrivalLog
	if *check == "tcp" || *check == "http" {
		listenAll(addrs, backendPort, listen, *check == "http")
		arrivals = &arrivalLog{}
		tap := func() error { return tapSYNs("lo", backendPort, arrivals) }
		if *inNS {
			tap = func() error {
				return netlab.InNamespace(backendNS, func() error { return tapSYNs(backendLink, backendPort, arrivals) })
			}
		}
		if err := tap(); err != nil {
			log.Printf("no send-time spread: %v", err)
			arrivals = nil
		}
	}
	conf := filepath.Join(work, "Corefile")
	spec := Spec{Zones: *zones, Addrs: addrs, Check: *check, Port: backendPort, Interval: *interval, Timeout: *timeout, DNSPort: dnsPort, MetricsPort: metricsPort, ReadyPort: readyPort, PprofPort: pprofPort}
	if err := os.WriteFile(conf, []byte(spec.Corefile()), 0o644); err != nil {
		fatal("%v", err)
	}

	args := []string{*binary, "-conf", conf}
	if *noRaw {
		args = append([]string{"setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"}, args...)
	}
	if *cpu != "" {
		args = append([]string{"taskset", "-c", *cpu}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	out := serverOutput
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fatal("%v", err)
	}
	server = cmd
	serverExited = make(chan struct{})
	go func() { cmd.Wait(); close(serverExited) }()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); <-serverExited }()

	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	ready := waitFor(2*time.Minute, func() bool { return harness.HTTPOK(fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)) })

	time.Sleep(3 * *interval) // let the first rounds settle into their phases
	before := histogramOf(scrape(metrics), "coredns_healthdns_probe_lateness_seconds")
	cpuBefore := cpuSeconds(cmd.Process.Pid)
	driverBefore := cpuSeconds(os.Getpid())
	arrivals.reset()
	t0 := time.Now()
	profiled := make(chan struct{})
	go func() {
		defer close(profiled)
		if *profile != "" {
			url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", pprofPort, int(window.Seconds()))
			if err := proc.Download(url, *profile); err != nil {
				log.Printf("profile: %v", err)
			}
		}
	}()
	time.Sleep(*window)
	spread := arrivals.spread(*interval) // before dnsperf and the reload add theirs
	proberTW, backendTW := timeWait(backendPort)
	<-profiled
	cpuUsed := cpuSeconds(cmd.Process.Pid) - cpuBefore
	driverUsed := cpuSeconds(os.Getpid()) - driverBefore
	elapsed := time.Since(t0)
	m := scrape(metrics)
	stack, _ := m.Value("go_memstats_stack_inuse_bytes", nil)
	heap, _ := m.Value("go_memstats_heap_inuse_bytes", nil)
	after := histogramOf(m, "coredns_healthdns_probe_lateness_seconds")
	rss := rssMiB(cmd.Process.Pid)
	late := after.minus(before)
	up, _ := m.Value("coredns_healthdns_backend_up", nil)

	if *qps > 0 {
		fmt.Printf("dnsperf while probing %d %s targets: %.0f qps\n", *backends, *check, dnsperf(dnsPort, *qps, work))
	}

	// reloadTo writes sp's Corefile and returns how long coredns took to log its reload.
	reloadTo := func(sp Spec) time.Duration {
		os.WriteFile(conf, []byte(sp.Corefile()), 0o644)
		reloads := strings.Count(out.String(), "Reloading complete")
		r0 := time.Now()
		cmd.Process.Signal(syscall.SIGUSR1)
		waitFor(2*time.Minute, func() bool { return strings.Count(out.String(), "Reloading complete") > reloads })
		return time.Since(r0)
	}
	// Reload: one backend fewer in the first zone.
	spec.Addrs = addrs[1:]
	reload := reloadTo(spec)

	if *qps > 0 && *pairs > 0 {
		full, idle := spec, spec
		full.Addrs = addrs
		idle.Addrs, idle.Zones = addrs[:min(10, len(addrs))], 1
		var ratios []float64
		for i := range *pairs {
			var q [2]float64
			for j, sp := range []Spec{idle, full} {
				reloadTo(sp)
				time.Sleep(3 * *interval) // past the first round, which probes every target at once
				q[j] = dnsperf(dnsPort, *qps, work)
			}
			ratios = append(ratios, q[1]/q[0])
			fmt.Printf("pair %d: %.0f qps probing %d, %.0f qps probing %d: ratio %.2f\n", i+1, q[0], len(idle.Addrs), q[1], *backends, q[1]/q[0])
		}
		slices.Sort(ratios)
		median := (ratios[(len(ratios)-1)/2] + ratios[len(ratios)/2]) / 2
		fmt.Printf("median ratio of %d pairs: %.3f\n", len(ratios), median)
	}

	fmt.Printf("| %s | %d | %d | %s | %.0f ms | %.2f | %.0f | %s | %s | %d/%d | %.0f ms |\n",
		*check, *backends, *zones, *interval, float64(ready.Sub(start).Milliseconds()), cpuUsed/elapsed.Seconds(), rss,
		late.quantile(0.5), late.quantile(0.99), int(up), *backends, float64(reload.Milliseconds()))
	fmt.Printf("\n%s %d: coredns stacks %.0f MiB, heap %.0f MiB; this driver (the backends' side) used %.2f cores\n",
		*check, *backends, stack/(1<<20), heap/(1<<20), driverUsed/elapsed.Seconds())
	if *check == "tcp" || *check == "http" {
		fmt.Printf("sockets in TIME_WAIT at the end of the window: %d on the prober's side (to port %d), %d on the backends' side (from it)\n", proberTW, backendPort, backendTW)
	}
	if arrivals != nil {
		fmt.Printf("SYNs the backends received per tenth of the interval (send-time spread over %s): %v\n", *window, spread)
	}
}

// dnsperf runs dnsperf on CPU 0 against z0.scale.lan and returns its queries per second.
func dnsperf(port int, d time.Duration, work string) float64 {
	qfile := filepath.Join(work, "queries")
	os.WriteFile(qfile, []byte("www.z0.scale.lan A\n"), 0o644)
	out, err := exec.Command("taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(port),
		"-d", qfile, "-l", strconv.Itoa(int(d.Seconds())), "-c", "8", "-q", "200").CombinedOutput()
	if err != nil {
		fatal("dnsperf: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "Queries" && f[2] == "second:" {
			v, _ := strconv.ParseFloat(f[3], 64)
			return v
		}
	}
	fatal("no QPS in dnsperf output:\n%s", out)
	return 0
}

// Spec describes the generated Corefile.
type Spec struct {
	Zones             int
	Addrs             []string
	Check             string
	Port              int
	Interval, Timeout time.Duration
	DNSPort           int
	MetricsPort       int // prometheus
	ReadyPort         int
	PprofPort         int // net/http/pprof; 0: none
}

// Corefile spreads the backends evenly over the zones z0.scale.lan ... zN.scale.lan.
func (s Spec) Corefile() string {
	var b strings.Builder
	fmt.Fprintf(&b, ".:%d {\n bind 127.0.0.1\n prometheus 127.0.0.1:%d\n ready 127.0.0.1:%d\n", s.DNSPort, s.MetricsPort, s.ReadyPort)
	if s.PprofPort != 0 {
		fmt.Fprintf(&b, " pprof 127.0.0.1:%d\n", s.PprofPort)
	}
	check := "icmp"
	if s.Check == "tcp" || s.Check == "http" {
		check = fmt.Sprintf("%s %d", s.Check, s.Port)
	}
	per := (len(s.Addrs) + s.Zones - 1) / s.Zones
	for z := 0; z < s.Zones; z++ {
		lo, hi := z*per, min((z+1)*per, len(s.Addrs))
		if lo >= hi {
			break
		}
		fmt.Fprintf(&b, " healthdns z%d.scale.lan {\n", z)
		for _, a := range s.Addrs[lo:hi] {
			fmt.Fprintf(&b, "  backend %s\n", a)
		}
		fmt.Fprintf(&b, "  check %s\n  interval %s\n  timeout %s\n }\n", check, s.Interval, s.Timeout)
	}
	b.WriteString("}\n")
	return b.String()
}

// backendAddrs returns n distinct addresses in 127.16.0.0/12, which loopback answers.
func backendAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		j := i + 1
		out[i] = fmt.Sprintf("127.%d.%d.%d", 16+j>>16, (j>>8)&255, j&255)
	}
	return out
}

type arrivalLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *arrivalLog) reset() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.times = a.times[:0]
	a.mu.Unlock()
}

// spread counts arrivals per tenth of the interval (by wall clock modulo the interval).
func (a *arrivalLog) spread(interval time.Duration) [10]int {
	if a == nil {
		return [10]int{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var bins [10]int
	for _, t := range a.times {
		bins[int(time.Duration(t.UnixNano())%interval*10/interval)]++
	}
	return bins
}

func netListen(address string) (net.Listener, error) { return net.Listen("tcp", address) }

func listenAll(addrs []string, port int, listen func(string) (net.Listener, error), serveHTTP bool) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, ip := range addrs {
		ln, err := listen(net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			fatal("listen %s: %v", ip, err)
		}
		if serveHTTP {
			// net/http, as a Go backend would serve its health page: a bodiless 200, and,
			// since the check asks for Connection: close, a FIN after it.
			go http.Serve(ln, ok)
			continue
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
	}
}

// timeWait counts the IPv4 sockets of this network namespace in TIME_WAIT whose remote port is
// port (the prober's side of a check) and whose local port is port (the backends' side).
func timeWait(port int) (prober, backend int) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return -1, -1
	}
	hexPort := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "06" { // TCP_TIME_WAIT
			continue
		}
		if strings.HasSuffix(f[2], hexPort) {
			prober++
		}
		if strings.HasSuffix(f[1], hexPort) {
			backend++
		}
	}
	return prober, backend
}

type histogram struct {
	bounds []float64
	counts []float64 // cumulative, as exported
}

func (h histogram) minus(o histogram) histogram {
	d := histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		d.counts[i] = h.counts[i]
		if i < len(o.counts) {
			d.counts[i] -= o.counts[i]
		}
	}
	return d
}

// quantile returns the upper bound of the bucket holding quantile q ("≤ 5ms").
func (h histogram) quantile(q float64) string {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return "n/a"
	}
	total := h.counts[len(h.counts)-1]
	for i, c := range h.counts {
		if c >= q*total {
			if math.IsInf(h.bounds[i], 1) {
				return "> " + fmtSeconds(h.bounds[i-1])
			}
			return "≤ " + fmtSeconds(h.bounds[i])
		}
	}
	return "n/a"
}

func fmtSeconds(s float64) string { return time.Duration(s * float64(time.Second)).String() }

// histogramOf sums a histogram's buckets over all its label sets.
func histogramOf(m *harness.Metrics, name string) histogram {
	byBound := map[float64]float64{}
	for _, smp := range m.Find(name+"_bucket", nil) {
		bound, err := strconv.ParseFloat(smp.Labels["le"], 64) // "+Inf" included
		if err == nil {
			byBound[bound] += smp.Value
		}
	}
	var h histogram
	for b := range byBound {
		h.bounds = append(h.bounds, b)
	}
	sort.Float64s(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, byBound[b])
	}
	return h
}

// scrape reads coredns's metrics, or gives up with the tail of its output.
func scrape(url string) *harness.Metrics {
	m, err := harness.ScrapeURL(url)
	if err != nil {
		out := serverOutput.String()
		fatal("%v; coredns output (last 3000 bytes):\n%s", err, out[max(0, len(out)-3000):])
	}
	return m
}

// serverOutput is coredns's output, shown when the driver gives up.
var serverOutput = &netlab.Buffer{}

// server is the coredns being measured; fatal stops it, since log.Fatal skips deferred calls
// and a forgotten server would go on probing thousands of targets.
var server *exec.Cmd

// serverExited is closed when server has exited.
var serverExited chan struct{}

// cleanups undo what the driver set up (the backends' namespace); fatal runs them too.
var cleanups []func()

func fatal(format string, args ...any) {
	if server != nil && server.Process != nil {
		server.Process.Kill()
		<-serverExited
	}
	for _, c := range cleanups {
		c()
	}
	log.Fatalf(format, args...)
}

// waitFor polls cond every 5ms until it holds and returns when it did, or gives up when
// coredns exits first or limit passes.
func waitFor(limit time.Duration, cond func() bool) time.Time {
	exited := func() bool {
		select {
		case <-serverExited:
			return true
		default:
			return false
		}
	}
	var held bool
	harness.Poll(limit, 5*time.Millisecond, func() bool { held = cond(); return held || exited() })
	switch {
	case held:
		return time.Now()
	case exited():
		fatal("coredns exited:\n%s", serverOutput.String())
	default:
		fatal("gave up after %s; coredns output:\n%s", limit, serverOutput.String())
	}
	return time.Time{}
}

// freePort returns a port on 127.0.0.1 that no other call has returned.
func freePort() int {
	port, err := harness.TakePort()
	if err != nil {
		fatal("%v", err)
	}
	return port
}

func cpuSeconds(pid int) float64 {
	v, err := proc.CPUSeconds(pid)
	if err != nil {
		fatal("%v", err)
	}
	return v
}

func rssMiB(pid int) float64 {
	v, err := proc.RSSMiB(pid)
	if err != nil {
		fatal("%v", err)
	}
	return v
}
