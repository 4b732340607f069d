//go:build !linux

package rawsock

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Elsewhere the raw-socket wires batch through x/net, which sends and reads one packet per
// system call where there is no sendmmsg and recvmmsg.

// Conn is a raw socket with its batch reads and writes.
type Conn struct {
	*net.IPConn
	batch interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error) // ipv6.Message is the same type
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
}

// NewConn wraps c for batch reads and writes.
func NewConn(c *net.IPConn) (*Conn, error) {
	if local, ok := c.LocalAddr().(*net.IPAddr); ok && local.IP.To4() == nil {
		return &Conn{IPConn: c, batch: ipv6.NewPacketConn(c)}, nil
	}
	return &Conn{IPConn: c, batch: ipv4.NewPacketConn(c)}, nil
}

// Addr is a destination.
type Addr = net.IPAddr

// NewAddr returns addr as a destination.
func NewAddr(addr netip.Addr) *Addr {
	return &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
}

type sendScratch struct{ msgs []ipv4.Message }

// SendBatch writes o's packets from first on and returns how many were sent.
func (c *Conn) SendBatch(o *Outbox, first int) (int, error) {
	msgs := o.scratch.msgs[:0]
	for i := first; i < len(o.packets); i++ {
		msgs = append(msgs, ipv4.Message{Buffers: [][]byte{o.packets[i]}, Addr: o.to[i]})
	}
	o.scratch.msgs = msgs
	n, err := c.batch.WriteBatch(msgs, 0)
	clear(msgs)
	return max(n, 0), err
}

// Inbox is what RecvBatch reads into.
type Inbox struct{ msgs []ipv4.Message }

// NewInbox returns an inbox of ReadBatch buffers.
func NewInbox() Inbox {
	in := Inbox{msgs: make([]ipv4.Message, ReadBatch)}
	for i := range in.msgs {
		in.msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	return in
}

// RecvBatch reads what c has received, up to ReadBatch packets, without waiting.
func (c *Conn) RecvBatch(in *Inbox) (int, error) {
	n, err := c.batch.ReadBatch(in.msgs, recvDontWait)
	return max(n, 0), err // -1 with EAGAIN
}

// Packet returns the ith packet read, and its source.
func (in *Inbox) Packet(i int) ([]byte, netip.Addr) {
	m := &in.msgs[i]
	ip, ok := m.Addr.(*net.IPAddr)
	if !ok {
		return m.Buffers[0][:m.N], netip.Addr{}
	}
	addr, _ := netip.AddrFromSlice(ip.IP)
	return m.Buffers[0][:m.N], addr.WithZone(ip.Zone)
}
