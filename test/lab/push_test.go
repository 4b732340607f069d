package lab

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// The push lab's own namespaces and addresses (prefix hdpush, 198.18.25.0/24), so that it runs
// beside the other labs' prefixes.
const (
	pushPrefix  = "hdpush"
	pushDNS     = "198.18.25.2"
	pushClient  = "198.18.25.100"
	pushNode1   = "198.18.25.11"
	pushNode2   = "198.18.25.12"
	pushToken   = "lab-r3port-0123456789"
	pushTTL     = "2s"
	pushEvery   = "0.5"
	pushAPIPort = "8053"
)

// reportLoop is a node's timer, as a shell loop: every pushEvery seconds it runs the node's own
// check (a flag file standing for a local service's state, which only the node can see) and
// reports the verdict with healthdnsctl, as the README's systemd timer does.
const reportLoop = `
while :; do
	if [ -e "$STATE" ]; then result=pass; output="service answers"; else result=fail; output="service stopped"; fi
	"$HEALTHDNSCTL" report push.lab. "$NODE" "$result" --output "$output"
	sleep $EVERY
done`

// TestPushLab: two nodes report their own state to the DNS host through the status listener,
// each from a timer loop in its own namespace. Both reporting pass are answered; a node whose
// local check fails reports fail and leaves the answers at its next report; once its check
// passes again it is back; a node whose timer stops leaves once the TTL has passed.
func TestPushLab(t *testing.T) {
	lab := openLab(t, pushPrefix)
	dnsHost, err := lab.Host("dns", pushDNS)
	if err != nil {
		t.Fatal(err)
	}
	client, err := lab.Host("client", pushClient)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "report.token")
	if err := os.WriteFile(tokenFile, []byte(pushToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, lab: lab, dns1: dnsHost, client: client}
	p := w.startDNS(dnsHost,
		" healthdns push.lab {\n  backend "+pushNode1+"\n  backend "+pushNode2+"\n  check push "+pushTTL+" token "+tokenFile+
			"\n  fall 1\n  answers 2\n  all_down servfail\n  status "+pushDNS+":"+pushAPIPort+" token "+tokenFile+"\n }\n")

	answer := func() ([]string, int, error) {
		r, err := client.Query(pushDNS, "push.lab.", dns.TypeA, time.Second)
		if err != nil {
			return nil, 0, err
		}
		var ips []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ips = append(ips, a.A.String())
			}
		}
		slices.Sort(ips)
		return ips, r.Rcode, nil
	}
	waitAnswer := func(within time.Duration, what string, want ...string) time.Duration {
		t.Helper()
		start := time.Now()
		var last []string
		for time.Since(start) < within {
			ips, rcode, err := answer()
			if err == nil && rcode == dns.RcodeSuccess && slices.Equal(ips, want) {
				return time.Since(start)
			}
			last = ips
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: not within %s; last answer %v\ncoredns:\n%s", what, within, last, p.Output())
		return 0
	}

	if ips, rcode, err := answer(); err != nil || len(ips) != 0 {
		t.Fatalf("before any report: %v (rcode %d, %v), want no address: no node has passed its push check", ips, rcode, err)
	}
	state := map[string]string{}
	timers := map[string]func(){}
	for name, addr := range map[string]string{"n1": pushNode1, "n2": pushNode2} {
		node, err := lab.Host(name, addr)
		if err != nil {
			t.Fatal(err)
		}
		state[addr] = filepath.Join(dir, name+".up")
		if err := os.WriteFile(state[addr], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		env := append(os.Environ(), "STATE="+state[addr], "NODE="+addr, "EVERY="+pushEvery, "HEALTHDNSCTL="+harness.Healthdnsctl(t),
			"HEALTHDNS_ADDR="+pushDNS+":"+pushAPIPort, "HEALTHDNS_TOKEN_FILE="+tokenFile)
		timer, err := node.StartProcessEnv(env, "/bin/sh", "-c", reportLoop)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { timer.Stop() })
		timers[addr] = func() { timer.Stop() }
	}
	waitAnswer(10*time.Second, "both nodes answered once they report pass", pushNode1, pushNode2)

	// Node 1's service stops: its next report is a fail, and with fall 1 it leaves at once.
	if err := os.Remove(state[pushNode1]); err != nil {
		t.Fatal(err)
	}
	took := waitAnswer(10*time.Second, "node 1 out after reporting fail", pushNode2)
	t.Logf("node 1 left the answers %s after its service stopped (reports every %ss)", took.Round(time.Millisecond), pushEvery)

	if err := os.WriteFile(state[pushNode1], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitAnswer(10*time.Second, "node 1 back once its service answers again", pushNode1, pushNode2)

	// Node 2's timer stops (the node died, or lost its network): out once the TTL has passed.
	timers[pushNode2]()
	took = waitAnswer(20*time.Second, "node 2 out after its reports stopped", pushNode1)
	t.Logf("node 2 left the answers %s after its timer stopped (TTL %s, reports every %ss)", took.Round(time.Millisecond), pushTTL, pushEvery)
}
