//go:build !linux

package rawsock

import "net"

// SetReceiveBuffer asks for size bytes; the system's cap applies.
func SetReceiveBuffer(c *net.IPConn, size int) { c.SetReadBuffer(size) }

// SetDontFragment leaves the system's default, which costs little outside Linux.
func SetDontFragment(c *net.IPConn) error { return nil }
