package rawsock

import (
	"net/netip"
	"testing"
)

// A destination as built for sendmmsg, read back as recvmmsg fills in a source, must be the
// same address, with an IPv6 zone named as the target's was.
func TestRawAddrRoundTrip(t *testing.T) {
	in := NewInbox()
	for _, s := range []string{"127.0.0.9", "::1", "2001:db8::7", "fe80::1%lo", "fe80::2%1"} {
		addr := netip.MustParseAddr(s)
		to := NewAddr(addr)
		copy(in.names[0][:], to.sa[:to.len])
		in.hdrs[0].hdr.Namelen = to.len
		in.hdrs[0].len = 3
		b, from := in.Packet(0)
		want := addr
		if addr.Zone() == "1" {
			want = addr.WithZone("lo") // index 1 is loopback, which the kernel names
		}
		if from != want || len(b) != 3 {
			t.Errorf("%s: read back %s (%d bytes)", s, from, len(b))
		}
	}
	in.hdrs[0].hdr.Namelen = 0
	if _, from := in.Packet(0); from.IsValid() {
		t.Errorf("no source read back as %s", from)
	}
}
