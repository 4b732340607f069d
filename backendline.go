package healthdns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/balance"
)

const backendForm = "'backend ADDRESS [weight W] [priority P] [drain [until TIME] [REASON...]]'"

// parseBackendWords reads the words after 'backend' of a Corefile line, a whole backends_file
// line, or an etcd key's address followed by its value's words: one syntax for all three.
func parseBackendWords(args []string) (backend, error) {
	if len(args) == 0 {
		return backend{}, fmt.Errorf("want %s", backendForm)
	}
	addr, err := parseAddrWord(args[0])
	if err != nil {
		return backend{}, err
	}
	b := backend{addr: addr, weight: 1, priority: balance.DefaultPriority}
	seen := map[string]bool{}
	for rest := args[1:]; len(rest) > 0; rest = rest[2:] {
		opt := rest[0]
		if opt == "drain" {
			b.drain, err = parseDrain(addr, rest[1:])
			return b, err
		}
		if opt != "weight" && opt != "priority" {
			return b, fmt.Errorf("unknown backend option '%s'; want %s", opt, backendForm)
		}
		if len(rest) < 2 {
			return b, fmt.Errorf("'%s' wants a value; want %s", opt, backendForm)
		}
		if seen[opt] {
			return b, fmt.Errorf("'%s' given twice for backend %s", opt, addr)
		}
		seen[opt] = true
		if opt == "weight" {
			w, err := parseIntWord("weight", rest[1], 1, maxWeight)
			if err != nil {
				return b, err
			}
			b.weight = uint32(w)
			continue
		}
		p, err := parseIntWord("priority", rest[1], 1, 255)
		if err != nil {
			return b, err
		}
		b.priority = uint8(p)
	}
	return b, nil
}

// parseDrain reads what follows a backend's 'drain': '[until TIME] [REASON...]'. The reason is
// free text, so drain comes last; a reason that opens with another option is that option
// misplaced, not a reason.
func parseDrain(addr netip.Addr, args []string) (drain, error) {
	d := drain{on: true}
	if len(args) > 0 && args[0] == "until" {
		if len(args) < 2 {
			return d, fmt.Errorf("backend %s: 'drain until' wants a time, such as 'drain until 2026-12-24T18:00:00Z'", addr)
		}
		t, err := time.Parse(time.RFC3339, args[1])
		if err != nil {
			return d, fmt.Errorf("backend %s: invalid drain time '%s': want an RFC 3339 time such as 2026-12-24T18:00:00Z", addr, args[1])
		}
		d.until = t
		args = args[2:]
	}
	if len(args) > 0 {
		switch args[0] {
		case "weight", "priority", "drain", "until":
			return d, fmt.Errorf("backend %s: '%s' after drain: drain comes last, since the rest of the line is its reason; want %s", addr, args[0], backendForm)
		}
	}
	d.reason = strings.Join(args, " ")
	return d, nil
}

func parseAddrWord(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return addr, fmt.Errorf("invalid address '%s': want an IPv4 or IPv6 literal", s)
	}
	if addr.Zone() != "" {
		return addr, fmt.Errorf("invalid address '%s': a scoped (zone) address cannot be served in DNS", s)
	}
	// Unmapped first: ::ffff:0.0.0.0 is as unspecified as 0.0.0.0, and is served as it.
	addr = addr.Unmap()
	var not string
	switch {
	case addr.IsUnspecified():
		not = "unspecified"
	case addr.IsMulticast():
		not = "multicast"
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// The limited broadcast (RFC 919); a network's own broadcast needs its prefix to be known.
		not = "broadcast"
	default:
		return addr, nil
	}
	return addr, fmt.Errorf("invalid address '%s': %s, not the address of a host", s, not)
}

func parseIntWord(name, s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid %s '%s': want an integer from %d to %d", name, s, lo, hi)
	}
	return n, nil
}
