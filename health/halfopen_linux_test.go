package health

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// The raw socket's filter queues only answers to our ports: SYN-ACKs and resets to base through
// base+synPorts-1, and nothing else of the host's TCP traffic (the copies of our own SYNs that
// loopback delivers among it).
func TestSYNReplyFilter(t *testing.T) {
	const base = 40000
	segment := func(family int, dport uint16, flags byte) []byte {
		tcp := make([]byte, tcpHeaderLen)
		binary.BigEndian.PutUint16(tcp[2:], dport)
		tcp[13] = flags
		if family == 1 {
			return tcp // an IPv6 raw socket gets no IP header
		}
		ip := make([]byte, 24) // with 4 bytes of options, to test the header-length load
		ip[0] = 0x46
		ip[9] = 6
		return append(ip, tcp...)
	}
	tests := []struct {
		name   string
		dport  uint16
		flags  byte
		accept bool
	}{
		{"SYN-ACK to the first port", base, tcpSYN | tcpACK, true},
		{"SYN-ACK to the last port", base + synPorts - 1, tcpSYN | tcpACK, true},
		{"reset to a port of ours", base + 7, tcpRST | tcpACK, true},
		{"SYN-ACK below the range", base - 1, tcpSYN | tcpACK, false},
		{"SYN-ACK above the range", base + synPorts, tcpSYN | tcpACK, false},
		{"our own SYN, looped back", base + 1, tcpSYN, false},
	}
	for family, name := range []string{"ipv4", "ipv6"} {
		vm, err := bpf.NewVM(disassemble(t, synReplyFilter(family, base)))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range tests {
			n, err := vm.Run(segment(family, tc.dport, tc.flags))
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.accept {
				t.Errorf("%s, %s: accepted %v, want %v", name, tc.name, got, tc.accept)
			}
		}
	}
}

func disassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	return prog
}

// A reply is matched to its SYN by the backend's address and port and by its acknowledgment
// (our sequence number plus one); a SYN-ACK passes, a reset refuses, and anything else, or a
// packet too short for the header it claims, is not an answer.
func TestParseSYNReply(t *testing.T) {
	const base = 40000
	from := netip.AddrFrom4([4]byte{10, 0, 0, 7})
	reply := func(flags byte) []byte {
		b := make([]byte, 20+tcpHeaderLen)
		b[0], b[9] = 0x45, 6
		tcp := b[20:]
		binary.BigEndian.PutUint16(tcp[0:], 8080)
		binary.BigEndian.PutUint16(tcp[2:], base+3)
		binary.BigEndian.PutUint32(tcp[8:], 1000) // acknowledges ISN 999
		tcp[13] = flags
		return b
	}
	want := synKey{addr: netip.MustParseAddr("10.0.0.7"), port: 8080, isn: 999}
	if r, ok := parseSYNReply(0, reply(tcpSYN|tcpACK), from, base); !ok || r.key != want || r.reset {
		t.Errorf("SYN-ACK: %+v, %v; want %+v, not a reset", r, ok, want)
	}
	if r, ok := parseSYNReply(0, reply(tcpRST|tcpACK), from, base); !ok || r.key != want || !r.reset {
		t.Errorf("reset: %+v, %v; want %+v, a reset", r, ok, want)
	}
	if _, ok := parseSYNReply(0, reply(tcpACK), from, base); ok {
		t.Error("a bare ACK taken for an answer")
	}
	short := reply(tcpSYN | tcpACK)[:24]
	short[0] = 0x4f // a 60-byte header in 24 bytes
	if _, ok := parseSYNReply(0, short, from, base); ok {
		t.Error("a truncated packet taken for an answer")
	}
}

// Building a SYN, which the loop does at every try, allocates nothing: the checksum's buffer
// stays on the stack.
func TestWriteSYNAllocates(t *testing.T) {
	b := make([]byte, tcpHeaderLen)
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.7")
	if n := testing.AllocsPerRun(100, func() { writeSYN(b, 40000, 8080, 1, src, dst) }); n != 0 {
		t.Errorf("writeSYN made %v allocations", n)
	}
}
