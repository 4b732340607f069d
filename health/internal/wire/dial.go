package wire

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Dial returns a blocking check that passes when a TCP connection to port is accepted; it sends
// nothing. It is the TCP check where no loop of our own can connect (outside Linux).
func Dial(port uint16) func(ctx context.Context, addr netip.Addr) error {
	var dialer net.Dialer
	return func(ctx context.Context, addr netip.Addr) error {
		var within time.Duration
		if deadline, ok := ctx.Deadline(); ok {
			within = time.Until(deadline)
		}
		conn, err := dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
		if err != nil {
			return fmt.Errorf("tcp :%d: %w", port, unwrapDial(ctx, within, err))
		}
		conn.Close()
		return nil
	}
}
