package testnet

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Wire routes prefix, in the test's own namespace, through a TUN device that this process holds,
// and returns the device: what the host sends to the prefix is read from it as IP packets, which
// nothing else sees, and what the test writes to it arrives as if a host of the prefix had sent
// it. A prefix with no reader is a black hole: SYNs and echo requests to it get no answer at all,
// not the reset or unreachable that loopback and an unrouted address give at once.
//
// The prefix may be a part of 127.0.0.0/8: its route goes in the local table, ahead of the
// loopback's /8, and the namespace's route_localnet lets loopback addresses on the device. The
// host sends to it from 127.0.0.1.
func Wire(t *testing.T, dev string, prefix netip.Prefix) *os.File {
	t.Helper()
	if !InOwnNetns() {
		t.Fatalf("refusing to route %s outside the test's namespace", prefix)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("creating TUN device %s: %v", dev, err)
	}
	// Non-blocking, so that the runtime's poller serves it: a read then ends with Close or a
	// deadline.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	tun := os.NewFile(uintptr(fd), "/dev/net/tun:"+dev)
	t.Cleanup(func() { tun.Close() })
	for _, name := range []string{"all", "default", dev} {
		Sysctl(t, "net.ipv4.conf."+name+".route_localnet", "1")
		Sysctl(t, "net.ipv4.conf."+name+".rp_filter", "0")
	}
	for _, args := range [][]string{
		{"link", "set", dev, "up"},
		{"route", "add", prefix.String(), "dev", dev, "src", Loopback4.String(), "table", "local"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return tun
}
