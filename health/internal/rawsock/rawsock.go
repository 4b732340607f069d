// Package rawsock is the operating system under the raw-socket wires: batched sends and reads
// on raw IP sockets (sendmmsg and recvmmsg on Linux), the socket options they need, the port
// reservation of half-open TCP, and the Internet checksum. It knows nothing of probes.
package rawsock

import "net/netip"

// ReadBatch is how many packets one read takes at most.
const ReadBatch = 64

// Outbox is the packets queued for one socket's next batch send, with their destinations.
type Outbox struct {
	packets [][]byte
	to      []*Addr
	scratch sendScratch
}

// Add queues packet for to. Both must stay unchanged until Reset.
func (o *Outbox) Add(packet []byte, to *Addr) {
	o.packets = append(o.packets, packet)
	o.to = append(o.to, to)
}

// Len returns how many packets are queued.
func (o *Outbox) Len() int { return len(o.packets) }

// Reset empties the outbox, keeping its memory and dropping its references to the packets.
func (o *Outbox) Reset() {
	clear(o.packets)
	o.packets = o.packets[:0]
	clear(o.to)
	o.to = o.to[:0]
}

// Drain hands take every packet c has received, and its source, without waiting. c may be nil.
func Drain(c *Conn, in *Inbox, take func(packet []byte, from netip.Addr)) {
	for c != nil {
		n, err := c.RecvBatch(in)
		for i := range n {
			take(in.Packet(i))
		}
		if err != nil || n < ReadBatch {
			return // drained, or closed
		}
	}
}

// Checksum is the Internet checksum (RFC 1071).
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
