package status

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/testkit"
)

// acquired opens a listener for v on a free loopback port, closed at the test's end, and
// returns its address.
func acquired(t *testing.T, v *View) (*Listeners, *net.TCPAddr) {
	t.Helper()
	v.Addr = "127.0.0.1:0"
	ls := NewListeners()
	if err := ls.Acquire(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Release(v) })
	return ls, ls.byAddr[v.Addr].addr.(*net.TCPAddr)
}

// acceptedConns counts this process's file descriptors of connections that a listener on
// port accepted (not the clients' ends, nor the listening socket).
func acceptedConns(t *testing.T, port int) int {
	t.Helper()
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)        // sl local_address rem_address st ... inode
			if len(f) < 10 || f[3] == "0A" { // 0A: LISTEN
				continue
			}
			_, local, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(local, 16, 16); err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && inodes[target] {
			n++
		}
	}
	return n
}

func poll(deadline time.Duration, cond func() bool) bool {
	for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestListenerConnectionCap: three times maxConns clients that connect and say nothing hold
// at most maxConns of the process's descriptors; the others wait in the kernel's queue. The
// server closes a silent client, and once the idle ones are gone an authorized request is
// served.
func TestListenerConnectionCap(t *testing.T) {
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		t.Skip("no /proc/self/net/tcp to count the listener's connections in")
	}
	_, v := fakeView()
	_, addr := acquired(t, v)
	idle := make([]net.Conn, 3*maxConns)
	for i := range idle {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		idle[i] = c
		defer c.Close()
	}

	// The count rises as the server accepts: wait until it has held still for a while at the
	// cap or above (without the cap it settles at every client), keeping the most seen.
	most, last, still := 0, -1, 0
	if !poll(60*time.Second, func() bool {
		n := acceptedConns(t, addr.Port)
		most = max(most, n)
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		return n >= maxConns && still >= 20
	}) {
		t.Fatalf("the listener accepted %d of %d idle clients, want it to hold %d", last, len(idle), maxConns)
	}
	if most > maxConns {
		t.Fatalf("%d idle clients held %d of the process's descriptors, want at most %d", len(idle), most, maxConns)
	}

	code := make(chan string, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{}, Timeout: 60 * time.Second}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr.String()+"/status.json", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := client.Do(req)
		if err != nil {
			code <- err.Error()
			return
		}
		resp.Body.Close()
		code <- resp.Status
	}()
	for _, c := range idle[1:] {
		c.Close()
	}
	idle[0].SetReadDeadline(time.Now().Add(60 * time.Second))
	if n, err := idle[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a client silent for a minute: read %d bytes, %v; want the server to close it (EOF)", n, err)
	}
	if got := <-code; got != "200 OK" {
		t.Errorf("an authorized request once the idle clients are gone: %s, want 200 OK", got)
	}
}

// TestLoopbackHost: a loopback listener answers a request that names loopback as its Host, by
// address or as localhost, and refuses one under another name, as a DNS-rebinding page sends.
func TestLoopbackHost(t *testing.T) {
	_, v := fakeView()
	v.Token = "" // a loopback listener may have none: the Host check is what protects it
	_, addr := acquired(t, v)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	port := strconv.Itoa(addr.Port)
	for host, want := range map[string]int{
		"127.0.0.1:" + port:              http.StatusOK,
		"localhost:" + port:              http.StatusOK,
		"LOCALHOST:" + port:              http.StatusOK,
		"[::1]:" + port:                  http.StatusOK,
		"127.0.0.1":                      http.StatusOK,
		"127.0.0.1:9999":                 http.StatusOK, // a tunnel's port
		"evil.example:" + port:           http.StatusMisdirectedRequest,
		"evil.example":                   http.StatusMisdirectedRequest,
		"localhost.evil.example:" + port: http.StatusMisdirectedRequest,
		"10.0.0.53:" + port:              http.StatusMisdirectedRequest,
	} {
		for _, path := range []string{"/status.json", "/", "/api/v1/drain"} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr.String()+path, nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			expect := want
			if path == "/api/v1/drain" && want == http.StatusOK {
				expect = http.StatusMethodNotAllowed // reached the API, which wants POST
			}
			if resp.StatusCode != expect {
				t.Errorf("Host %s, GET %s: %d %s, want %d", host, path, resp.StatusCode, body, expect)
			}
		}
	}

	// A listener other hosts reach has a token, which a rebinding page does not know; its Host
	// may be any name the LAN gives the server.
	g := newGuard(&net.TCPAddr{IP: net.ParseIP("10.0.0.53"), Port: 8053})
	r := httptest.NewRequest(http.MethodGet, "/status.json", nil)
	r.Host = "dns.lan:8053"
	if !g.admit(httptest.NewRecorder(), r) {
		t.Error("a LAN listener refused a request by its host name")
	}
}

// guarded is a listener of v, served without a socket, whose guard reads the time from clock.
func guarded(v *View, clock *time.Time) (http.Handler, *guard) {
	ls := NewListeners()
	g := newGuard(&net.TCPAddr{IP: net.ParseIP("10.0.0.53"), Port: 8053})
	g.now = func() time.Time { return *clock }
	v.guard = g
	return ls.handler(&listener{guard: g, views: []*View{v}}), g
}

func getFrom(h http.Handler, remote, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/status.json", nil)
	r.RemoteAddr = remote
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestWrongTokensRefused: a client that sends maxWrongTokens wrong tokens within the window is
// refused (429) for refuseFor, even with the right one, while other clients are served; a
// request without a token is no guess and counts for nothing; a refused client comes back when
// its time is up; and the clients remembered stay bounded.
func TestWrongTokensRefused(t *testing.T) {
	_, v := fakeView()
	clock := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	h, g := guarded(v, &clock)
	defer g.close()
	right, wrong := "Bearer "+apiToken, "Bearer guess"
	const guesser, neighbour = "192.0.2.66:40000", "192.0.2.67:40000"

	for i := range 3 * maxWrongTokens {
		if w := getFrom(h, guesser, ""); w.Code != http.StatusUnauthorized {
			t.Fatalf("request %d without a token: %d, want 401", i, w.Code)
		}
	}
	for i := 1; i <= maxWrongTokens; i++ {
		clock = clock.Add(wrongTokenWindow / (2 * maxWrongTokens))
		if w := getFrom(h, fmt.Sprintf("192.0.2.66:%d", 40000+i), wrong); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, w.Code)
		}
	}
	w := getFrom(h, guesser, right)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != strconv.Itoa(int(refuseFor/time.Second)+1) {
		t.Fatalf("the right token after %d wrong ones: %d, Retry-After %q; want 429 for %s", maxWrongTokens, w.Code, w.Header().Get("Retry-After"), refuseFor)
	}
	if w := getFrom(h, neighbour, right); w.Code != http.StatusOK {
		t.Errorf("another client: %d, want 200", w.Code)
	}
	if w := getFrom(h, "[2001:db8::1]:40000", wrong); w.Code != http.StatusUnauthorized {
		t.Errorf("an IPv6 client's first wrong token: %d, want 401", w.Code)
	}
	clock = clock.Add(refuseFor)
	if w := getFrom(h, guesser, right); w.Code != http.StatusOK {
		t.Errorf("the right token once refuseFor is over: %d, want 200", w.Code)
	}

	// An IPv6 host may take any address of its /64: the guesses of a /64 count together.
	for i := 1; i <= maxWrongTokens; i++ {
		getFrom(h, fmt.Sprintf("[2001:db8::%x]:40000", i), wrong)
	}
	if w := getFrom(h, "[2001:db8::ffff]:40000", right); w.Code != http.StatusTooManyRequests {
		t.Errorf("another address of a guessing /64: %d, want 429", w.Code)
	}

	for i := range 4 * maxClients {
		getFrom(h, fmt.Sprintf("198.18.%d.%d:40000", i/256, i%256), wrong)
	}
	g.mu.Lock()
	remembered := len(g.clients)
	g.mu.Unlock()
	if remembered > maxClients {
		t.Errorf("%d clients remembered, want at most %d", remembered, maxClients)
	}
}

// TestWrongTokensLogged: the first wrong token is logged at once; those that follow within
// wrongTokenLogTick wait for one line that counts them, by address, and says who was refused;
// no line holds a token; a closing listener logs what was pending.
func TestWrongTokensLogged(t *testing.T) {
	lines := testkit.LogLines(t)
	_, v := fakeView()
	clock := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	h, g := guarded(v, &clock)
	const guess = "Bearer my-guess-0123456789"

	getFrom(h, "192.0.2.66:40000", guess)
	want := []string{"[WARNING] plugin/healthdns: status listener 10.0.0.53:8053: 1 request with a wrong token since 2026-12-04T12:00:00Z, from 192.0.2.66 (1)"}
	if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after the first wrong token the log holds %q, want %q", got, want)
	}

	clock = clock.Add(time.Second)
	for range maxWrongTokens + 4 { // 9 more wrong, then 5 refused
		getFrom(h, "192.0.2.66:40001", guess)
	}
	getFrom(h, "[2001:db8::7]:40000", guess)
	getFrom(h, "192.0.2.67:40000", "") // no token: no guess
	if got := lines(); len(got) != 1 {
		t.Fatalf("within %s of the first line, the log holds %q: want one line until it is up", wrongTokenLogTick, got)
	}
	clock = clock.Add(wrongTokenLogTick)
	g.mu.Lock()
	due := g.flush.Stop() // and fire it now, as the clock says
	g.mu.Unlock()
	if !due {
		t.Fatal("no log line is due")
	}
	g.logDue()
	want = append(want, "[WARNING] plugin/healthdns: status listener 10.0.0.53:8053: 10 requests with a wrong token since 2026-12-04T12:00:01Z, from 192.0.2.66 (9), 2001:db8::/64 (1); refusing 192.0.2.66 for 1m0s after 10 wrong tokens within 1m0s; 5 requests refused (429)")
	if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the log holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	getFrom(h, "192.0.2.66:40002", guess) // refused, and pending when the listener closes
	g.close()
	want = append(want, "[WARNING] plugin/healthdns: status listener 10.0.0.53:8053: 1 request refused (429)")
	got := lines()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after the close, the log holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range got {
		if strings.Contains(line, "my-guess") || strings.Contains(line, apiToken) {
			t.Errorf("a log line holds a token: %s", line)
		}
	}
}
