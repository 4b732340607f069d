//go:build !linux

package health

import "net"

// setReceiveBuffer asks for size bytes; the system's cap applies.
func setReceiveBuffer(c *net.IPConn, size int) { c.SetReadBuffer(size) }

// setDontFragment leaves the system's default, which costs little outside Linux.
func setDontFragment(c *net.IPConn) error { return nil }
