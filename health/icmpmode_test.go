package health

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/icmp"
)

// TestICMPModeReal checks ICMPMode against the sockets this process can actually open.
func TestICMPModeReal(t *testing.T) {
	privileged, err := ICMPMode()
	dgram, dgramErr := icmp.ListenPacket("udp4", "0.0.0.0")
	if dgramErr == nil {
		dgram.Close()
	}
	raw, rawErr := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if rawErr == nil {
		raw.Close()
	}
	switch {
	case rawErr == nil:
		if err != nil || !privileged {
			t.Errorf("raw sockets open: privileged=%v err=%v, want privileged", privileged, err)
		}
	case dgramErr == nil:
		if err != nil || privileged {
			t.Errorf("only datagram sockets open: privileged=%v err=%v, want unprivileged", privileged, err)
		}
	default:
		if err == nil {
			t.Errorf("no ICMP socket opens (%v; %v) but ICMPMode reports privileged=%v", dgramErr, rawErr, privileged)
		}
	}
	t.Logf("privileged=%v err=%v (datagram: %v, raw: %v)", privileged, err, dgramErr, rawErr)
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
			c := icmpMode(dgram, raw, func() string { return "0 0" })
			priv, err := c.privileged, c.err
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
	err := icmpMode(denied, notPermitted, func() string { return "1 0" }).err
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

// TestICMPModeNotice checks the startup line of each ICMP mode: it names the socket and, without
// the capability, why and what let ping sockets in.
func TestICMPModeNotice(t *testing.T) {
	denied := errors.New("socket: operation not permitted")
	groups := func() string { return "65534 65534" }
	for _, tc := range []struct {
		name    string
		choice  icmpChoice
		batched bool
		want    []string
	}{
		{"raw, batched", icmpChoice{privileged: true}, true, []string{"raw sockets (CAP_NET_RAW)", "one per address family"}},
		{"raw, a socket per probe", icmpChoice{privileged: true}, false, []string{"raw sockets (CAP_NET_RAW)", "one per probe"}},
		{"ping sockets", icmpChoice{rawErr: denied}, true, []string{"unprivileged ping sockets", "operation not permitted",
			"needs CAP_NET_RAW", `net.ipv4.ping_group_range = "65534 65534"`}},
		{"neither", icmpMode(func() error { return denied }, func() error { return denied }, groups), true,
			[]string{"cannot probe", "CAP_NET_RAW", "ping_group_range"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := tc.choice.notice(tc.batched, groups)
			if !strings.HasPrefix(line, "icmp checks") {
				t.Errorf("%q does not start with the checks it is about", line)
			}
			for _, want := range tc.want {
				if !strings.Contains(line, want) {
					t.Errorf("%q does not say %q", line, want)
				}
			}
		})
	}
}
