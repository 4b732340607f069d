package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
)

func TestEchoSharedSocket(t *testing.T) {
	needRawICMP(t)
	w := NewEcho()
	l := engine.New[EchoState](w)
	l.Retain()
	const n = 500
	results := make(chan engine.Result, n)
	budget := engine.NewBudget()
	var tickets []engine.Ticket
	for i := range n {
		addr := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
		tickets = append(tickets, l.Schedule(engine.Target{
			Addr: addr, Interval: time.Hour, Timeout: 5 * time.Second, Budget: budget,
			Report: func(r engine.Result) { results <- r },
		}))
	}
	for range n {
		if r := <-results; r.Err != nil {
			t.Error(r.Err)
		}
	}
	for _, tk := range tickets {
		tk.Unschedule()
	}
	if len(w.flight) != 0 {
		t.Errorf("%d probes still in flight after every target was unscheduled", len(w.flight))
	}
	l.Release()
	if w.openConns()[0] != nil {
		t.Error("socket still open after the last release")
	}
}

func TestEchoWireFormat(t *testing.T) {
	request := echoRequest(0, 0x1234)
	b := request[:]
	binary.BigEndian.PutUint64(b[echoTokenAt:], 0x0123456789abcdef)
	setEchoSeq(0, b, 0xbeef)
	m, err := icmp.ParseMessage(1, b)
	if err != nil {
		t.Fatal(err)
	}
	echo, ok := m.Body.(*icmp.Echo)
	if m.Type != ipv4.ICMPTypeEcho || !ok || echo.ID != 0x1234 || echo.Seq != 0xbeef || string(echo.Data) != "healthdns\x01\x23\x45\x67\x89\xab\xcd\xef" {
		t.Fatalf("parsed %+v %+v", m, m.Body)
	}
	if rawsock.Checksum(b) != 0 {
		t.Errorf("checksum does not verify: %#x", rawsock.Checksum(b))
	}
	want, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x1234, Seq: 0xbeef, Data: b[8:]}}).Marshal(nil)
	if string(want) != string(b) {
		t.Errorf("request % x, x/net/icmp makes % x", b, want)
	}

	reply := append([]byte(nil), b...)
	reply[0] = byte(ipv4.ICMPTypeEchoReply)
	header := make([]byte, 20)
	header[0] = 0x45
	from := netip.AddrFrom4([4]byte{127, 0, 0, 9})
	key, ok := parseEchoReply(0, append(header, reply...), from, 0x1234)
	if !ok || key != (echoKey{netip.MustParseAddr("127.0.0.9"), 0xbeef, 0x0123456789abcdef}) {
		t.Errorf("reply with IP header: %v %v", key, ok)
	}
	if _, ok := parseEchoReply(0, reply[:echoTokenAt], from, 0x1234); ok {
		t.Error("took a reply without a token")
	}
	if _, ok := parseEchoReply(0, reply, from, 0x4321); ok {
		t.Error("took another identifier's reply")
	}
	if _, ok := parseEchoReply(0, b, from, 0x1234); ok {
		t.Error("took a request for a reply")
	}
	if _, ok := parseEchoReply(0, []byte{0x45, 0}, from, 0x1234); ok {
		t.Error("took a truncated packet")
	}
}
