package test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// The chaos pools' health checking. A backend that goes down leaves the answers within
// fall × interval + timeout (README, `fall`), and one interval more covers where in its interval
// the backend happened to die: chaosStaleBound.
const (
	chaosInterval = 100 * time.Millisecond
	chaosTimeout  = 50 * time.Millisecond
	chaosFall     = 2
	chaosAnswers  = 3

	chaosStaleBound = chaosFall*chaosInterval + chaosTimeout + chaosInterval
	// A backends file or etcd change "is applied within a second" (README, Live backends).
	chaosListDelay = time.Second
)

// chaosParams are TestChaos's figures. They come from the environment so that bench/chaos/run.sh
// runs this very test at full size; the defaults are the CI version's.
type chaosParams struct {
	duration time.Duration // of the load
	qps      int           // the load generator's target rate
	backends int           // flapping backends, shared out among the three pools
	// slack is added to every bound the answers are checked against: on a loaded 2-core
	// machine a probe, a snapshot rebuild or the client's own timestamp waits for a CPU, by
	// hundreds of milliseconds at a load average of 20 (TestChaos logs the probes' lateness).
	slack time.Duration
	// wait is how long a query waits for its answer before it is sent once more (with a new
	// ID), and then again before it counts as timed out. "Zero timeouts" means no query unanswered
	// after that one retry, as a stub resolver asks again: each worker has one query out, so
	// the load never fills the server's socket buffer, and on loopback nothing else drops a
	// datagram. A query asked again is counted and logged; only one asked twice in vain fails.
	wait time.Duration
}

func chaosParamsFromEnv(t *testing.T) chaosParams {
	t.Helper()
	p := chaosParams{duration: 12 * time.Second, qps: 1500, backends: 50, slack: time.Second, wait: 2 * time.Second}
	durations := map[string]*time.Duration{"HEALTHDNS_CHAOS_DURATION": &p.duration, "HEALTHDNS_CHAOS_SLACK": &p.slack, "HEALTHDNS_CHAOS_WAIT": &p.wait}
	for name, d := range durations {
		if v := os.Getenv(name); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
				t.Fatalf("%s=%q: want a positive Go duration such as 60s", name, v)
			}
		}
	}
	ints := map[string]*int{"HEALTHDNS_CHAOS_QPS": &p.qps, "HEALTHDNS_CHAOS_BACKENDS": &p.backends}
	for name, n := range ints {
		if v := os.Getenv(name); v != "" {
			var err error
			if *n, err = strconv.Atoi(v); err != nil || *n <= 0 {
				t.Fatalf("%s=%q: want a positive integer", name, v)
			}
		}
	}
	if p.backends > len(chaosAddrs)-3 {
		t.Fatalf("HEALTHDNS_CHAOS_BACKENDS=%d: at most %d (127.0.8.64/26 less one steady backend per pool)", p.backends, len(chaosAddrs)-3)
	}
	return p
}

// chaosAddrs are TestChaos's addresses, 127.0.8.64-127.0.8.127.
var chaosAddrs = func() []netip.Addr {
	var out []netip.Addr
	for a := netip.MustParseAddr("127.0.8.64"); a.Compare(netip.MustParseAddr("127.0.8.127")) <= 0; a = a.Next() {
		out = append(out, a)
	}
	return out
}()

// span is a stretch of the run, as offsets from its start; an open span ends at spanOpen.
type span struct {
	from, to time.Duration
	why      string
}

const spanOpen = time.Duration(math.MaxInt64)

// spans is the history of one condition of one backend (down; out of a zone's answers), written
// by one goroutine while the run lasts and read after it.
type spans []span

// begin opens a span at at, unless one is open.
func (s *spans) begin(at time.Duration, why string) {
	if n := len(*s); n > 0 && (*s)[n-1].to == spanOpen {
		return
	}
	*s = append(*s, span{from: at, to: spanOpen, why: why})
}

// end closes the open span at at.
func (s *spans) end(at time.Duration) {
	if n := len(*s); n > 0 && (*s)[n-1].to == spanOpen {
		(*s)[n-1].to = at
	}
}

// covering returns the span that holds all of [from, to], if any.
func (s spans) covering(from, to time.Duration) (span, bool) {
	i, _ := slices.BinarySearchFunc(s, from, func(x span, t time.Duration) int {
		if x.from <= t {
			return -1
		}
		return 1
	})
	if i == 0 || s[i-1].to < to {
		return span{}, false
	}
	return s[i-1], true
}

// flapper is a backend that a goroutine stops and starts at random, recording when it was
// down. A down span starts once the listener is closed and ends when the listen that brings it
// back begins, so each is as short as what a probe could possibly have seen.
type flapper struct {
	*harness.Backend
	down  bool
	downs spans
	// rebinds counts listens that failed (the port is briefly not bindable after a close); the
	// backend stays down then, as the spans say.
	rebinds int
}

// flap toggles the listener to a random state every 50-500ms until ctx ends, and leaves it
// listening. Down or up is drawn afresh each time, so a backend is sometimes down for seconds:
// long enough for a stale answer to show.
func (f *flapper) flap(ctx context.Context, clock func() time.Duration) {
	for {
		select {
		case <-ctx.Done():
			if at := clock(); f.down && f.Listen() == nil {
				f.downs.end(at)
			}
			return
		case <-time.After(time.Duration(50+rand.IntN(451)) * time.Millisecond):
		}
		switch down := rand.IntN(2) == 0; {
		case down && !f.down:
			f.Stop()
			f.down = true
			f.downs.begin(clock(), "down")
		case !down && f.down:
			at := clock()
			if f.Listen() != nil {
				f.rebinds++
				continue
			}
			f.down = false
			f.downs.end(at)
		}
	}
}

// chaosZone is one pool of the chaos server, and the records of when each of its backends was
// kept out of its answers.
type chaosZone struct {
	name    string // with the final dot
	steady  netip.Addr
	members []netip.Addr        // the flapping backends the zone may list
	valid   map[netip.Addr]bool // steady and members
	// keepers are what can keep a member out: its live list (removed or drained there) and
	// the status API (drained). A backend is out while any keeper keeps it out.
	keepers []*keeper
}

// keeper is the record one driver goroutine keeps of the members it keeps out of a zone.
type keeper struct {
	kind string // "list" or "api"
	// bound is how long after a change an answer may still name the backend: a live list's
	// change is applied "within a second" (README, Live backends); an API write before its
	// answer. limit adds the slack of a loaded machine to a list's bound, and nothing to the
	// API's: a query sent after the API answered is answered without the backend, however
	// late anything runs.
	bound, limit time.Duration
	out          map[netip.Addr]*spans
}

func newChaosZone(name string, steady netip.Addr) *chaosZone {
	return &chaosZone{name: name, steady: steady, valid: map[netip.Addr]bool{steady: true}}
}

func (z *chaosZone) add(a netip.Addr) {
	z.members = append(z.members, a)
	z.valid[a] = true
}

// keeper adds a record of what keeps members out, each in from the start.
func (z *chaosZone) keeper(kind string, bound, slack time.Duration) *keeper {
	k := &keeper{kind: kind, bound: bound, limit: bound + slack, out: map[netip.Addr]*spans{}}
	for _, a := range z.members {
		k.out[a] = &spans{}
	}
	z.keepers = append(z.keepers, k)
	return k
}

// mark records that a is now in (out false) or out of the answers, the change made between
// before and after: an exclusion counts from after, and ends at before.
func (k *keeper) mark(a netip.Addr, out bool, why string, before, after time.Duration) {
	if out {
		k.out[a].begin(after, why)
	} else {
		k.out[a].end(before)
	}
}

// listState is a member's place in a live list: listed or not, its weight, drained or not.
type listState struct {
	listed, drained bool
	weight          int
}

// drawList draws a list for a live source: each member listed with a chance of 4 in 5, with a
// weight of 1 to 5 (for the weighted and consistent-hash pools), and drained with a chance of 1
// in 5.
func drawList(z *chaosZone) map[netip.Addr]listState {
	out := map[netip.Addr]listState{}
	for _, a := range z.members {
		listed := rand.IntN(5) != 0
		out[a] = listState{listed: listed, drained: listed && rand.IntN(5) == 0, weight: 1 + rand.IntN(5)}
	}
	return out
}

// words are the words of the member's line after its address.
func (ls listState) words() string {
	w := fmt.Sprintf("weight %d", ls.weight)
	if ls.drained {
		w += " drain chaos"
	}
	return w
}

func (ls listState) out() (bool, string) {
	switch {
	case !ls.listed:
		return true, "removed"
	case ls.drained:
		return true, "drained"
	}
	return false, ""
}

// chaosAnswer is one address of one answer: which zone, and when its query was sent and its
// reply read.
type chaosAnswer struct {
	zone       int
	addr       netip.Addr
	sent, recv time.Duration
}

// chaosLoad is what one load worker saw.
type chaosLoad struct {
	queries, retried, timeouts, servfail, malformed int
	redials                                         int // TCP connections that failed, not timed out
	firstBad                                        []string
	answers                                         []chaosAnswer
}

func (l *chaosLoad) bad(format string, args ...any) {
	l.malformed++
	if len(l.firstBad) < 5 {
		l.firstBad = append(l.firstBad, fmt.Sprintf(format, args...))
	}
}

// chaosWorker sends queries for the zones in turn over one socket of proto ("udp" or "tcp"),
// one at a time (so the load never queues more queries at the server than there are workers,
// and a drop is a drop, not a full buffer), paced at period, until deadline. A query unanswered
// within wait is sent once more with a new ID, as a stub resolver does; unanswered again, it
// timed out. A TCP connection that fails or times out is dialled again for the retry.
func chaosWorker(proto, addr string, zones []*chaosZone, period, wait time.Duration, deadline time.Time, clock func() time.Duration) (*chaosLoad, error) {
	var c *dns.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	l := &chaosLoad{}
	buf := make([]byte, 65535)
	next := time.Now()
	for i := rand.IntN(len(zones)); ; i++ {
		next = next.Add(period)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else if d < -time.Second { // far behind: carry on at the rate rather than in a burst
			next = time.Now()
		}
		if time.Now().After(deadline) {
			return l, nil
		}
		zi := i % len(zones)
		z := zones[zi]
		l.queries++
		var reply *dns.Msg
		var sent time.Duration
		for try := 0; try < 2 && reply == nil; try++ {
			if try > 0 {
				l.retried++
			}
			if c == nil {
				conn, err := net.Dial(proto, addr)
				if err != nil {
					return nil, err
				}
				c = &dns.Conn{Conn: conn}
			}
			q := new(dns.Msg)
			q.SetQuestion(z.name, dns.TypeA)
			if l.queries%10 == 0 { // no pool has an IPv6 backend: NODATA
				q.SetQuestion(z.name, dns.TypeAAAA)
			}
			wire, err := q.Pack()
			if err != nil {
				return nil, err
			}
			sent = clock()
			c.SetDeadline(time.Now().Add(wait))
			_, err = c.Write(wire)
			for err == nil {
				var n int
				if n, err = c.Read(buf); err != nil {
					break
				}
				if n < 2 || binary.BigEndian.Uint16(buf) != q.Id {
					continue // the late answer of a query that was asked again
				}
				reply = new(dns.Msg)
				if err := reply.Unpack(buf[:n]); err != nil {
					l.bad("%s: a reply that does not unpack (%v): %x", z.name, err, buf[:n])
					reply = nil
				} else if err := checkChaosReply(q, reply, z); err != nil {
					if reply.Rcode == dns.RcodeServerFailure {
						l.servfail++
					} else {
						l.bad("%s: %v: %v", z.name, err, reply)
					}
				} else {
					recv := clock()
					for _, rr := range reply.Answer {
						a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
						l.answers = append(l.answers, chaosAnswer{zone: zi, addr: a, sent: sent, recv: recv})
					}
				}
				break
			}
			switch {
			case err == nil:
			case proto == "tcp":
				c.Close()
				c = nil
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					l.redials++
				}
			case !errors.Is(err, os.ErrDeadlineExceeded):
				return nil, fmt.Errorf("%s %s: %w", proto, addr, err)
			}
		}
		if reply == nil {
			l.timeouts++
		}
	}
}

// checkChaosReply says what is wrong with a reply to q, if anything: it must answer q's question,
// authoritatively, with one to chaosAnswers distinct addresses of the zone for A, and with the
// zone's SOA alone for AAAA (NODATA: the zones have no IPv6 backend).
func checkChaosReply(q, r *dns.Msg, z *chaosZone) error {
	switch {
	case !r.Response || r.Opcode != dns.OpcodeQuery:
		return errors.New("not a response to a query")
	case len(r.Question) != 1 || r.Question[0] != q.Question[0]:
		return fmt.Errorf("question %v, want %v", r.Question, q.Question)
	case r.Rcode != dns.RcodeSuccess:
		return fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	case !r.Authoritative || r.Truncated:
		return errors.New("not authoritative, or truncated")
	case q.Question[0].Qtype == dns.TypeAAAA:
		if soa, ok := onlyRR(r.Ns).(*dns.SOA); len(r.Answer) != 0 || !ok || !strings.EqualFold(soa.Hdr.Name, z.name) {
			return errors.New("not NODATA with the zone's SOA")
		}
		return nil
	case len(r.Answer) < 1 || len(r.Answer) > chaosAnswers:
		return fmt.Errorf("%d answers, want 1 to %d", len(r.Answer), chaosAnswers)
	}
	seen := map[netip.Addr]bool{}
	for _, rr := range r.Answer {
		a, ok := rr.(*dns.A)
		if !ok || !strings.EqualFold(a.Hdr.Name, z.name) || a.Hdr.Class != dns.ClassINET {
			return fmt.Errorf("record %v is not an A of %s", rr, z.name)
		}
		addr, ok := netip.AddrFromSlice(a.A.To4())
		if !ok || !z.valid[addr] || seen[addr] {
			return fmt.Errorf("address %v is not one of the zone's, or twice", a.A)
		}
		seen[addr] = true
	}
	return nil
}

// onlyRR is the one record of rrs, or nil.
func onlyRR(rrs []dns.RR) dns.RR {
	if len(rrs) != 1 {
		return nil
	}
	return rrs[0]
}

// TestChaos (issue 23): flapping backends, a backends file and an etcd prefix rewritten every
// second and drains through the API, all at once, under a steady query load. Every reply is
// well formed, none is SERVFAIL, no query goes unanswered after one retry, and no answer names
// a backend down for longer than chaosStaleBound plus the slack, nor one drained or removed in
// its list for longer than the list's delay plus the slack, nor one drained through the API
// before the query was sent (no slack: the API applies a drain before it answers). The
// flappers record when each backend was down, the drivers when each was out of its zone, and
// the clients when each answer was asked for and came: the checks run on these records after
// the load. bench/chaos/run.sh runs it at 20,000 queries a second for 60 s.
func TestChaos(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	p := chaosParamsFromEnv(t)

	// Three pools, each with a backend that never flaps (so no pool is ever all down, and
	// serve_all never has to answer a dead address) and a third of the flappers: file.chaos.lan
	// from a backends file, etcd.chaos.lan from an etcd prefix, api.chaos.lan from Corefile lines
	// drained through the status API.
	fileZ := newChaosZone("file.chaos.lan.", chaosAddrs[0])
	etcdZ := newChaosZone("etcd.chaos.lan.", chaosAddrs[1])
	apiZ := newChaosZone("api.chaos.lan.", chaosAddrs[2])
	zones := []*chaosZone{fileZ, etcdZ, apiZ}
	ips := []string{}
	for _, a := range chaosAddrs[:3+p.backends] {
		ips = append(ips, a.String())
	}
	port, backends := harness.StartBackends(t, ips...)
	flappers := map[netip.Addr]*flapper{}
	for i, a := range chaosAddrs[:3+p.backends] {
		flappers[a] = &flapper{Backend: backends[a.String()]}
		if i >= 3 {
			zones[i%3].add(a)
		}
	}

	dir := t.TempDir()
	list := filepath.Join(dir, "backends")
	writeList := func(state map[netip.Addr]listState) {
		var b strings.Builder
		for _, a := range fileZ.members {
			if state[a].listed {
				fmt.Fprintln(&b, a, state[a].words())
			}
		}
		// Atomically, as a config manager does: a file rewritten in place may be read half
		// written, and a drain cut off its line is no drain.
		tmp := list + ".new"
		if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, list); err != nil {
			t.Error(err)
		}
	}
	writeList(map[netip.Addr]listState{})
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	const prefix = "/chaos/etcd.chaos.lan/"
	token := "chaos-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statusPort := harness.FreePort(t)
	health := func(steady netip.Addr, extra ...string) []string {
		return append([]string{
			"backend " + steady.String(), fmt.Sprintf("check tcp %d", port),
			"interval " + chaosInterval.String(), "timeout " + chaosTimeout.String(),
			fmt.Sprintf("fall %d", chaosFall), fmt.Sprintf("answers %d", chaosAnswers),
		}, extra...)
	}
	var apiBackends []string
	for _, a := range apiZ.members {
		apiBackends = append(apiBackends, a.String())
	}
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
		harness.Pool(fileZ.name, nil, health(fileZ.steady, "backends_file "+list, "policy weighted")...) +
		harness.Pool(etcdZ.name, nil, health(etcdZ.steady, "backends_etcd {\n   endpoint "+etcd.Endpoint()+"\n   prefix "+prefix+"\n  }", "policy consistent_hash")...) +
		harness.Pool(apiZ.name, apiBackends, health(apiZ.steady, fmt.Sprintf("status 127.0.0.1:%d token %s", statusPort, tokenFile), "policy round_robin")...) +
		"}\n"
	s := harness.Start(t, conf)
	// What the server holds with both lists empty, to hold it to after the churn.
	goroutines := func() float64 { g, _ := s.Scrape(t).Value("go_goroutines", nil); return g }
	harness.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(s.Output(), "zone etcd.chaos.lan.: backends: the etcd")
	}, "the etcd zone's first list")
	g0 := goroutines()
	fds0, _ := procStat(t, s.Pid())

	// The live lists start empty: their members are out until a change lists them.
	fileList, etcdList := fileZ.keeper("list", chaosListDelay, p.slack), etcdZ.keeper("list", chaosListDelay, p.slack)
	for _, a := range fileZ.members {
		fileList.mark(a, true, "not yet in the file", 0, 0)
	}
	for _, a := range etcdZ.members {
		etcdList.mark(a, true, "not yet put in etcd", 0, 0)
	}
	apiDrains := map[*chaosZone]*keeper{apiZ: apiZ.keeper("api", 0, 0), etcdZ: etcdZ.keeper("api", 0, 0)}
	t0 := time.Now()
	clock := func() time.Duration { return time.Since(t0) }
	ctx, cancel := context.WithCancel(context.Background())
	var drivers sync.WaitGroup
	defer func() { cancel(); drivers.Wait() }()
	for _, a := range chaosAddrs[3 : 3+p.backends] {
		drivers.Add(1)
		go func() { defer drivers.Done(); flappers[a].flap(ctx, clock) }()
	}
	// Each second: a new backends file, a new etcd prefix (in one transaction, so that a
	// watcher sees it whole).
	every := func(period time.Duration, change func()) {
		drivers.Add(1)
		go func() {
			defer drivers.Done()
			tick := time.NewTicker(period)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					change()
				}
			}
		}()
	}
	every(time.Second, func() {
		state := drawList(fileZ)
		before := clock()
		writeList(state)
		after := clock()
		for a, ls := range state {
			out, why := ls.out()
			fileList.mark(a, out, why+" in the file", before, after)
		}
	})
	every(time.Second, func() {
		state := drawList(etcdZ)
		var ops []clientv3.Op
		for a, ls := range state {
			if ls.listed {
				ops = append(ops, clientv3.OpPut(prefix+a.String(), ls.words()))
			} else {
				ops = append(ops, clientv3.OpDelete(prefix+a.String()))
			}
		}
		before := clock()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := kv.Txn(cctx).Then(ops...).Commit()
		ccancel()
		after := clock()
		if err != nil {
			// Whether it applied is not known: the test fails, unless the load is over.
			if ctx.Err() == nil {
				t.Errorf("etcd transaction: %v", err)
			}
			return
		}
		for a, ls := range state {
			out, why := ls.out()
			etcdList.mark(a, out, why+" in etcd", before, after)
		}
	})
	// Four times a second, a drain or an undrain through the status API, of api.chaos.lan's
	// backends (the server's own drain) or etcd.chaos.lan's (written to etcd, for the fleet).
	// A write may be refused when it cannot apply: a backend the etcd list does not hold now
	// (404), an undrain of a backend drained in etcd's value too (409). It then changes nothing.
	httpc := &http.Client{Timeout: 10 * time.Second}
	apiDrained := map[*chaosZone]map[netip.Addr]bool{apiZ: {}, etcdZ: {}}
	var apiRefused int
	every(250*time.Millisecond, func() {
		z := apiZ
		if rand.IntN(2) == 0 {
			z = etcdZ
		}
		a := z.members[rand.IntN(len(z.members))]
		path, body := "/api/v1/drain", fmt.Sprintf(`{"zone":%q,"backend":%q,"reason":"chaos"}`, z.name, a)
		if apiDrained[z][a] {
			path, body = "/api/v1/undrain", fmt.Sprintf(`{"zone":%q,"backend":%q}`, z.name, a)
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://127.0.0.1:%d%s", statusPort, path), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		before := clock()
		resp, err := httpc.Do(req)
		after := clock()
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("%s %s: %v", path, a, err)
			}
			return
		}
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			apiDrained[z][a] = !apiDrained[z][a]
			apiDrains[z].mark(a, apiDrained[z][a], "drained through the API", before, after)
		case z == etcdZ && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict):
			apiRefused++
		default:
			t.Errorf("%s %s %s: %s %s", path, z.name, a, resp.Status, reply)
		}
	})

	// The load, after a second of churn so that every source has changed once.
	time.Sleep(time.Second)
	workers := min(max(8, p.qps/150), 160)
	period := time.Duration(workers) * time.Second / time.Duration(p.qps)
	loadStart := clock()
	cpu0 := procCPU(t, s.Pid())
	deadline := time.Now().Add(p.duration)
	results := make([]*chaosLoad, workers)
	var load sync.WaitGroup
	for w := range workers {
		load.Add(1)
		go func() {
			defer load.Done()
			proto := "udp"
			if w%8 == 7 { // one worker in eight over TCP: CoreDNS's other path
				proto = "tcp"
			}
			l, err := chaosWorker(proto, s.Addr, zones, period, p.wait, deadline, clock)
			if err != nil {
				t.Errorf("load worker %d: %v", w, err)
				l = &chaosLoad{}
			}
			results[w] = l
		}()
	}
	load.Wait()
	loadEnd := clock()
	cpu := procCPU(t, s.Pid()) - cpu0
	cancel()
	drivers.Wait()
	httpc.CloseIdleConnections()
	end := clock()
	metrics := s.Scrape(t)

	// Every pool has a backend that never goes down: a line that says a pool is all down is a
	// false alarm to an operator. Errors are logged, not failed on: an etcd starved of CPU on
	// a loaded machine is an outage to its clients, and rightly logged as one.
	var alarms, errorLines []string
	for _, line := range strings.Split(s.Output(), "\n") {
		switch {
		case strings.Contains(line, "every backend") || strings.HasPrefix(line, "panic"):
			alarms = append(alarms, line)
		case strings.Contains(line, "[ERROR]"):
			errorLines = append(errorLines, line)
		}
	}
	if len(alarms) > 0 {
		t.Errorf("coredns logged %d false alarms:\n%s", len(alarms), strings.Join(alarms[:min(len(alarms), 10)], "\n"))
	}
	if n, _ := metrics.Value("coredns_healthdns_all_down_total", nil); n != 0 {
		t.Errorf("all_down_total is %v, where no pool was ever all down", n)
	}
	if n, _ := metrics.Value("coredns_healthdns_source_errors_total", nil); n != 0 {
		t.Logf("source_errors_total is %v: a list failed to load (an etcd starved of CPU is an outage to its clients)", n)
	}
	if len(errorLines) > 0 {
		t.Logf("coredns logged %d errors:\n%s", len(errorLines), strings.Join(errorLines[:min(len(errorLines), 10)], "\n"))
	}

	// What the load saw.
	var total chaosLoad
	for _, l := range results {
		total.queries += l.queries
		total.retried += l.retried
		total.redials += l.redials
		total.timeouts += l.timeouts
		total.servfail += l.servfail
		total.malformed += l.malformed
		total.firstBad = append(total.firstBad, l.firstBad...)
		total.answers = append(total.answers, l.answers...)
	}
	if total.malformed > 0 {
		t.Errorf("%d replies not well formed; the first: %s", total.malformed, strings.Join(total.firstBad, "\n"))
	}
	if total.servfail > 0 {
		t.Errorf("%d SERVFAIL replies, where every pool has a backend that never goes down", total.servfail)
	}
	if total.timeouts > 0 {
		t.Errorf("%d of %d queries unanswered after one retry (%s each)", total.timeouts, total.queries, p.wait)
	}

	// Staleness: an answer names a backend that was down from before the query was sent until
	// after its reply came, and had been down longer than the bound when the query was sent.
	// The send time is the earliest the server can have chosen the address, so the server is
	// never blamed for the client's own lateness in reading the reply.
	staleLimit := chaosStaleBound + p.slack
	var stale, excluded []string
	// What the answers named of backends down or out, by kind, for the log: how many, how
	// many of them past the nominal bound (no slack), and the oldest.
	type exposure struct {
		named, pastBound int
		oldest           time.Duration
	}
	seen := map[string]*exposure{"down": {}, "list": {}, "api": {}}
	expose := func(kind string, age, bound time.Duration) {
		e := seen[kind]
		e.named++
		e.oldest = max(e.oldest, age)
		if age > bound {
			e.pastBound++
		}
	}
	var staleCount, excludedCount int
	for _, a := range total.answers {
		z := zones[a.zone]
		if d, ok := flappers[a.addr].downs.covering(a.sent, a.recv); ok {
			expose("down", a.sent-d.from, chaosStaleBound)
			if a.sent-d.from > staleLimit {
				staleCount++
				if len(stale) < 10 {
					stale = append(stale, fmt.Sprintf("%s %s at %s (reply at %s): down since %s, %s before",
						z.name, a.addr, a.sent, a.recv, d.from, a.sent-d.from))
				}
			}
		}
		if a.addr == z.steady {
			continue
		}
		for _, k := range z.keepers {
			if x, ok := k.out[a.addr].covering(a.sent, a.recv); ok {
				expose(k.kind, a.sent-x.from, k.bound)
				if a.sent-x.from > k.limit {
					excludedCount++
					if len(excluded) < 10 {
						excluded = append(excluded, fmt.Sprintf("%s %s at %s (reply at %s): %s since %s, %s before",
							z.name, a.addr, a.sent, a.recv, x.why, x.from, a.sent-x.from))
					}
				}
			}
		}
	}
	if len(stale) > 0 {
		t.Errorf("%d answers named a backend down for longer than %s (fall × interval + timeout + interval, plus %s of slack); the first:\n%s",
			staleCount, staleLimit, p.slack, strings.Join(stale, "\n"))
	}
	if len(excluded) > 0 {
		t.Errorf("%d answers named a backend drained or removed in its list more than %s before (%s and %s of slack), or drained through the API before the query was sent; the first:\n%s",
			excludedCount, chaosListDelay+p.slack, chaosListDelay, p.slack, strings.Join(excluded, "\n"))
	}

	// A run in which no backend stayed down, or out, past the limits while queries were asked
	// tested nothing of the above.
	var longDowns, longOuts, downs, rebinds int
	for _, a := range chaosAddrs[3 : 3+p.backends] {
		f := flappers[a]
		rebinds += f.rebinds
		for _, d := range f.downs {
			downs++
			if d.from+staleLimit < loadEnd && min(d.to, end) > max(d.from+staleLimit, loadStart) {
				longDowns++
			}
		}
	}
	for _, z := range zones {
		for _, k := range z.keepers {
			for _, xs := range k.out {
				for _, x := range *xs {
					if limit := x.from + k.limit; limit < loadEnd && min(x.to, end) > max(limit, loadStart) {
						longOuts++
					}
				}
			}
		}
	}
	if longDowns == 0 || longOuts == 0 {
		t.Errorf("no backend was down (%d) or out of its zone (%d) past the limits while the load ran: the run checked nothing; make it longer", longDowns, longOuts)
	}

	// Both lists emptied again: every backend the churn added and removed thousands of times is
	// gone, and so is whatever it held.
	writeList(map[netip.Addr]listState{})
	ectx, ecancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := kv.Delete(ectx, prefix, clientv3.WithPrefix())
	ecancel()
	if err != nil {
		t.Fatalf("emptying the etcd prefix: %v", err)
	}
	var g1 float64
	var fds1 int
	if !harness.Poll(30*time.Second, 250*time.Millisecond, func() bool {
		g1 = goroutines()
		fds1, _ = procStat(t, s.Pid())
		return g1 <= g0+5 && fds1 <= fds0+5
	}) {
		t.Errorf("after the churn, with both lists empty again: %.0f goroutines and %d fds, where there were %.0f and %d", g1, fds1, g0, fds0)
	}

	t.Logf("chaos: %d backends flapping (%d down spans, %d of them past %s; %d listens refused), a file and an etcd prefix rewritten every second, a drain or undrain through the API every 250ms (%d refused as meant); %d workers for %s at a target of %d qps",
		p.backends, downs, longDowns, staleLimit, rebinds, apiRefused, workers, p.duration, p.qps)
	t.Logf("chaos: %d queries (%.0f/s, one worker in eight over TCP), %d asked again (after %s, or %d after a TCP connection failed), %d timeouts, %d SERVFAIL, %d malformed; %d addresses answered",
		total.queries, float64(total.queries)/(loadEnd-loadStart).Seconds(), total.retried, p.wait, total.redials, total.timeouts, total.servfail, total.malformed, len(total.answers))
	t.Logf("chaos: %d answers named a backend that was down (%d past the bound of %s, none may be past %s with the slack; the oldest down for %s when asked)",
		seen["down"].named, seen["down"].pastBound, chaosStaleBound, staleLimit, seen["down"].oldest.Round(time.Millisecond))
	t.Logf("chaos: %d named one drained or removed in its file or etcd (%d past %s; the oldest %s); %d one drained through the API (%d after the API had answered; the oldest %s); %d spans out past their limits",
		seen["list"].named, seen["list"].pastBound, chaosListDelay, seen["list"].oldest.Round(time.Millisecond),
		seen["api"].named, seen["api"].pastBound, seen["api"].oldest.Round(time.Millisecond), longOuts)
	t.Logf("chaos: probe lateness: %s; coredns used %.2f CPU (of %d) during the load; goroutines %.0f → %.0f and fds %d → %d, both lists empty",
		latenessSummary(metrics), cpu.Seconds()/(loadEnd-loadStart).Seconds(), runtime.NumCPU(), g0, g1, fds0, fds1)
}

// procCPU is the CPU time a process has used, user and system, as /proc counts it: whether
// coredns had a CPU's worth to itself during the load tells a short rate from a slow server.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command, which is in parentheses and may hold spaces: utime and
	// stime are the 14th and 15th of the line, in clock ticks of 1/100 s (USER_HZ on Linux).
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// latenessSummary says how late the probes of a lateness histogram started: how many there were,
// the bucket that holds the 99th percentile, and how many were later than 100ms. Every check of
// the chaos server is one TCP check, so its buckets are summed over the check label.
func latenessSummary(m *harness.Metrics) string {
	counts := map[float64]float64{}
	for _, b := range m.Find("coredns_healthdns_probe_lateness_seconds_bucket", nil) {
		le, err := strconv.ParseFloat(b.Labels["le"], 64)
		if err != nil {
			return fmt.Sprintf("bucket le=%q: %v", b.Labels["le"], err)
		}
		counts[le] += b.Value
	}
	les := slices.Sorted(maps.Keys(counts))
	if len(les) == 0 {
		return "no probe lateness exported"
	}
	total := counts[math.Inf(1)]
	p99 := les[len(les)-1]
	for _, le := range les {
		if counts[le] >= 0.99*total {
			p99 = le
			break
		}
	}
	within100ms := counts[0.1]
	return fmt.Sprintf("%.0f probes, p99 ≤ %gs, %.0f later than 100ms", total, p99, total-within100ms)
}
