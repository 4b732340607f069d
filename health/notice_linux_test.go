package health

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/rawsock"
)

// The registry says once, when its first check of a kind starts, how checks of that kind probe:
// the line follows the sockets this process can open (the namespace lab runs the binary with and
// without CAP_NET_RAW: test/lab TestLeastPrivilege).
func TestProbeModeNotices(t *testing.T) {
	var lines []string
	reg := NewRegistry(&stampRecorder{}, WithNotice(func(line string) { lines = append(lines, line) }))
	addr := netip.MustParseAddr("127.0.0.1")
	spec := func(c Check) Spec {
		return Spec{Check: c, Interval: time.Hour, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}
	}
	for _, c := range []Check{{Kind: TCP, Port: 1}, {Kind: TCP, Port: 2}, {Kind: ICMP}, {Kind: ICMP}} {
		l := reg.Acquire(Target{Addr: addr, Spec: spec(c)}, "z.")
		t.Cleanup(l.Release)
	}
	if len(lines) != 2 {
		t.Fatalf("notices %q, want one per kind of check", lines)
	}
	tcp := "tcp checks: half-open, SYNs from a raw socket (CAP_NET_RAW)"
	if err := rawsock.RawTCP(); err != nil {
		tcp = "tcp checks: connects, closed with a reset, not half-open: no " + err.Error()
	}
	if !strings.HasPrefix(lines[0], tcp) {
		t.Errorf("TCP notice %q, want %q", lines[0], tcp)
	}
	icmp := "icmp checks: raw sockets"
	if !detectICMP().privileged {
		icmp = "icmp checks: unprivileged ping sockets"
	}
	if !strings.HasPrefix(lines[1], icmp) {
		t.Errorf("ICMP notice %q, want %q", lines[1], icmp)
	}
}
