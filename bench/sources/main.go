// Command sources measures live backend lists at scale: one pool of -backends backends (10,000
// by default, all on 127.10.0.0/16) read from a backends_file, and from an etcd prefix, in the
// real coredns binary. For each source it reports the time from process start to the first
// answer with addresses and to the ready plugin's 200, the RSS, and, for -changes one-line
// changes, how long one takes to apply and what it costs:
//
//	go run ./bench/sources                                # 10,000 backends, 5 changes per run
//	go run ./bench/sources -backends 50 -changes 1        # a quick look
//
// A change adds one backend that is up, with priority 200, so that it becomes the only one
// answered: the change is seen when the A answer is exactly it. The removal of that line is seen
// when it has left the answer. Each change is timed from the write (an atomic rename of the
// file, or one put or delete in etcd) to the log line that reports it applied, and to the first
// answer that shows it. Its cost is the number of "(first probe" log lines it caused (each new
// probe target logs its first verdict once: want 1, not 10,000), the coredns_healthdns_probes_total
// series it created, reset or removed, and coredns's CPU time over a -window that starts at the
// write, beside a window just before it with no change.
//
// Each source runs twice: with every backend down (check tcp on a port where nothing listens,
// so every probe is refused at once and the pool answers all_down serve_all), and with every
// backend up (the command listens on each address, as bench/scale's -check tcp does). etcd is
// Debian's /usr/bin/etcd, started on 127.0.0.1 through test/harness, unless -etcd names one.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/bench/internal/proc"
	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	o := options{}
	var sources, states string
	flag.IntVar(&o.backends, "backends", 10000, "backends in the pool")
	flag.IntVar(&o.changes, "changes", 5, "one-line changes (an add, then its removal) per run")
	flag.DurationVar(&o.interval, "interval", time.Second, "probe interval")
	flag.DurationVar(&o.timeout, "timeout", 500*time.Millisecond, "probe timeout")
	flag.DurationVar(&o.window, "window", 3*time.Second, "the CPU window of a change, and the idle window beside it")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "wait after the first answer before measuring")
	flag.StringVar(&o.binary, "coredns", "", "coredns binary (default: build ./build)")
	flag.StringVar(&sources, "sources", "file,etcd", "sources to measure")
	flag.StringVar(&states, "states", "down,up", "backend states to measure: down (refused) and up (listened on)")
	flag.StringVar(&o.etcd, "etcd", "", "etcd client URL to use (default: start /usr/bin/etcd)")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of coredns over the window of each run's first add to DIR/SOURCE-STATE.pprof")
	flag.Parse()
	log.SetFlags(0)
	o.sources, o.states = strings.Split(sources, ","), strings.Split(states, ",")
	if err := run(o, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	backends         int
	changes          int
	interval         time.Duration
	timeout          time.Duration
	window, settle   time.Duration
	binary           string
	sources, states  []string
	etcd             string
	profile          string
	newBackendPrefix string // the added backends' addresses, PREFIX.RUN.CHANGE; default 127.9
}

// run measures every source in every state, printing progress and then the tables to w.
func run(o options, w io.Writer) error {
	results, err := measureAll(o, w)
	if err != nil {
		return err
	}
	printTables(w, results)
	return nil
}

// measureAll measures every source in every state, printing progress to w.
func measureAll(o options, w io.Writer) (results []result, err error) {
	for _, s := range o.sources {
		if s != "file" && s != "etcd" {
			return nil, fmt.Errorf("unknown source %q: want file or etcd", s)
		}
	}
	for _, s := range o.states {
		if s != "down" && s != "up" {
			return nil, fmt.Errorf("unknown state %q: want down or up", s)
		}
	}
	if o.newBackendPrefix == "" {
		o.newBackendPrefix = "127.9"
	}
	proc.RaiseFileLimit()
	work, err := os.MkdirTemp("", "healthdns-sources")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if o.binary == "" {
		if o.binary, err = netlab.BuildCoreDNS(work); err != nil {
			return nil, fmt.Errorf("building ./build (run inside the module): %v", err)
		}
	}
	if o.etcd == "" && slices.Contains(o.sources, "etcd") {
		tb := &commandTB{dir: work}
		defer tb.cleanup()
		defer func() {
			switch p := recover().(type) {
			case nil:
			case tbFatal:
				err = errors.New(string(p))
			default:
				panic(p)
			}
		}()
		o.etcd = harness.StartEtcd(tb).Endpoint()
	}

	addrs := backendAddrs(o.backends)
	ports := map[string]int{}
	for _, state := range o.states {
		if ports[state], err = harness.TakePort(); err != nil {
			return nil, err
		}
		if state == "up" {
			lns, err := listenAll(addrs, ports[state])
			if err != nil {
				return nil, err
			}
			defer closeAll(lns)
		}
	}

	fmt.Fprintf(w, "%s, coredns %s, %d backends, interval %s, timeout %s, %d changes per run, window %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), o.binary, o.backends, o.interval, o.timeout, o.changes, o.window)
	for _, src := range o.sources {
		for _, state := range o.states {
			b := &bench{o: o, work: work, source: src, state: state, index: len(results), addrs: addrs, port: ports[state], progress: w}
			r, err := b.measure()
			if err != nil {
				return results, fmt.Errorf("%s, backends %s: %w", src, state, err)
			}
			results = append(results, r)
		}
	}
	return results, nil
}

// result is what one run (a source, a state) measured.
type result struct {
	source, state     string
	backends          int
	load              time.Duration // etcd: putting the list before coredns starts
	firstAnswer       time.Duration // process start to the first answer with addresses
	ready             time.Duration // process start to the ready plugin's 200
	rss, heap         float64       // MiB, after settling
	rssEnd            float64       // MiB, after the changes
	idleCPU           []float64     // CPU seconds of coredns over a window without change
	add, remove       changes
	startFirstProbes  int // "(first probe" lines from start to the first answer's settling
	unexpectedAnswers int // answers during a change that were neither the old nor the new set
}

// changes are one kind of change's measurements, one entry per change.
type changes struct {
	applied     []time.Duration // write to coredns's log line that it applied the list
	answered    []time.Duration // write to the first answer that shows it
	firstProbes []int           // "(first probe" lines in the window
	cpu         []float64       // coredns's CPU seconds over the window
	created     []int           // probes_total series that appeared
	reset       []int           // probes_total series whose value went down
	deleted     []int           // probes_total series that went
}

// bench is one run: a coredns with one pool fed by one source, its backends in one state.
type bench struct {
	o             options
	work          string
	source, state string
	index         int
	addrs         []string
	port          int
	progress      io.Writer

	zone       string // "down.file.sources.lan."
	file       string // backends_file
	etcd       *clientv3.Client
	prefix     string // backends_etcd
	dnsServer  string
	metricsURL string
	pprofPort  int
	out        *lineLog
	pid        int
}

func (b *bench) measure() (r result, err error) {
	r = result{source: b.source, state: b.state, backends: len(b.addrs)}
	b.zone = fmt.Sprintf("%s.%s.sources.lan.", b.state, b.source)
	b.prefix = "/healthdns/" + strings.TrimSuffix(b.zone, ".") + "/"
	dnsPort, metricsPort, readyPort, err := takePorts3()
	if err != nil {
		return r, err
	}
	if b.o.profile != "" {
		if b.pprofPort, err = harness.TakePort(); err != nil {
			return r, err
		}
	}
	b.dnsServer = net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
	b.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)

	// The list, before coredns starts.
	var sourceLines string
	switch b.source {
	case "file":
		b.file = filepath.Join(b.work, strings.TrimSuffix(b.zone, ".")+".backends")
		if err := b.writeFile(""); err != nil {
			return r, err
		}
		sourceLines = "  backends_file " + b.file + "\n"
	case "etcd":
		b.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{b.o.etcd}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return r, err
		}
		defer b.etcd.Close()
		t0 := time.Now()
		if err := b.putAll(); err != nil {
			return r, err
		}
		r.load = time.Since(t0)
		sourceLines = fmt.Sprintf("  backends_etcd {\n   endpoint %s\n  }\n", b.o.etcd)
	}

	conf := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n prometheus 127.0.0.1:%d\n ready 127.0.0.1:%d\n", dnsPort, metricsPort, readyPort)
	if b.pprofPort != 0 {
		conf += fmt.Sprintf(" pprof 127.0.0.1:%d\n", b.pprofPort)
	}
	conf += fmt.Sprintf(" healthdns %s {\n%s  check tcp %d\n  interval %s\n  timeout %s\n  answers 8\n }\n}\n",
		b.zone, sourceLines, b.port, b.o.interval, b.o.timeout)
	confPath := filepath.Join(b.work, strings.TrimSuffix(b.zone, ".")+".Corefile")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return r, err
	}

	// The backends this run adds, one per change, all up on the run's port.
	var news []string
	for k := range b.o.changes {
		addr := fmt.Sprintf("%s.%d.%d", b.o.newBackendPrefix, b.index, k+1)
		ln, err := listen(addr, b.port)
		if err != nil {
			return r, err
		}
		defer ln.Close()
		news = append(news, addr)
	}

	b.out = &lineLog{}
	cmd := exec.Command(b.o.binary, "-conf", confPath)
	cmd.Stdout, cmd.Stderr = b.out, b.out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	b.pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if err != nil {
			err = fmt.Errorf("%w\ncoredns output (last lines):\n%s", err, b.out.tail(40))
		}
	}()
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}

	// Start: the first answer with addresses, and the ready plugin's 200, polled side by side.
	var wg sync.WaitGroup
	var answered, ready time.Time
	wg.Add(2)
	go func() {
		defer wg.Done()
		harness.Poll(2*time.Minute, 2*time.Millisecond, func() bool {
			if a, err := b.answer(); err == nil && len(a) > 0 {
				answered = time.Now()
			}
			return !answered.IsZero() || !alive()
		})
	}()
	go func() {
		defer wg.Done()
		url := fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)
		harness.Poll(2*time.Minute, 2*time.Millisecond, func() bool {
			if harness.HTTPOK(url) {
				ready = time.Now()
			}
			return !ready.IsZero() || !alive()
		})
	}()
	wg.Wait()
	if answered.IsZero() || ready.IsZero() {
		return r, fmt.Errorf("no answer with addresses or no ready 200 within 2 minutes (coredns running: %v)", alive())
	}
	r.firstAnswer, r.ready = answered.Sub(start), ready.Sub(start)
	fmt.Fprintf(b.progress, "%s, %s: first answer %s, ready %s after start", b.source, b.state, ms(r.firstAnswer), ms(r.ready))
	if b.source == "etcd" {
		fmt.Fprintf(b.progress, " (the %d keys were put in %s before)", len(b.addrs), ms(r.load))
	}
	fmt.Fprintln(b.progress)

	time.Sleep(b.o.settle)
	r.startFirstProbes = b.out.count(0, "(first probe")
	r.rss = rssMiB(b.pid)
	if m, err := harness.ScrapeURL(b.metricsURL); err == nil {
		heap, _ := m.Value("go_memstats_heap_inuse_bytes", nil)
		r.heap = heap / (1 << 20)
	}
	// Every backend is down, or every one up, before any change: otherwise the run measures
	// something else (a prober that cannot keep up, a port someone else listens on).
	if up, err := b.upCount(); err != nil {
		return r, err
	} else if want := map[string]int{"down": 0, "up": len(b.addrs)}[b.state]; up != want {
		return r, fmt.Errorf("%d backends up after settling, want %d", up, want)
	}

	for k, addr := range news {
		if !alive() {
			return r, errors.New("coredns exited")
		}
		r.idleCPU = append(r.idleCPU, b.idleWindow())
		profile := ""
		if k == 0 && b.o.profile != "" {
			profile = filepath.Join(b.o.profile, b.source+"-"+b.state+".pprof")
		}
		if err := b.change(&r.add, &r.unexpectedAnswers, addr, true, profile); err != nil {
			return r, fmt.Errorf("adding %s: %w", addr, err)
		}
		if err := b.change(&r.remove, &r.unexpectedAnswers, addr, false, ""); err != nil {
			return r, fmt.Errorf("removing %s: %w", addr, err)
		}
		fmt.Fprintf(b.progress, "  change %d: add %s applied %s, answered %s, %d first probes, cpu %.2fs (idle %.2fs); remove applied %s, answered %s, %d first probes, cpu %.2fs\n",
			k+1, addr, ms(last(r.add.applied)), ms(last(r.add.answered)), last(r.add.firstProbes), last(r.add.cpu), last(r.idleCPU),
			ms(last(r.remove.applied)), ms(last(r.remove.answered)), last(r.remove.firstProbes), last(r.remove.cpu))
	}
	r.rssEnd = rssMiB(b.pid)
	return r, nil
}

// idleWindow is coredns's CPU time over a window without change.
func (b *bench) idleWindow() float64 {
	c0 := cpuSeconds(b.pid)
	time.Sleep(b.o.window)
	return cpuSeconds(b.pid) - c0
}

// change adds addr (as the only backend of priority 200) or removes it, and records how long it
// took to be applied and answered, and what it cost over a window from the write.
func (b *bench) change(c *changes, unexpected *int, addr string, add bool, profile string) error {
	before, err := b.probeSeries()
	if err != nil {
		return err
	}
	mark := b.out.len()
	applied := "removed 1 (" + addr + ")"
	seen := func(a []string) bool { return len(a) > 0 && !slices.Contains(a, addr) }
	if add {
		applied = "added 1 (" + addr + ")"
		seen = func(a []string) bool { return len(a) == 1 && a[0] == addr }
	}
	var profiled chan error
	if profile != "" {
		profiled = make(chan error, 1)
		go func() {
			profiled <- proc.Download(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", b.pprofPort, int(b.o.window.Seconds())), profile)
		}()
		time.Sleep(50 * time.Millisecond) // the profile starts when its request arrives
	}

	c0 := cpuSeconds(b.pid)
	written := time.Now()
	if err := b.write(addr, add); err != nil {
		return err
	}
	var answeredAt time.Time
	harness.Poll(b.o.window, time.Millisecond, func() bool {
		a, err := b.answer()
		switch {
		case err != nil:
		case seen(a):
			answeredAt = time.Now()
		case add && len(a) > 0 && slices.Contains(a, addr), !add && !(len(a) == 1 && a[0] == addr):
			*unexpected++ // a mix of the old answer and the new
		}
		return !answeredAt.IsZero()
	})
	if answeredAt.IsZero() {
		return fmt.Errorf("not answered within the window of %s", b.o.window)
	}
	time.Sleep(time.Until(written.Add(b.o.window)))
	cpu := cpuSeconds(b.pid) - c0
	appliedAt, ok := b.out.find(mark, applied)
	if !ok {
		return fmt.Errorf("no log line %q", applied)
	}
	firstProbes := b.out.count(mark, "(first probe")
	if profiled != nil {
		if err := <-profiled; err != nil {
			log.Printf("profile: %v", err)
		}
	}
	after, err := b.probeSeries()
	if err != nil {
		return err
	}
	var created, reset, deleted int
	for k, v := range after {
		if was, ok := before[k]; !ok {
			created++
		} else if v < was {
			reset++
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			deleted++
		}
	}
	c.applied = append(c.applied, appliedAt.Sub(written))
	c.answered = append(c.answered, answeredAt.Sub(written))
	c.firstProbes = append(c.firstProbes, firstProbes)
	c.cpu = append(c.cpu, cpu)
	c.created = append(c.created, created)
	c.reset = append(c.reset, reset)
	c.deleted = append(c.deleted, deleted)
	return nil
}

// write makes the one-line change: the list with or without addr.
func (b *bench) write(addr string, add bool) error {
	switch b.source {
	case "file":
		extra := ""
		if add {
			extra = addr + " priority 200\n"
		}
		return b.writeFile(extra)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if add {
			_, err = b.etcd.Put(ctx, b.prefix+addr, "priority 200")
		} else {
			_, err = b.etcd.Delete(ctx, b.prefix+addr)
		}
		return err
	}
}

// writeFile writes the backends file, the pool's addresses and extra, by renaming a complete
// file over it, as README.md asks of a writer.
func (b *bench) writeFile(extra string) error {
	var buf bytes.Buffer
	for _, a := range b.addrs {
		buf.WriteString(a)
		buf.WriteByte('\n')
	}
	buf.WriteString(extra)
	tmp := b.file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, b.file)
}

// putAll puts a key per backend under the prefix, in transactions of 128 puts (etcd's default
// --max-txn-ops), after deleting what an earlier run left there.
func (b *bench) putAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.etcd.Delete(ctx, b.prefix, clientv3.WithPrefix()); err != nil {
		return err
	}
	for lo := 0; lo < len(b.addrs); lo += 128 {
		var ops []clientv3.Op
		for _, a := range b.addrs[lo:min(lo+128, len(b.addrs))] {
			ops = append(ops, clientv3.OpPut(b.prefix+a, ""))
		}
		if _, err := b.etcd.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

// answer is the pool's A answer.
func (b *bench) answer() ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(b.zone, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	r, _, err := c.Exchange(m, b.dnsServer)
	if err != nil {
		return nil, err
	}
	return harness.AnswerAddrs(r), nil
}

// probeSeries is every coredns_healthdns_probes_total series of the scrape, by its labels.
func (b *bench) probeSeries() (map[string]float64, error) {
	m, err := harness.ScrapeURL(b.metricsURL)
	if err != nil {
		return nil, err
	}
	series := map[string]float64{}
	for _, s := range m.Find("coredns_healthdns_probes_total", nil) {
		series[s.Labels["backend"]+" "+s.Labels["check"]+" "+s.Labels["result"]] = s.Value
	}
	return series, nil
}

// upCount is how many of the pool's backends coredns_healthdns_backend_up says are up.
func (b *bench) upCount() (int, error) {
	m, err := harness.ScrapeURL(b.metricsURL)
	if err != nil {
		return 0, err
	}
	up, _ := m.Value("coredns_healthdns_backend_up", map[string]string{"zone": b.zone})
	return int(up), nil
}

// lineLog keeps coredns's output line by line, each with the time it arrived, so that a log
// line can be timed without copying the whole output at every poll.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []logLine
}

type logLine struct {
	at   time.Time
	text string
}

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, logLine{now, string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	l.partial = append([]byte(nil), l.partial...)
	return len(p), nil
}

func (l *lineLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// find is the arrival time of the first line from the from'th on that holds s.
func (l *lineLog) find(from int, s string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines[from:] {
		if strings.Contains(line.text, s) {
			return line.at, true
		}
	}
	return time.Time{}, false
}

// count is how many lines from the from'th on hold s.
func (l *lineLog) count(from int, s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines[from:] {
		if strings.Contains(line.text, s) {
			n++
		}
	}
	return n
}

func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines[max(0, len(l.lines)-n):] {
		b.WriteString(line.text)
		b.WriteByte('\n')
	}
	b.Write(l.partial)
	return b.String()
}

// printTables prints the startup table and the change table, in markdown.
func printTables(w io.Writer, results []result) {
	fmt.Fprintf(w, "\n| source | backends | state | start to first answer | start to ready | first probes at start | RSS MiB (start, end) | heap MiB |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		src := r.source
		if r.source == "etcd" {
			src += fmt.Sprintf(" (put in %s)", ms(r.load))
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %d | %.0f, %.0f | %.0f |\n", src, r.backends, r.state,
			ms(r.firstAnswer), ms(r.ready), r.startFirstProbes, r.rss, r.rssEnd, r.heap)
	}
	fmt.Fprintf(w, "\n| source | state | change | applied (log) median / max | answered median / max | first probes per change | probes_total series created / reset / deleted | CPU s in the window: median change / median idle |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		for _, c := range []struct {
			what string
			c    changes
		}{{"add", r.add}, {"remove", r.remove}} {
			fmt.Fprintf(w, "| %s | %s | %s | %s / %s | %s / %s | %s | %s / %s / %s | %.2f / %.2f |\n", r.source, r.state, c.what,
				ms(median(c.c.applied)), ms(slices.Max(c.c.applied)), ms(median(c.c.answered)), ms(slices.Max(c.c.answered)),
				spread(c.c.firstProbes), spread(c.c.created), spread(c.c.reset), spread(c.c.deleted),
				medianF(c.c.cpu), medianF(r.idleCPU))
		}
		if r.unexpectedAnswers > 0 {
			fmt.Fprintf(w, "\n%s, %s: %d answers during changes were neither the old set nor the new one\n", r.source, r.state, r.unexpectedAnswers)
		}
	}
}

// spread is "n" when every value is n, else "min–max".
func spread(v []int) string {
	if len(v) == 0 {
		return "n/a"
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if lo == hi {
		return strconv.Itoa(lo)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func median(v []time.Duration) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func last[T any](v []T) T { return v[len(v)-1] }

// ms formats d in whole milliseconds, or tenths below 10 ms.
func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// backendAddrs returns n distinct addresses in 127.10.0.0/15, which loopback answers.
func backendAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		j := i + 1
		out[i] = fmt.Sprintf("127.%d.%d.%d", 10+j>>16, (j>>8)&255, j&255)
	}
	return out
}

// listen starts a backend on ip:port that accepts connections and closes them.
func listen(ip string, port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("backend %s:%d: %w", ip, port, err)
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
	return ln, nil
}

func listenAll(addrs []string, port int) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := listen(a, port)
		if err != nil {
			closeAll(lns)
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func takePorts3() (a, b, c int, err error) {
	if a, err = harness.TakePort(); err != nil {
		return
	}
	if b, err = harness.TakePort(); err != nil {
		return
	}
	c, err = harness.TakePort()
	return
}

// commandTB lets the command start etcd with test/harness's StartEtcd, which is written for
// tests. It provides what StartEtcd and FreePort call; any other method of testing.TB would
// panic on the nil interface.
type commandTB struct {
	testing.TB
	dir      string
	cleanups []func()
	failed   bool
}

// tbFatal is the panic of a Fatal, which run turns back into an error.
type tbFatal string

func (t *commandTB) Helper()                           {}
func (t *commandTB) TempDir() string                   { return t.dir }
func (t *commandTB) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *commandTB) Failed() bool                      { return t.failed }
func (t *commandTB) Logf(format string, args ...any)   { log.Printf(format, args...) }
func (t *commandTB) Fatal(args ...any)                 { panic(tbFatal(fmt.Sprint(args...))) }
func (t *commandTB) Fatalf(format string, args ...any) { panic(tbFatal(fmt.Sprintf(format, args...))) }
func (t *commandTB) Skipf(format string, args ...any)  { panic(tbFatal(fmt.Sprintf(format, args...))) }
func (t *commandTB) Errorf(format string, args ...any) {
	t.failed = true
	log.Printf(format, args...)
}

func (t *commandTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// cpuSeconds and rssMiB read 0 for a process that is gone: its figures are then missing.
func cpuSeconds(pid int) float64 {
	v, _ := proc.CPUSeconds(pid)
	return v
}

func rssMiB(pid int) float64 {
	v, _ := proc.RSSMiB(pid)
	return v
}
