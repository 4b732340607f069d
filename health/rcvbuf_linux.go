package health

import (
	"net"
	"syscall"
)

// setReceiveBuffer asks for size bytes, past net.core.rmem_max where CAP_NET_ADMIN allows
// (SO_RCVBUFFORCE); otherwise the kernel's cap applies, which only makes bursts lossier.
func setReceiveBuffer(c *net.IPConn, size int) {
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
