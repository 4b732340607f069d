package main

import (
	"fmt"
	"net"
	"os/exec"
	"strings"

	"github.com/healthdns/healthdns/test/netlab"
)

// The -netns mode puts the backends in a network namespace of their own, behind a veth pair,
// instead of on this host's loopback. On loopback the kernel answers an echo request or a SYN
// inside the prober's own system call, so coredns's CPU is charged with the backends' work too,
// and at 10,000 TCP targets both ends of every handshake land on the dialing CPU. Here receive
// packet steering hands the backends' side of every exchange to CPU 0 (the driver's and
// dnsperf's), and the replies back to CPU 1 (coredns's when pinned): coredns pays for its sends
// and its receives, as a prober on a LAN does.
const (
	backendNS   = "hdscale-backends"
	hostLink    = "hdscale0"
	hostAddr    = "198.18.255.1"
	backendGate = "198.18.255.2"
	backendNet  = "198.19.0.0/16" // every address in it is local to the namespace
)

// makeBackendNamespace builds the namespace, removing one an earlier run left behind. remove
// undoes it.
func makeBackendNamespace() (remove func(), err error) {
	if err := netlab.Available(); err != nil {
		return nil, fmt.Errorf("-netns: %w", err)
	}
	if err := netlab.RemoveStale("hdscale"); err != nil {
		return nil, err
	}
	remove = func() { netlab.RemoveStale("hdscale") }
	steps := [][]string{
		{"ip", "netns", "add", backendNS},
		{"ip", "link", "add", hostLink, "type", "veth", "peer", "name", "eth0", "netns", backendNS},
		{"ip", "addr", "add", hostAddr + "/30", "dev", hostLink},
		{"ip", "link", "set", hostLink, "up"},
		{"ip", "-n", backendNS, "addr", "add", backendGate + "/30", "dev", "eth0"},
		{"ip", "-n", backendNS, "link", "set", "eth0", "up"},
		{"ip", "-n", backendNS, "link", "set", "lo", "up"},
		// One gateway, so the host keeps one neighbour entry instead of 10,000.
		{"ip", "route", "add", backendNet, "via", backendGate},
		{"ip", "-n", backendNS, "route", "add", "local", backendNet, "dev", "lo"},
		// Receive packet steering: the backends' side on CPU 0, the replies' arrival on CPU 1.
		{"ip", "netns", "exec", backendNS, "sh", "-c", "echo 1 > /sys/class/net/eth0/queues/rx-0/rps_cpus"},
		{"sh", "-c", "echo 2 > /sys/class/net/" + hostLink + "/queues/rx-0/rps_cpus"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			remove()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return remove, nil
}

// namespaceAddrs returns n distinct addresses in backendNet.
func namespaceAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		j := i + 1
		out[i] = fmt.Sprintf("198.19.%d.%d", j>>8, j&255)
	}
	return out
}

// listenInNamespace opens a listener inside the backends' namespace.
func listenInNamespace(address string) (net.Listener, error) {
	var l net.Listener
	err := netlab.InNamespace(backendNS, func() (err error) {
		l, err = net.Listen("tcp", address)
		return err
	})
	return l, err
}
