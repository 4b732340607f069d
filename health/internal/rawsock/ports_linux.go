//go:build linux

package rawsock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// TCPAllowed reports whether this process may open raw TCP sockets (CAP_NET_RAW).
func TCPAllowed() bool { return RawTCP() == nil }

// RawTCP opens and closes a raw TCP socket, and returns why it could not.
func RawTCP() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("raw TCP socket: %w", err)
	}
	unix.Close(fd)
	return nil
}

// ReservePorts binds n TCP sockets of family to consecutive free ports, which it
// returns as the first port and the sockets. It looks in the kernel's ephemeral range, where
// services do not listen; bound, the ports are no longer the kernel's to hand out. A host short
// of ephemeral ports (client sockets in TIME_WAIT fill them) may have few free runs left, so it
// walks the whole range from a random start rather than guessing.
func ReservePorts(family, n, low, high int) (base uint16, fds []int, err error) {
	bases := high - low + 2 - n // the runs that fit: low .. high+1-synPorts
	start := rand.IntN(bases)
	for i := 0; i < bases; {
		base = uint16(low + (start+i)%bases)
		var taken int
		fds, taken, err = bindPorts(family, n, base)
		if err == nil {
			return base, fds, nil
		}
		// No run that holds the taken port can be free: go on from the port after it, or
		// from the range's start when that is past the last run.
		at := (start + i) % bases
		i += max(min(taken+1-low, bases)-at, 1)
	}
	return 0, nil, fmt.Errorf("reserving %d consecutive ports in %d-%d: none free (last: %w)", n, low, high, err)
}

// bindPorts binds n sockets from base on; when one will not bind it closes the rest and
// returns that port.
func bindPorts(family, n int, base uint16) (fds []int, taken int, err error) {
	for i := range uint16(n) {
		domain, addr := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(base + i)})
		if family == 1 {
			domain, addr = unix.AF_INET6, &unix.SockaddrInet6{Port: int(base + i)}
		}
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			if err = unix.Bind(fd, addr); err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, int(base + i), fmt.Errorf("port %d: %w", base+i, err)
		}
		fds = append(fds, fd)
	}
	return fds, 0, nil
}

// EphemeralPorts returns net.ipv4.ip_local_port_range (which IPv6 shares), or its default when
// it is unreadable or holds fewer than min ports.
func EphemeralPorts(min int) (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	var l, h int
	if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 && l > 0 && h-l+1 >= min && h < 65536 {
		return l, h
	}
	return low, high
}

// RouteSource returns the source address the kernel routes from to dst, as a UDP socket
// connected to it learns without sending anything.
func RouteSource(dst netip.Addr) (netip.Addr, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: dst.As4()}); err != nil {
		return netip.Addr{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, err
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.Addr{}, errors.New("no IPv4 source")
	}
	return netip.AddrFrom4(in4.Addr), nil
}
