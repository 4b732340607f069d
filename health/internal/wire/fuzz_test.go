package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ipPayload returns what follows an IPv4 header, read by x/net's parser rather than ours, and
// false for bytes that hold no valid header.
func ipPayload(b []byte) ([]byte, bool) {
	h, err := ipv4.ParseHeader(b)
	if err != nil || h.Len < ipv4.HeaderLen || h.Len > len(b) {
		return nil, false
	}
	return b[h.Len:], true
}

// FuzzEchoReply: a raw ICMP socket's bytes count as an answer only when they are an echo reply of
// the family, with our identifier and a payload as long as ours, and the answer is keyed by the
// sender, the reply's sequence number and the token its payload carries, as x/net's ICMP parser
// reads them.
func FuzzEchoReply(f *testing.F) {
	const id = 0x4844
	reply := func(family int, seq uint16) []byte {
		b := echoRequest(family, id)
		b[0] = byte(ipv4.ICMPTypeEchoReply)
		if family == 1 {
			b[0] = byte(ipv6.ICMPTypeEchoReply)
		}
		setEchoSeq(family, b[:], seq)
		return b[:]
	}
	v4header := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1}
	f.Add(0, append(v4header, reply(0, 7)...), []byte{127, 0, 0, 1}, uint16(id))
	f.Add(0, append(v4header, reply(0, 7)...), []byte{127, 0, 0, 1}, uint16(id+1))
	f.Add(0, reply(0, 1), []byte{10, 0, 0, 1}, uint16(id))
	f.Add(1, reply(1, 65535), []byte{0x20, 1, 0xd, 0xb8, 15: 1}, uint16(id))
	f.Add(1, reply(0, 3), []byte{}, uint16(id))
	f.Add(0, []byte{0x41, 0, 0, 0, 0, 0, 0x48, 0x44, 0, 1}, []byte{127, 0, 0, 1}, uint16(id))
	f.Fuzz(func(t *testing.T, family int, b, from []byte, ourID uint16) {
		family &= 1
		addr, _ := netip.AddrFromSlice(from)
		key, ok := parseEchoReply(family, b, addr, int(ourID))
		if !ok {
			return
		}
		msg, proto := b, 58
		if family == 0 {
			proto = 1
			if len(b) > 0 && b[0]>>4 == 4 {
				var valid bool
				if msg, valid = ipPayload(b); !valid {
					t.Fatalf("accepted % x, whose IPv4 header is not valid", b)
				}
			}
		}
		m, err := icmp.ParseMessage(proto, msg)
		if err != nil {
			t.Fatalf("accepted % x, which is no ICMP message: %v", b, err)
		}
		echo, isEcho := m.Body.(*icmp.Echo)
		if (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) || !isEcho {
			t.Fatalf("accepted % x, an ICMP %v", b, m.Type)
		}
		if len(echo.Data) < echoRequestLen-8 || key.token != binary.BigEndian.Uint64(echo.Data[echoTokenAt-8:]) {
			t.Fatalf("accepted % x as %+v: payload % x", b, key, echo.Data)
		}
		if echo.ID != int(ourID) || int(key.seq) != echo.Seq || key.addr != addr.Unmap() {
			t.Fatalf("accepted % x from %s as %+v: id %d seq %d, ours %d", b, addr, key, echo.ID, echo.Seq, ourID)
		}
	})
}

// FuzzHTTPCheck serves any bytes as the answer to an HTTP check, on loopback, and checks the
// verdict against the status line read here: the check passes only for a status line whose code
// is expected and, when a text is wanted, a body that holds it; a failure names the check. It
// never waits past its deadline.
func FuzzHTTPCheck(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	checks := []HTTPSpec{
		{Port: port, Path: "/health"},
		{Port: port, Path: "/health", Expect: StatusCodes{{204, 204}, {300, 302}}, Body: "ok"},
		{Port: port, Path: "/health", Body: "ok", BodyExact: true},
	}
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 204 No Content\r\n\r\n",
		"HTTP/1.1 301\r\nLocation: /\r\nContent-Length: 6\r\n\r\nnot ok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\n\r\nok",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok",
		"SSH-2.0-OpenSSH_9.6\r\n",
		"HTTP/1.1 200 OK\n\n ok \n",
	} {
		for i := range checks {
			f.Add(byte(i), []byte(answer))
		}
	}
	f.Fuzz(func(t *testing.T, which byte, answer []byte) {
		spec := checks[int(which)%len(checks)]
		served := make(chan error, 1)
		go func() { served <- serveOnce(ln, answer) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err := HTTP(spec)(ctx, netip.MustParseAddr("127.0.0.1"))
		if serr := <-served; serr != nil {
			t.Fatal(serr)
		}
		if err != nil {
			if name := spec.Name() + ": "; !strings.HasPrefix(err.Error(), name) {
				t.Fatalf("%q: error %q does not name the check %s", answer, err, spec.Name())
			}
			if took := time.Since(start); errors.Is(err, context.DeadlineExceeded) && took > time.Minute {
				t.Fatalf("%q: failed after %s", answer, took)
			}
			return
		}
		resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(string(answer))), nil)
		line, _, _ := strings.Cut(string(answer), "\n")
		proto, status, _ := strings.Cut(strings.TrimSuffix(line, "\r"), " ")
		status = strings.TrimLeft(status, " ") // as net/http reads a status line: "HTTP/1.1  200"
		code, cerr := strconv.Atoi(strings.SplitN(status, " ", 2)[0])
		want := spec.Expect
		if len(want) == 0 {
			want = StatusCodes{{200, 399}}
		}
		if rerr != nil || !strings.HasPrefix(proto, "HTTP/") || cerr != nil || !want.Has(code) {
			t.Fatalf("%s passed on %q (status line %q)", spec.Name(), answer, line)
		}
		if spec.Body == "" {
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBodyRead))
		if !strings.Contains(string(body), spec.Body) || (spec.BodyExact && strings.TrimSpace(string(body)) != spec.Body) {
			t.Fatalf("%s (body %q, exact %v) passed on %q", spec.Name(), spec.Body, spec.BodyExact, answer)
		}
	})
}

// serveOnce accepts one connection, reads the request's head, answers with answer and closes.
func serveOnce(ln net.Listener, answer []byte) error {
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil // the check gave up first: its verdict is checked, not this side's
		}
		if line == "\r\n" {
			break
		}
	}
	c.Write(answer)
	return nil
}
