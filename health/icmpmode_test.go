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
	case dgramErr == nil:
		if err != nil || privileged {
			t.Errorf("datagram sockets open: privileged=%v err=%v, want unprivileged", privileged, err)
		}
	case rawErr == nil:
		if err != nil || !privileged {
			t.Errorf("only raw sockets open: privileged=%v err=%v, want privileged", privileged, err)
		}
	default:
		if err == nil {
			t.Errorf("no ICMP socket opens (%v; %v) but ICMPMode reports privileged=%v", dgramErr, rawErr, privileged)
		}
	}
	t.Logf("privileged=%v err=%v (datagram: %v, raw: %v)", privileged, err, dgramErr, rawErr)
}

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
