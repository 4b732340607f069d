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

// TestICMPModeChoice injects the two socket openers, so each outcome is tested without changing
// the process's privileges. With CAP_NET_RAW the shared raw socket wins even where datagram ping
// sockets are open too: they cost a socket per probe (22% of a core against 12% at 250 backends
// every 250ms), so the datagram opener is not even tried.
func TestICMPModeChoice(t *testing.T) {
	denied := errors.New("socket: permission denied")
	for _, tc := range []struct {
		name           string
		dgram, raw     error
		wantPrivileged bool
		wantTried      string
	}{
		{"both open", nil, nil, true, "raw"},
		{"only raw", denied, nil, true, "raw"},
		{"only datagram", nil, denied, false, "raw,dgram"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tried []string
			dgram := func() error { tried = append(tried, "dgram"); return tc.dgram }
			raw := func() error { tried = append(tried, "raw"); return tc.raw }
			priv, err := icmpMode(dgram, raw, func() string { return "0 0" })
			if err != nil || priv != tc.wantPrivileged {
				t.Errorf("privileged=%v err=%v, want privileged=%v", priv, err, tc.wantPrivileged)
			}
			if got := strings.Join(tried, ","); got != tc.wantTried {
				t.Errorf("tried %s, want %s", got, tc.wantTried)
			}
		})
	}
}

// TestICMPModeError checks that when neither socket opens the error names both causes and both
// fixes.
func TestICMPModeError(t *testing.T) {
	denied := func() error { return errors.New("socket: permission denied") }
	notPermitted := func() error { return errors.New("socket: operation not permitted") }
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
