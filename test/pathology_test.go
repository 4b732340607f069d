package test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/testkit"
)

// afterRequest reads a request's head, then writes answer and, when more is set, more until the
// connection fails.
func afterRequest(answer string, more []byte, every time.Duration) func(c net.Conn) {
	return func(c net.Conn) {
		testkit.ReadRequest(c)
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		for len(more) > 0 {
			if _, err := c.Write(more); err != nil {
				return
			}
			time.Sleep(every)
		}
	}
}

// TestProbePathologies runs the real binary against backends that misbehave, each in a zone of
// its own beside a healthy one: every check ends, and its log line names the backend, its zone
// and what went wrong, as an operator reads it; the endless body passes on its status; the
// healthy zone answers throughout. (The wire and health packages' tests count what each leaves
// behind; docs/RELIABILITY.md, Probe pathologies.)
func TestProbePathologies(t *testing.T) {
	t.Parallel()
	const okIP, silentIP, trickleIP, headerIP, streamIP, scriptIP = "127.0.10.30", "127.0.10.31", "127.0.10.32", "127.0.10.33", "127.0.10.34", "127.0.10.35"
	ok := startWeb(t, okIP)
	silent := testkit.ServeTCP(t, silentIP, func(c net.Conn) { io.Copy(io.Discard, c) })
	trickle := testkit.ServeTCP(t, trickleIP, afterRequest("H", []byte("T"), time.Second))
	header := testkit.ServeTCP(t, headerIP, afterRequest("HTTP/1.1 200 OK\r\nX-Pad: ", []byte(strings.Repeat("x", 64<<10)), 0))
	stream := testkit.ServeTCP(t, streamIP, afterRequest("HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n", make([]byte, 64<<10), 0))
	yes := filepath.Join(t.TempDir(), "yes")
	if err := os.WriteFile(yes, []byte("#!/bin/sh\nyes\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The checks that must fail get 400ms; those that must pass 900ms, which their answer ends
	// at once, and fall 3, so that a loaded machine does not fail them.
	pool := func(zone, ip, check string) string {
		lines := []string{"check " + check, "interval 1s", "timeout 400ms", "all_down servfail"}
		if zone == "ok.lan" || zone == "stream.lan" {
			lines = append(lines[:2], "timeout 900ms", "fall 3", "all_down servfail")
		}
		return harness.Pool(zone, []string{ip}, lines...)
	}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		pool("ok.lan", okIP, "http "+strconv.Itoa(ok.port))+
		pool("silent.lan", silentIP, "http "+strconv.Itoa(int(silent.Port)))+
		pool("trickle.lan", trickleIP, "http "+strconv.Itoa(int(trickle.Port)))+
		pool("header.lan", headerIP, "http "+strconv.Itoa(int(header.Port)))+
		pool("stream.lan", streamIP, "http "+strconv.Itoa(int(stream.Port)))+
		pool("script.lan", scriptIP, "exec "+yes)+
		"}\n")

	down := func(ip, zone, reason string) {
		logLine(t, s, fmt.Sprintf(`backend %s \(%s\.\): down \(first probe\): %s$`, regexp.QuoteMeta(ip), regexp.QuoteMeta(zone), regexp.QuoteMeta(reason)))
		if r := s.Query(t, "udp", zone+".", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: %s, want SERVFAIL: its only backend fails", zone, dns.RcodeToString[r.Rcode])
		}
	}
	down(silentIP, "silent.lan", fmt.Sprintf("http :%d/: no answer within 400ms", silent.Port))
	down(trickleIP, "trickle.lan", fmt.Sprintf("http :%d/: no answer within 400ms", trickle.Port))
	down(headerIP, "header.lan", fmt.Sprintf("http :%d/: the response's header is over 64 KiB", header.Port))
	down(scriptIP, "script.lan", "exec "+yes+": did not finish within 400ms: killed")
	for zone, ip := range map[string]string{"ok.lan.": okIP, "stream.lan.": streamIP} {
		if !upIn(t, s, zone, ip) {
			t.Errorf("%s does not answer %s", zone, ip)
		}
	}
	// Three more rounds of the misbehaving checks: the healthy backend never went down.
	time.Sleep(3 * time.Second)
	if !upIn(t, s, "ok.lan.", okIP) {
		t.Errorf("ok.lan does not answer %s", okIP)
	}
	if lines := harness.LinesMatching(s.Output(), regexp.MustCompile(`backend (`+regexp.QuoteMeta(okIP)+`|`+regexp.QuoteMeta(streamIP)+`) .*: down`)); len(lines) > 0 {
		t.Errorf("a healthy backend went down: %q", lines)
	}
}
