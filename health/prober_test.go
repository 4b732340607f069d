package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func probeWithin(p Prober, addr netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Probe(ctx, addr)
}

// acceptAndClose plays a TCP backend until ln is closed.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func TestNewProber(t *testing.T) {
	tests := []struct {
		check      Check
		privileged bool
		want       Prober // zero value of the wanted type
		err        string
	}{
		{check: Check{Kind: TCP, Port: 53}, want: &TCPProber{}},
		{check: Check{Kind: TCP}, err: "tcp check needs a port"},
		{check: Check{Kind: ICMP}, want: ICMPProber{}},
		{check: Check{Kind: ICMP}, privileged: true, want: &RawICMPProber{}},
		{check: Check{Kind: 9}, err: "unknown check check(9)"},
	}
	for _, tc := range tests {
		p, err := NewProber(tc.check, tc.privileged)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v: error %v, want %q", tc.check, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.check, err)
			continue
		}
		if got, want := typeName(p), typeName(tc.want); got != want {
			t.Errorf("%v privileged=%v: %s, want %s", tc.check, tc.privileged, got, want)
		}
		if tp, ok := p.(*TCPProber); ok && tp.Port != tc.check.Port {
			t.Errorf("%v: port %d", tc.check, tp.Port)
		}
	}
}

func typeName(p Prober) string {
	switch p.(type) {
	case *TCPProber:
		return "*TCPProber"
	case ICMPProber:
		return "ICMPProber"
	case *RawICMPProber:
		return "*RawICMPProber"
	}
	return "other"
}

// TestICMPModeError injects the two socket openers, so each outcome is tested without changing
// the process's privileges.
func TestICMPModeError(t *testing.T) {
	denied := func() error { return errors.New("socket: permission denied") }
	notPermitted := func() error { return errors.New("socket: operation not permitted") }
	ok := func() error { return nil }
	if priv, err := icmpMode(ok, denied, func() string { return "0 0" }); priv || err != nil {
		t.Errorf("unprivileged works: privileged=%v err=%v", priv, err)
	}
	if priv, err := icmpMode(ok, ok, func() string { return "0 0" }); priv || err != nil {
		t.Errorf("both work: privileged=%v err=%v, want unprivileged", priv, err)
	}
	if priv, err := icmpMode(denied, ok, func() string { return "1 0" }); !priv || err != nil {
		t.Errorf("only raw works: privileged=%v err=%v", priv, err)
	}
	_, err := icmpMode(denied, notPermitted, func() string { return "1 0" })
	if err == nil {
		t.Fatal("no error when neither socket opens")
	}
	for _, want := range []string{
		"permission denied", "operation not permitted", // both causes
		`ping_group_range = "1 0"`, `sysctl -w net.ipv4.ping_group_range="0 2147483647"`, // fix one
		"CAP_NET_RAW", "setcap cap_net_raw=+ep", // fix two
		"check tcp PORT", // or do without
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if !strings.HasPrefix(err.Error(), "icmp: ") {
		t.Errorf("error %q does not start with icmp:", err)
	}
}

func BenchmarkProbe(b *testing.B) {
	_, port := listenTCP(b)
	b.Run("tcp", func(b *testing.B) {
		p := &TCPProber{Port: port}
		b.ReportAllocs()
		for b.Loop() {
			if err := probeWithin(p, loopback4, time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	privileged, err := ICMPMode()
	if err != nil {
		b.Skip(err)
	}
	bench := func(p Prober) func(b *testing.B) {
		return func(b *testing.B) {
			if r, ok := p.(retainer); ok {
				r.retain()
				defer r.release()
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := probeWithin(p, loopback4, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	icmp, _ := NewProber(Check{Kind: ICMP}, privileged)
	b.Run("icmp", bench(icmp)) // what NewProber picks for this process
	if privileged {            // NewProber picked the shared raw socket: measure pro-bing's too
		b.Run("icmp-pro-bing", bench(ICMPProber{Privileged: true}))
	}
}
