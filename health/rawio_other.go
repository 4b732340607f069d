//go:build !linux

package health

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Elsewhere the raw-socket wires batch through x/net, which sends and reads one packet per
// system call where there is no sendmmsg and recvmmsg.

type rawConn struct {
	*net.IPConn
	batch interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error) // ipv6.Message is the same type
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
}

func newRawConn(c *net.IPConn) (*rawConn, error) {
	if local, ok := c.LocalAddr().(*net.IPAddr); ok && local.IP.To4() == nil {
		return &rawConn{IPConn: c, batch: ipv6.NewPacketConn(c)}, nil
	}
	return &rawConn{IPConn: c, batch: ipv4.NewPacketConn(c)}, nil
}

type rawAddr = net.IPAddr

func newRawAddr(addr netip.Addr) *rawAddr {
	return &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
}

type sendScratch struct{ msgs []ipv4.Message }

func (c *rawConn) sendBatch(o *rawOutbox, first int) (int, error) {
	msgs := o.scratch.msgs[:0]
	for i := first; i < len(o.packets); i++ {
		msgs = append(msgs, ipv4.Message{Buffers: [][]byte{o.packets[i]}, Addr: o.to[i]})
	}
	o.scratch.msgs = msgs
	n, err := c.batch.WriteBatch(msgs, 0)
	clear(msgs)
	return max(n, 0), err
}

type rawInbox struct{ msgs []ipv4.Message }

func newRawInbox() rawInbox {
	in := rawInbox{msgs: make([]ipv4.Message, readBatch)}
	for i := range in.msgs {
		in.msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	return in
}

func (c *rawConn) recvBatch(in *rawInbox) (int, error) {
	n, err := c.batch.ReadBatch(in.msgs, recvDontWait)
	return max(n, 0), err // -1 with EAGAIN
}

func (in *rawInbox) packet(i int) ([]byte, netip.Addr) {
	m := &in.msgs[i]
	ip, ok := m.Addr.(*net.IPAddr)
	if !ok {
		return m.Buffers[0][:m.N], netip.Addr{}
	}
	addr, _ := netip.AddrFromSlice(ip.IP)
	return m.Buffers[0][:m.N], addr.WithZone(ip.Zone)
}
