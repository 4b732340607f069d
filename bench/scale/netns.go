package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/healthdns/healthdns/test/netlab"
)

// The -netns mode puts the backends in a network namespace of their own, behind a veth pair,
// instead of on this host's loopback. On loopback the kernel answers an echo request or a SYN
// inside the prober's own system call, so coredns's CPU is charged with the backends' work too,
// and at 10,000 TCP targets both ends of every handshake land on the dialing CPU. Here each end
// of the veth takes in its packets on a kernel thread of its own (threaded NAPI): the backends'
// side of every exchange runs on CPU 0 (the driver's and dnsperf's), and the replies arrive on
// CPU 1 (coredns's when pinned). So coredns pays for its sends and its receives, as a prober on
// a LAN does, and for no more.
//
// Receive packet steering did this before, but a veth transmits each packet on its own, so
// every packet the prober sent also sent an interprocessor interrupt from the prober's system
// call: on this VM that was a quarter of sendmmsg's time, and the LAN has no such cost.
//
// Threaded NAPI alone still woke the backends' thread for most packets, since it drains its
// queue faster than the prober fills it and then sleeps: that wakeup (__napi_schedule inside
// veth_xmit) took 1-12% of CPU 1 at 10,000 probes a second, as much as the host's load made an
// interrupt cost (bench/RESULTS.md). So the backends' end also moderates its interrupts, as a
// NIC does: once woken, its thread polls every backendPollGap for as long as packets keep
// coming, and sleeps only after backendEmptyPolls polls find nothing. A sender then finds it
// awake and just queues the packet.
const (
	backendNS   = "hdscale-backends"
	hostLink    = "hdscale0"
	backendLink = "hdscale1" // eth0 would do, but the NAPI thread's name must be ours
	hostAddr    = "198.18.255.1"
	backendGate = "198.18.255.2"
	backendNet  = "198.19.0.0/16" // every address in it is local to the namespace

	backendPollGap    = "200000" // nanoseconds (gro_flush_timeout)
	backendEmptyPolls = "10"     // 2 ms in all, longer than the probe loop's tick (napi_defer_hard_irqs)
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
		{"ip", "link", "add", hostLink, "type", "veth", "peer", "name", backendLink, "netns", backendNS},
		{"ip", "addr", "add", hostAddr + "/30", "dev", hostLink},
		{"ip", "link", "set", hostLink, "up"},
		{"ip", "-n", backendNS, "addr", "add", backendGate + "/30", "dev", backendLink},
		{"ip", "-n", backendNS, "link", "set", backendLink, "up"},
		{"ip", "-n", backendNS, "link", "set", "lo", "up"},
		// One gateway, so the host keeps one neighbour entry instead of 10,000.
		{"ip", "route", "add", backendNet, "via", backendGate},
		{"ip", "-n", backendNS, "route", "add", "local", backendNet, "dev", "lo"},
		// A veth has a NAPI instance, which can run threaded, only with GRO on; and it takes
		// in a packet through it only when the sending end does no TSO.
		{"ip", "netns", "exec", backendNS, "ethtool", "-K", backendLink, "gro", "on", "tso", "off"},
		{"ethtool", "-K", hostLink, "gro", "on", "tso", "off"},
		{"ip", "netns", "exec", backendNS, "sh", "-c", "echo 1 > /sys/class/net/" + backendLink + "/threaded"},
		{"sh", "-c", "echo 1 > /sys/class/net/" + hostLink + "/threaded"},
		{"ip", "netns", "exec", backendNS, "sh", "-c",
			"echo " + backendPollGap + " > /sys/class/net/" + backendLink + "/gro_flush_timeout && " +
				"echo " + backendEmptyPolls + " > /sys/class/net/" + backendLink + "/napi_defer_hard_irqs"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			remove()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	for link, cpu := range map[string]string{backendLink: "0", hostLink: "1"} {
		if err := pinNAPIThreads(link, cpu); err != nil {
			remove()
			return nil, err
		}
	}
	return remove, nil
}

// pinNAPIThreads pins the kernel threads that take in link's packets ("napi/LINK-ID") to cpu.
func pinNAPIThreads(link, cpu string) error {
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	pinned := 0
	for _, path := range comms {
		comm, err := os.ReadFile(path)
		if err != nil || !strings.HasPrefix(string(comm), "napi/"+link+"-") {
			continue
		}
		pid := filepath.Base(filepath.Dir(path))
		if out, err := exec.Command("taskset", "-p", "-c", cpu, pid).CombinedOutput(); err != nil {
			return fmt.Errorf("pinning %s's NAPI thread: %v: %s", link, err, strings.TrimSpace(string(out)))
		}
		pinned++
	}
	if pinned == 0 {
		return fmt.Errorf("%s has no NAPI thread to pin", link)
	}
	return nil
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
