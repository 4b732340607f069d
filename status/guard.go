package status

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// What a listener does about wrong tokens. A token has at least 16 bytes (the Corefile refuses
// a shorter one), so the limit is not what keeps it secret: it keeps a guesser from costing the
// server a log line or a comparison per request, and it tells the operator.
const (
	// maxWrongTokens within wrongTokenWindow from one client and it is refused (429) for
	// refuseFor, whatever it sends. A page left open with an old token fails once a second,
	// and so is refused for a while too: it has nothing to show anyway.
	maxWrongTokens    = 10
	wrongTokenWindow  = time.Minute
	refuseFor         = time.Minute
	wrongTokenLogTick = 10 * time.Second // at most one line per listener this often
	// maxClients bounds the clients a listener remembers; past it the oldest is forgotten.
	maxClients = 1024
	// maxNamedClients is how many addresses a log line names; the others are counted.
	maxNamedClients = 8
)

// guard is what a listener keeps across the views that come and go on it: the Host check of a
// loopback listener, and the count of wrong tokens, by client, for the 429s and the log.
type guard struct {
	addr     string // as the log names the listener
	loopback bool   // bound to a loopback address: the Host must name loopback too
	now      func() time.Time

	mu      sync.Mutex
	clients map[netip.Prefix]*client
	pending wrongTokens // since the last log line
	lastLog time.Time
	flush   *time.Timer // the next log line, while one is due
	closed  bool
	streams int // event streams open
}

// client is one address's wrong tokens in its current window.
type client struct {
	first    time.Time // the window's start
	wrong    int
	refusing time.Time // refused with 429 until then
}

// wrongTokens is what the next log line reports.
type wrongTokens struct {
	since   time.Time
	count   int
	from    map[netip.Prefix]int // at most maxNamedClients
	unnamed int                  // wrong tokens from the clients from leaves out
	refused int                  // requests answered 429
	blocked []netip.Prefix       // clients refused since the last line, at most maxNamedClients
}

func newGuard(addr net.Addr) *guard {
	tcp, _ := addr.(*net.TCPAddr)
	return &guard{addr: addr.String(), loopback: tcp != nil && tcp.IP.IsLoopback(), now: time.Now, clients: map[netip.Prefix]*client{}}
}

// admit answers the requests the views never see: one to a loopback listener under another
// host's name (421), and one from a client refused for its wrong tokens (429). A page from
// elsewhere whose name an attacker's DNS re-points at 127.0.0.1 (DNS rebinding) is same-origin
// with the listener to the browser, and could read a token-less page; its requests still carry
// the attacker's name as their Host. The port is not checked: a tunnel (ssh -L) changes it.
func (g *guard) admit(w http.ResponseWriter, r *http.Request) bool {
	if g.loopback && !loopbackHost(r.Host) {
		http.Error(w, fmt.Sprintf("this status listener is on loopback (%s) and answers to 127.0.0.1, [::1] or localhost, not to Host %q",
			g.addr, r.Host), http.StatusMisdirectedRequest)
		return false
	}
	key, ok := clientKey(r.RemoteAddr)
	if !ok {
		return true
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.clients[key]
	if c == nil || !now.Before(c.refusing) {
		return true
	}
	g.pending.refused++
	g.report(now)
	w.Header().Set("Retry-After", strconv.Itoa(int(c.refusing.Sub(now)/time.Second)+1))
	http.Error(w, fmt.Sprintf("too many wrong tokens from %s: refused until %s", r.RemoteAddr, c.refusing.Format(time.RFC3339)), http.StatusTooManyRequests)
	return false
}

// wrongToken counts a request whose token is not the listener's, from remote (host:port).
func (g *guard) wrongToken(remote string) {
	if g == nil { // a view served without a listener, in tests
		return
	}
	key, ok := clientKey(remote)
	if !ok {
		return
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.clients[key]
	if c == nil {
		g.makeRoom()
		c = &client{}
		g.clients[key] = c
	}
	if now.Sub(c.first) >= wrongTokenWindow {
		*c = client{first: now}
	}
	c.wrong++
	if c.wrong >= maxWrongTokens {
		c.refusing = now.Add(refuseFor)
		if len(g.pending.blocked) < maxNamedClients {
			g.pending.blocked = append(g.pending.blocked, key)
		}
	}
	p := &g.pending
	if p.count == 0 {
		p.since = now
	}
	p.count++
	if p.from == nil {
		p.from = map[netip.Prefix]int{}
	}
	if _, named := p.from[key]; named || len(p.from) < maxNamedClients {
		p.from[key]++
	} else {
		p.unnamed++
	}
	g.report(now)
}

// makeRoom forgets the client whose window began first, once maxClients are remembered:
// memory stays bounded whatever the number of addresses a guesser sends from.
func (g *guard) makeRoom() {
	if len(g.clients) < maxClients {
		return
	}
	var oldest netip.Prefix
	var first time.Time
	for key, c := range g.clients {
		if first.IsZero() || c.first.Before(first) {
			oldest, first = key, c.first
		}
	}
	delete(g.clients, oldest)
}

// report logs what is pending at once if no line was logged for wrongTokenLogTick, and
// otherwise when that time is up. g.mu is held.
func (g *guard) report(now time.Time) {
	if g.flush != nil || g.closed {
		return
	}
	wait := g.lastLog.Add(wrongTokenLogTick).Sub(now)
	if wait <= 0 {
		g.logPending(now)
		return
	}
	g.flush = time.AfterFunc(wait, g.logDue)
}

func (g *guard) logDue() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.flush = nil
	g.logPending(g.now())
}

// close logs what is pending, so that a listener that closes loses no count.
func (g *guard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.flush != nil {
		g.flush.Stop()
		g.flush = nil
	}
	g.closed = true
	g.logPending(g.now())
}

// logPending writes one line of the wrong tokens and refusals since the last, never a token.
// g.mu is held.
func (g *guard) logPending(now time.Time) {
	p := g.pending
	if p.count == 0 && p.refused == 0 {
		return
	}
	g.pending, g.lastLog = wrongTokens{}, now
	var b strings.Builder
	fmt.Fprintf(&b, "status listener %s:", g.addr)
	if p.count > 0 {
		fmt.Fprintf(&b, " %s with a wrong token since %s, from %s", plural(p.count, "request"), p.since.Format(time.RFC3339), namedClients(p.from, p.unnamed))
	}
	if len(p.blocked) > 0 {
		if p.count > 0 {
			b.WriteString(";")
		}
		names := make([]string, len(p.blocked))
		for i, key := range p.blocked {
			names[i] = clientName(key)
		}
		fmt.Fprintf(&b, " refusing %s for %s after %d wrong tokens within %s", strings.Join(names, ", "), refuseFor, maxWrongTokens, wrongTokenWindow)
	}
	if p.refused > 0 {
		if p.count > 0 || len(p.blocked) > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s refused (429)", plural(p.refused, "request"))
	}
	log.Warning(b.String())
}

// namedClients says "10.0.0.9 (50), 10.0.0.7 (7)", the most first, and how many came from others.
func namedClients(from map[netip.Prefix]int, unnamed int) string {
	keys := make([]netip.Prefix, 0, len(from))
	for key := range from {
		keys = append(keys, key)
	}
	sort.Slice(keys, func(i, j int) bool {
		if from[keys[i]] != from[keys[j]] {
			return from[keys[i]] > from[keys[j]]
		}
		return keys[i].Addr().Less(keys[j].Addr())
	})
	names := make([]string, len(keys))
	for i, key := range keys {
		names[i] = fmt.Sprintf("%s (%d)", clientName(key), from[key])
	}
	s := strings.Join(names, ", ")
	if unnamed > 0 {
		s += fmt.Sprintf(" and %d from other addresses", unnamed)
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// clientKey is the client a request's remote address counts against: its IPv4 address, or its
// IPv6 /64, since a host on a LAN may take any address of its /64 (RFC 8981).
func clientKey(remote string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}, false
	}
	addr := ap.Addr().Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32), true
	}
	p, _ := addr.Prefix(64)
	return p, true
}

func clientName(key netip.Prefix) string {
	if key.IsSingleIP() {
		return key.Addr().String()
	}
	return key.String()
}

// loopbackHost says whether a request's Host (HOST or HOST:PORT) names this host's loopback.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}
