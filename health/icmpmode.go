package health

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/net/icmp"
)

// ICMPMode finds out, once at setup, how this process can ping: with a raw socket (preferred
// when CAP_NET_RAW allows it: every probe then shares the echo wire's one socket) or an
// unprivileged datagram socket (a socket per probe, but no capability needed). When neither
// opens, the error names both causes and both fixes, so a misconfigured host fails at startup
// instead of marking every backend down.
func ICMPMode() (privileged bool, err error) {
	c := detectICMP()
	return c.privileged, c.err
}

// icmpChoice is how the process can ping, with what it found on the way.
type icmpChoice struct {
	privileged bool
	rawErr     error // why a raw socket did not open
	err        error // neither opened
}

func openSocket(network string) func() error {
	return func() error {
		c, err := icmp.ListenPacket(network, "0.0.0.0")
		if err != nil {
			return err
		}
		return c.Close()
	}
}

func pingGroupRange() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func icmpMode(unprivileged, raw func() error, groupRange func() string) icmpChoice {
	errRaw := raw()
	if errRaw == nil {
		return icmpChoice{privileged: true}
	}
	errDgram := unprivileged()
	if errDgram == nil {
		return icmpChoice{rawErr: errRaw}
	}
	return icmpChoice{rawErr: errRaw, err: fmt.Errorf("icmp: unprivileged ping sockets are not allowed (%v; net.ipv4.ping_group_range = %q) "+
		"and raw sockets are not allowed (%v): run 'sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"' "+
		"or grant CAP_NET_RAW ('setcap cap_net_raw=+ep coredns'), or use 'check tcp PORT'",
		errDgram, groupRange(), errRaw)}
}

// notice is the line that says how ICMP checks probe and why, batched says whether raw pings
// share the echo wire's socket. An operator who finds the capability missing learns it here, at
// startup, not from a probe's timing.
func (c icmpChoice) notice(batched bool, groupRange func() string) string {
	switch {
	case c.err != nil:
		return "icmp checks cannot probe: " + c.err.Error()
	case c.privileged && batched:
		return "icmp checks: raw sockets (CAP_NET_RAW), one per address family for every probe"
	case c.privileged:
		return "icmp checks: raw sockets (CAP_NET_RAW), one per probe"
	}
	return fmt.Sprintf("icmp checks: unprivileged ping sockets, one per probe: no raw socket (%v; that needs CAP_NET_RAW), "+
		"and net.ipv4.ping_group_range = %q lets the process's groups in (its own is %d)", c.rawErr, groupRange(), os.Getegid())
}
