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
	return icmpMode(openSocket("udp4"), openSocket("ip4:icmp"), pingGroupRange)
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

func icmpMode(unprivileged, raw func() error, groupRange func() string) (bool, error) {
	errRaw := raw()
	if errRaw == nil {
		return true, nil
	}
	errDgram := unprivileged()
	if errDgram == nil {
		return false, nil
	}
	return false, fmt.Errorf("icmp: unprivileged ping sockets are not allowed (%v; net.ipv4.ping_group_range = %q) "+
		"and raw sockets are not allowed (%v): run 'sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"' "+
		"or grant CAP_NET_RAW ('setcap cap_net_raw=+ep coredns'), or use 'check tcp PORT'",
		errDgram, groupRange(), errRaw)
}
