package rawsock

import (
	"net"
	"syscall"
)

// SetReceiveBuffer asks for size bytes, past net.core.rmem_max where CAP_NET_ADMIN allows
// (SO_RCVBUFFORCE); otherwise the kernel's cap applies, which only makes bursts lossier.
func SetReceiveBuffer(c *net.IPConn, size int) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	forced := false
	raw.Control(func(fd uintptr) {
		forced = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size) == nil
	})
	if !forced {
		c.SetReadBuffer(size)
	}
}

// SetDontFragment sets IP_PMTUDISC_DO on an IPv4 raw socket. The kernel sets DF on a small
// packet anyway, but under its default (IP_PMTUDISC_WANT) it still draws an IP ID for each from
// its shared, hashed generator: a twelfth of sendmmsg's time at 10,000 pings a second
// (bench/RESULTS.md). Under DO the ID is 0, as RFC 6864 allows for a datagram that cannot be
// fragmented. A probe is far below any MTU, so DO never refuses one.
func SetDontFragment(c *net.IPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		opErr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
	}); err != nil {
		return err
	}
	return opErr
}
