package healthdns

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// defaultStatusAddr is where a bare `status` listens: loopback, so that it needs no token.
const defaultStatusAddr = "127.0.0.1:8053"

// statusSchemaVersion is /status.json's "version". It changes when a field is removed or its
// meaning changes; added fields do not change it.
const statusSchemaVersion = 1

// statusConfig is a pool's `status [ADDRESS] [token FILE]`.
type statusConfig struct {
	addr  string // host:port; "" for none
	token string // the bearer token every request must carry; "" for none
	file  string // of the status line, for errors
	line  int
}

// parseStatus reads `status [ADDRESS] [token FILE]`. The token is read here, so that a file that
// does not read fails startup at its line rather than locking everyone out.
func parseStatus(c *caddy.Controller, args []string) (statusConfig, error) {
	const form = "want 'status [ADDRESS] [token FILE]'"
	sc := statusConfig{addr: defaultStatusAddr, file: c.File(), line: c.Line()}
	if len(args) > 0 && args[0] != "token" {
		sc.addr, args = args[0], args[1:]
	}
	loopback, err := statusAddr(sc.addr)
	if err != nil {
		return sc, c.Errf("invalid status address '%s': %v; %s, such as %s", sc.addr, err, form, defaultStatusAddr)
	}
	switch {
	case len(args) == 0:
	case args[0] != "token":
		return sc, c.Errf("unknown status option '%s'; %s", args[0], form)
	case len(args) != 2:
		return sc, c.Errf("'token' wants one FILE; %s", form)
	default:
		if sc.token, err = readStatusToken(args[1]); err != nil {
			return sc, c.Errf("status token: %v", err)
		}
	}
	if !loopback && sc.token == "" {
		return sc, c.Errf("status on %s is reachable from other hosts, and shows every backend and why it failed: want 'status %s token FILE', or a loopback address such as %s", sc.addr, sc.addr, defaultStatusAddr)
	}
	return sc, nil
}

// statusAddr checks a status listener's address, and says whether only this host can reach it.
func statusAddr(addr string) (loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("want HOST:PORT")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return false, fmt.Errorf("port '%s' is not a number from 1 to 65535", port)
	}
	switch host {
	case "":
		return false, nil // every address of the host
	case "localhost":
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false, fmt.Errorf("host '%s' is not an IP address or localhost", host)
	}
	return ip.Unmap().IsLoopback(), nil
}

// readToken returns the first line of file, which must not be blank.
func readToken(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if line = strings.TrimSpace(line); line == "" {
		if err != nil && err.Error() != "EOF" {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		return "", fmt.Errorf("%s: the first line is empty; want the token on it", file)
	}
	return line, nil
}

// statusView is what one instance shows on one status address: the pools that name it.
type statusView struct {
	statusConfig
	pools []*Pool
	loops func() []health.LoopStatus // the registry's
}

//go:embed status.html
var statusPage string

// ServeHTTP serves the page and the JSON, and passes writes to serveWrite. With a token, every
// request must carry it, as "Authorization: Bearer TOKEN"; the page takes it from its URL's
// fragment (/#token=TOKEN), which the browser never sends, so that it stays out of proxies' logs.
func (v *statusView) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v == nil {
		http.Error(w, "status listener closing", http.StatusServiceUnavailable)
		return
	}
	if strings.HasPrefix(r.URL.Path, apiPrefix) {
		v.serveWrite(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read only: GET or HEAD; writes are POST "+apiPrefix+"...", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	authorized := v.authorized(r)
	switch r.URL.Path {
	case "/status.json":
		if !authorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
			http.Error(w, "want Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		enc.Encode(v.document(time.Now()))
	case "/":
		// The page draws itself from the JSON it polls; the first is inlined, so that it shows
		// something at once (and without scripts' timers, as a headless browser's dump does).
		// Without the token it is inlined as null, and the page asks with the fragment's.
		initial := []byte("null")
		if authorized {
			initial, _ = json.Marshal(v.document(time.Now())) // escapes <, > and &: safe in a script
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
		w.Write([]byte(strings.Replace(statusPage, "/*INITIAL*/null", string(initial), 1)))
	default:
		http.NotFound(w, r)
	}
}

func (v *statusView) authorized(r *http.Request) bool {
	if v.token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(v.token)) == 1
}

// The document of /status.json. README.md ("Status") documents every field; durations are in
// seconds, times in RFC 3339 with nanoseconds, and a time never set is omitted.
type statusDoc struct {
	Version   int           `json:"version"`
	Generated time.Time     `json:"generated"`
	HealthDNS statusProcess `json:"healthdns"`
	Checker   statusChecker `json:"checker"`
	Pools     []statusPool  `json:"pools"`
}

type statusProcess struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	ConfigHash    string    `json:"config_hash"`
}

type statusChecker struct {
	Stalled bool         `json:"stalled"`
	Loops   []statusLoop `json:"loops"`
}

type statusLoop struct {
	Wire               string     `json:"wire"`
	Running            bool       `json:"running"`
	Targets            int        `json:"targets"`
	IntervalSeconds    float64    `json:"interval_seconds"`
	LastTick           *time.Time `json:"last_tick,omitempty"`
	LastTickAgeSeconds float64    `json:"last_tick_age_seconds"`
	Wakes              uint64     `json:"wakes"`
	LatenessP99Seconds float64    `json:"lateness_p99_seconds"`
	StallAfterSeconds  float64    `json:"stall_after_seconds"`
	Stalled            bool       `json:"stalled"`
}

type statusPool struct {
	Server              string          `json:"server"`
	Zone                string          `json:"zone"`
	Policy              string          `json:"policy"`
	Answers             int             `json:"answers"`
	TTL                 uint32          `json:"ttl"`
	AllDownMode         string          `json:"all_down_mode"`
	IntervalSeconds     float64         `json:"interval_seconds"`
	FastIntervalSeconds float64         `json:"fast_interval_seconds"`
	TimeoutSeconds      float64         `json:"timeout_seconds"`
	Rise                int             `json:"rise"`
	Fall                int             `json:"fall"`
	Checks              []statusCheck   `json:"checks"`
	Preemption          string          `json:"preemption"` // preempt, preempt_delay DURATION or nopreempt
	AllDown             bool            `json:"all_down"`
	Families            []statusFamily  `json:"families"`
	Sources             []statusSource  `json:"sources"`
	Backends            []statusBackend `json:"backends"`
}

// statusSource is one place the pool's backends come from: the Corefile, and a backends_file
// or backends_etcd. Backends is how many it gives now (its last good list).
type statusSource struct {
	Kind        string     `json:"kind"` // corefile, file or etcd
	Name        string     `json:"name,omitempty"`
	Backends    int        `json:"backends"`
	LastLoad    *time.Time `json:"last_load,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	Errors      int        `json:"errors"`
	Connected   *bool      `json:"connected,omitempty"` // etcd only
	Waiting     bool       `json:"waiting,omitempty"`   // no list delivered yet
	// etcd only: the keys the last list left out, each a backend that does not parse.
	Skipped []statusSkippedKey `json:"skipped,omitempty"`
}

type statusSkippedKey struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

type statusCheck struct {
	Check       string `json:"check"`
	Kind        string `json:"kind"`
	Port        uint16 `json:"port,omitempty"`
	Path        string `json:"path,omitempty"`
	Expect      string `json:"expect,omitempty"`
	Body        string `json:"body,omitempty"`
	BodyExact   bool   `json:"body_exact,omitempty"` // the body must be Body, not only hold it
	Host        string `json:"host,omitempty"`
	TLSCA       string `json:"tls_ca,omitempty"`
	TLSInsecure bool   `json:"tls_insecure,omitempty"`
	Command     string `json:"command,omitempty"`
}

type statusFamily struct {
	Family     string `json:"family"`
	Configured int    `json:"configured"`
	Up         int    `json:"up"`
	Down       bool   `json:"down"`     // every backend of the family is down
	AllDown    bool   `json:"all_down"` // the whole pool is down, and all_down_mode decides
	// The whole pool's backends in service are down, and the family's healthy drained ones
	// are answered instead, as a last resort.
	ServingDrained bool `json:"serving_drained,omitempty"`
	// The priority group answers come from, 0 while none has a healthy backend, and every
	// group configured, highest first.
	ServingPriority uint8 `json:"serving_priority"`
	Priorities      []int `json:"priorities"` // not []uint8, which JSON would write as base64
	// The groups with a healthy backend: one above the serving group under nopreempt waits for
	// an operator's fail-back.
	HealthyPriorities []int `json:"healthy_priorities"`
	// A higher group waiting out its preempt_delay, which takes back by itself at Until.
	PreemptWait *statusPreemptWait `json:"preempt_wait,omitempty"`
	// The fleet's agreed group, under nopreempt with backends_etcd (see docs/DESIGN.md).
	Agreement *statusAgreement `json:"agreement,omitempty"`
}

type statusPreemptWait struct {
	Group uint8     `json:"group"`
	Until time.Time `json:"until"`
}

type statusBackend struct {
	Address     string               `json:"address"`
	Family      string               `json:"family"`
	Weight      uint32               `json:"weight"`
	Priority    uint8                `json:"priority"`
	State       string               `json:"state"` // up, down or drained
	DrainReason string               `json:"drain_reason,omitempty"`
	DrainUntil  *time.Time           `json:"drain_until,omitempty"`
	DrainedBy   string               `json:"drained_by,omitempty"`   // config or api
	DrainCaller string               `json:"drain_caller,omitempty"` // api: the caller's address
	DrainSince  *time.Time           `json:"drain_since,omitempty"`  // api: when it was set
	Checked     bool                 `json:"checked"`
	Since       *time.Time           `json:"since,omitempty"`
	Reason      string               `json:"reason,omitempty"`
	Error       string               `json:"error,omitempty"`
	Transitions uint64               `json:"transitions"`
	Answers     uint64               `json:"answers"`
	Checks      []statusBackendCheck `json:"checks"`
}

type statusBackendCheck struct {
	Check               string             `json:"check"`
	State               string             `json:"state"`
	Checked             bool               `json:"checked"`
	Since               *time.Time         `json:"since,omitempty"`
	Successes           int                `json:"successes"`
	Failures            int                `json:"failures"`
	LastCheck           *time.Time         `json:"last_check,omitempty"`
	LastDurationSeconds float64            `json:"last_duration_seconds"`
	LastFailure         *statusFailure     `json:"last_failure,omitempty"`
	Transitions         uint64             `json:"transitions"`
	History             []statusTransition `json:"history"`
}

type statusFailure struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	Error  string    `json:"error"`
}

type statusTransition struct {
	At     time.Time `json:"at"`
	State  string    `json:"state"`
	First  bool      `json:"first,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Error  string    `json:"error,omitempty"`
}

func priorities(g balance.Groups) []int {
	out := make([]int, 0, g.Len()) // [], not null, for a family with no healthy group
	for _, p := range g.List() {
		out = append(out, int(p))
	}
	return out
}

func stateName(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// document builds /status.json from the view's pools and the registry's loops.
func (v *statusView) document(now time.Time) statusDoc {
	var loops []health.LoopStatus
	if v.loops != nil {
		loops = v.loops()
	}
	doc := statusDoc{
		Version:   statusSchemaVersion,
		Generated: now,
		HealthDNS: statusProcess{
			Version:       caddy.AppVersion,
			Started:       proc.started,
			UptimeSeconds: now.Sub(proc.started).Seconds(),
			ConfigHash:    configHash(v.pools),
		},
		Checker: checkerStatus(loops, now),
		Pools:   make([]statusPool, 0, len(v.pools)),
	}
	answers := answerCounts()
	for _, p := range v.pools {
		doc.Pools = append(doc.Pools, p.status(answers))
	}
	return doc
}

func checkerStatus(loops []health.LoopStatus, now time.Time) statusChecker {
	c := statusChecker{Loops: make([]statusLoop, 0, len(loops))}
	for _, l := range loops {
		sl := statusLoop{
			Wire:               l.Wire,
			Running:            l.Running,
			Targets:            l.Targets,
			IntervalSeconds:    l.Interval.Seconds(),
			LastTick:           timePtr(l.LastTick),
			Wakes:              l.Wakes,
			LatenessP99Seconds: l.LatenessP99.Seconds(),
			StallAfterSeconds:  health.StallAfter.Seconds(),
			Stalled:            l.Stalled,
		}
		if !l.LastTick.IsZero() {
			sl.LastTickAgeSeconds = max(now.Sub(l.LastTick), 0).Seconds()
		}
		c.Stalled = c.Stalled || l.Stalled
		c.Loops = append(c.Loops, sl)
	}
	return c
}

// configHash is a hash of the configuration of the pools shown (each zone's SOA serial hashes
// its own): two servers showing the same hash serve the same pools alike.
func configHash(pools []*Pool) string {
	lines := make([]string, 0, len(pools))
	for _, p := range pools {
		lines = append(lines, fmt.Sprintf("%s %s %08x", p.cfg.server, p.cfg.zone, p.zone.soa.Serial))
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8])
}

type answerKey struct{ server, zone, backend string }

// answerCounts reads every answers_total series once: looking a backend's up by its labels
// would create the series of a backend that never answered.
func answerCounts() map[answerKey]uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { answersTotal.Collect(ch); close(ch) }()
	counts := map[answerKey]uint64{}
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		var k answerKey
		for _, l := range d.Label {
			switch l.GetName() {
			case "server":
				k.server = l.GetValue()
			case "zone":
				k.zone = l.GetValue()
			case "backend":
				k.backend = l.GetValue()
			}
		}
		counts[k] = uint64(d.Counter.GetValue())
	}
	return counts
}

// status is the pool's part of /status.json. Leases are copied under the pool's mutex and read
// after it: a monitor's mutex comes before the pool's (a change's rebuild takes it).
func (p *Pool) status(answers map[answerKey]uint64) statusPool {
	cfg := &p.cfg
	sp := statusPool{
		Server:              cfg.server,
		Zone:                cfg.zone,
		Policy:              cfg.policy,
		Answers:             cfg.answers,
		TTL:                 cfg.ttl,
		AllDownMode:         cfg.allDown.String(),
		IntervalSeconds:     cfg.spec.Interval.Seconds(),
		FastIntervalSeconds: cfg.spec.Fast.Seconds(),
		TimeoutSeconds:      cfg.spec.Timeout.Seconds(),
		Rise:                cfg.spec.Rise,
		Fall:                cfg.spec.Fall,
		Checks:              make([]statusCheck, 0, len(cfg.checks)),
		Backends:            []statusBackend{},
	}
	for _, c := range cfg.checks {
		sp.Checks = append(sp.Checks, statusCheck{
			Check: c.String(), Kind: c.Kind.String(), Port: c.Port, Path: c.Path, Expect: c.Expect,
			Body: c.Body, BodyExact: c.BodyExact, Host: c.Host, TLSCA: c.TLSCA, TLSInsecure: c.TLSInsecure, Command: c.Command,
		})
	}
	snap := p.snap.Load()
	sp.AllDown = snap.allDown
	for i, fam := range [...]*family{&snap.v4, &snap.v6} {
		if fam.n == 0 {
			continue
		}
		fo := p.failover[i]
		serving, _ := fo.Serving()
		p.mu.Lock()
		agreed := p.agreedStatusLocked(i)
		p.mu.Unlock()
		sf := statusFamily{
			Family: familyName(i), Configured: fam.n, Up: fam.nUp, Down: fam.down, AllDown: fam.allDown, ServingDrained: fam.drained,
			ServingPriority: serving, Priorities: priorities(fo.Groups()), HealthyPriorities: priorities(fo.Healthy()),
			Agreement: agreed,
		}
		if group, until, ok := fo.Waiting(); ok {
			sf.PreemptWait = &statusPreemptWait{Group: group, Until: until}
		}
		sp.Families = append(sp.Families, sf)
	}
	switch {
	case cfg.preempt.Never:
		sp.Preemption = "nopreempt"
	case cfg.preempt.Delay > 0:
		sp.Preemption = "preempt_delay " + cfg.preempt.Delay.String()
	default:
		sp.Preemption = "preempt"
	}

	p.mu.Lock()
	sp.Sources = append(sp.Sources, statusSource{Kind: "corefile", Backends: len(cfg.backends)})
	if src := cfg.source; src.kind != sourceNone {
		ss := statusSource{
			Kind: src.label(), Name: src.String(), Backends: len(p.fromSrc), LastLoad: timePtr(p.src.lastLoad),
			LastError: p.src.lastError, LastErrorAt: timePtr(p.src.lastErrorAt), Errors: p.src.errors, Waiting: p.awaiting,
		}
		if src.kind == sourceEtcd {
			connected := p.src.connected
			ss.Connected = &connected
			for _, key := range slices.Sorted(maps.Keys(p.src.skipped)) {
				ss.Skipped = append(ss.Skipped, statusSkippedKey{Key: key, Error: p.src.skipped[key]})
			}
		}
		sp.Sources = append(sp.Sources, ss)
	}
	members := make([]member, len(p.members))
	for i, m := range p.members {
		members[i] = member{backend: m.backend, leases: slices.Clone(m.leases), drained: m.drained, op: m.op}
	}
	p.mu.Unlock()
	for _, m := range members {
		sb := statusBackend{
			Address:  m.addr.String(),
			Family:   "ipv4",
			Weight:   m.weight,
			Priority: m.priority,
			State:    "down",
			Answers:  answers[answerKey{cfg.server, cfg.zone, m.addr.String()}],
			Checks:   make([]statusBackendCheck, 0, len(m.leases)),
		}
		if m.addr.Is6() {
			sb.Family = "ipv6"
		}
		sb.fill(m.leases)
		// Drained is said over the health, which the checks still show. The configuration's
		// drain is shown over an operator's: it is the one an undrain cannot lift.
		switch {
		case m.drained:
			sb.State, sb.DrainReason, sb.DrainUntil, sb.DrainedBy = "drained", m.drain.reason, timePtr(m.drain.until), "config"
		case m.op.on:
			sb.State, sb.DrainReason, sb.DrainUntil, sb.DrainedBy = "drained", m.op.reason, timePtr(m.op.until), "api"
			sb.DrainCaller, sb.DrainSince = m.op.by, timePtr(m.op.since)
		}
		sp.Backends = append(sp.Backends, sb)
	}
	return sp
}

// fill gives a backend its checks' status. It is up while every check is up, since the last of
// them came up; down since the first of its failing checks went down, for that check's reason.
func (sb *statusBackend) fill(leases []*health.Lease) {
	up, checked := true, true
	var since time.Time
	for _, l := range leases {
		st := l.Status()
		c := statusBackendCheck{
			Check:               st.Target.Spec.Check.String(),
			State:               stateName(st.Up),
			Checked:             st.Checked,
			Since:               timePtr(st.Since),
			Successes:           st.Successes,
			Failures:            st.Failures,
			LastCheck:           timePtr(st.LastCheck),
			LastDurationSeconds: st.LastDuration.Seconds(),
			Transitions:         st.Transitions,
			History:             make([]statusTransition, 0, len(st.History)),
		}
		if st.LastFailure != nil {
			c.LastFailure = &statusFailure{At: st.LastFailureAt, Reason: health.Reason(st.LastFailure), Error: st.LastFailure.Error()}
		}
		for _, t := range st.History {
			tr := statusTransition{At: t.At, State: stateName(t.Up), First: t.First}
			if t.Err != nil {
				tr.Reason, tr.Error = health.Reason(t.Err), t.Err.Error()
			}
			c.History = append(c.History, tr)
		}
		sb.Transitions += st.Transitions
		checked = checked && st.Checked
		switch {
		case !st.Up && up: // the first failing check: its reason is the backend's
			up, since = false, st.Since
			if c.LastFailure != nil {
				sb.Reason, sb.Error = c.LastFailure.Reason, c.LastFailure.Error
			}
		case !st.Up && st.Since.Before(since):
			since = st.Since
		case st.Up && up && st.Since.After(since):
			since = st.Since
		}
		sb.Checks = append(sb.Checks, c)
	}
	sb.Checked = checked
	sb.State = stateName(up && checked)
	sb.Since = timePtr(since)
}
