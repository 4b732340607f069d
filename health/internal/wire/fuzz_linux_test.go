package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzSYNReply: a raw TCP socket's bytes count as an answer only when they are a SYN-ACK or a
// reset with an ACK, in a valid IPv4 header for IPv4, to one of our ports; the answer is keyed
// by the sender, its port and the SYN's sequence number that it acknowledges.
func FuzzSYNReply(f *testing.F) {
	const base = 40000
	v4header := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, unix.IPPROTO_TCP, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1}
	f.Add(0, append(v4header, synSegment(base, tcpSYN|tcpACK, 7)...), []byte{127, 0, 0, 1}, uint16(base))
	f.Add(0, append(v4header, synSegment(base+63, tcpRST|tcpACK, 7)...), []byte{127, 0, 0, 1}, uint16(base))
	f.Add(0, append(v4header, synSegment(base+64, tcpSYN|tcpACK, 7)...), []byte{127, 0, 0, 1}, uint16(base))
	f.Add(0, append(v4header, synSegment(base, tcpRST, 7)...), []byte{127, 0, 0, 1}, uint16(base))
	f.Add(1, synSegment(65535, tcpSYN|tcpACK, 0xffffffff), []byte{0x20, 1, 0xd, 0xb8, 15: 1}, uint16(65500))
	f.Add(1, synSegment(base, tcpSYN|tcpACK, 1), []byte{}, uint16(base))
	f.Add(0, append([]byte{0x41, 0, 0, 40, 0, 0, 0, 0, 64, unix.IPPROTO_TCP, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1}, synSegment(base, tcpSYN|tcpACK, 7)...), []byte{127, 0, 0, 1}, uint16(base))
	f.Fuzz(func(t *testing.T, family int, b, from []byte, base uint16) {
		family &= 1
		base = min(base, 65535-synPorts+1) // the ports a HalfOpen takes all fit below 65536
		addr, _ := netip.AddrFromSlice(from)
		got, ok := parseSYNReply(family, b, addr, base)
		if !ok {
			return
		}
		tcp := b
		if family == 0 {
			var valid bool
			if tcp, valid = ipPayload(b); !valid || b[9] != unix.IPPROTO_TCP {
				t.Fatalf("accepted % x, whose IPv4 header is not valid or not TCP's", b)
			}
		}
		if len(tcp) < tcpHeaderLen {
			t.Fatalf("accepted % x, shorter than a TCP header", b)
		}
		dport := binary.BigEndian.Uint16(tcp[2:])
		flags := tcp[13]
		if dport < base || int(dport) >= int(base)+synPorts {
			t.Fatalf("accepted a segment to port %d, not one of ours (%d on)", dport, base)
		}
		// A SYN-ACK, whatever else it sets, is an open port's answer; an ACK with a reset and
		// no SYN is a closed port's.
		if flags&tcpACK == 0 || flags&(tcpSYN|tcpRST) == 0 || got.reset != (flags&tcpSYN == 0) {
			t.Fatalf("accepted flags %#x as reset %v", flags, got.reset)
		}
		want := synKey{addr: addr.Unmap(), port: binary.BigEndian.Uint16(tcp[0:]), isn: binary.BigEndian.Uint32(tcp[8:]) - 1}
		if got.key != want {
			t.Fatalf("accepted % x from %s as %+v, want %+v", b, addr, got.key, want)
		}
	})
}

// synSegment is the TCP header of an answer from port 80 to dport, acknowledging isn.
func synSegment(dport uint16, flags byte, isn uint32) []byte {
	b := make([]byte, tcpHeaderLen)
	binary.BigEndian.PutUint16(b[0:], 80)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[8:], isn+1)
	b[12] = tcpHeaderLen / 4 << 4
	b[13] = flags
	return b
}
