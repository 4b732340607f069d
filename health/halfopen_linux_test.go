package health

import (
	"encoding/binary"
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
