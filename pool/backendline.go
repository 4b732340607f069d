package pool

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/healthdns/healthdns/balance"
)

const BackendForm = "'backend ADDRESS [weight W] [priority P] [drain [until TIME] [REASON...]]'"

// ParseBackendWords reads the words after 'backend' of a Corefile line, a whole backends_file
// line, or an etcd key's address followed by its value's words: one syntax for all three.
func ParseBackendWords(args []string) (Backend, error) {
	if len(args) == 0 {
		return Backend{}, fmt.Errorf("want %s", BackendForm)
	}
	addr, err := ParseAddr(args[0])
	if err != nil {
		return Backend{}, err
	}
	b := Backend{Addr: addr, Weight: 1, Priority: balance.DefaultPriority}
	seen := map[string]bool{}
	for rest := args[1:]; len(rest) > 0; rest = rest[2:] {
		opt := rest[0]
		if opt == "drain" {
			b.Drain, err = parseDrain(addr, rest[1:])
			return b, err
		}
		if opt != "weight" && opt != "priority" {
			return b, fmt.Errorf("unknown backend option %s; want %s", word(opt), BackendForm)
		}
		if len(rest) < 2 {
			return b, fmt.Errorf("%s wants a value; want %s", word(opt), BackendForm)
		}
		if seen[opt] {
			return b, fmt.Errorf("%s given twice for backend %s", word(opt), addr)
		}
		seen[opt] = true
		if opt == "weight" {
			w, err := parseIntWord("weight", rest[1], 1, MaxWeight)
			if err != nil {
				return b, err
			}
			b.Weight = uint32(w)
			continue
		}
		p, err := parseIntWord("priority", rest[1], 1, 255)
		if err != nil {
			return b, err
		}
		b.Priority = uint8(p)
	}
	return b, nil
}

// parseDrain reads what follows a backend's 'drain': '[until TIME] [REASON...]'. The reason is
// free text, so drain comes last; a reason that opens with another option is that option
// misplaced, not a reason.
func parseDrain(addr netip.Addr, args []string) (Drain, error) {
	d := Drain{On: true}
	if len(args) > 0 && args[0] == "until" {
		if len(args) < 2 {
			return d, fmt.Errorf("backend %s: 'drain until' wants a time, such as 'drain until 2026-12-24T18:00:00Z'", addr)
		}
		t, err := time.Parse(time.RFC3339, args[1])
		if err != nil {
			return d, fmt.Errorf("backend %s: invalid drain time %s: want an RFC 3339 time such as 2026-12-24T18:00:00Z", addr, word(args[1]))
		}
		d.Until = t
		args = args[2:]
	}
	if len(args) > 0 {
		switch args[0] {
		case "weight", "priority", "drain", "until":
			return d, fmt.Errorf("backend %s: %s after drain: drain comes last, since the rest of the line is its reason; want %s", addr, word(args[0]), BackendForm)
		}
	}
	d.Reason = strings.Join(args, " ")
	if err := CheckReason(d.Reason); err != nil {
		return d, fmt.Errorf("backend %s: %v", addr, err)
	}
	return d, nil
}

// MaxDrainReason bounds a drain's reason, which goes into every log line about the drain.
const MaxDrainReason = 256

// CheckReason says whether a drain's reason may be kept: the one rule for a reason from a
// backend line (Corefile, backends file, etcd value), an etcd drain key and the status API,
// since each goes into the log as it is. A terminal's escape sequence, a line break or a
// bidirectional override would forge or hide log lines, and an unbounded reason makes an
// unbounded line. The error does not quote the reason, for the same cause.
func CheckReason(reason string) error { return checkLogText("drain reason", reason) }

// checkLogText applies CheckReason's rule to what, a free text that the log will show.
func checkLogText(what, s string) error {
	const want = "want at most %d bytes of printable UTF-8 on one line"
	if len(s) > MaxDrainReason {
		return fmt.Errorf("%s of %d bytes: "+want, what, len(s), MaxDrainReason)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8: "+want, what, MaxDrainReason)
	}
	if i := strings.IndexFunc(s, unprintable); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("%s holds %U at byte %d: "+want, what, r, i, MaxDrainReason)
	}
	return nil
}

// unprintable: control characters (escape, newline, ...), line and paragraph separators, and
// the marks that reorder text as it is displayed.
func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Bidi_Control)
}

// ParseAddr reads a backend's address as a backend line gives it: an IPv4 or IPv6 literal of a
// host, unmapped, without a zone.
func ParseAddr(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return addr, fmt.Errorf("invalid address %s: want an IPv4 or IPv6 literal", word(s))
	}
	if addr.Zone() != "" {
		return addr, fmt.Errorf("invalid address %s: a scoped (zone) address cannot be served in DNS", word(s))
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
	return addr, fmt.Errorf("invalid address %s: %s, not the address of a host", word(s), not)
}

func parseIntWord(name, s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid %s %s: want an integer from %d to %d", name, word(s), lo, hi)
	}
	return n, nil
}

// maxWordShown bounds a word of a backend line quoted in an error: a line comes from a file or
// an etcd value that anyone who can write them fills, and every error reaches the log.
const maxWordShown = 256

// word quotes a word of a backend line for an error, between single quotes as errors always
// did when it is short printable text; else as shown says.
func word(s string) string {
	if plain(s) && !strings.Contains(s, "'") {
		return "'" + s + "'"
	}
	return shown(s)
}

// shown is s for a log line: as it is when short printable text; else Go-quoted (an escape is
// shown, not sent to the terminal) and cut to maxWordShown bytes, with its length.
func shown(s string) string {
	switch {
	case plain(s):
		return s
	case len(s) <= maxWordShown:
		return strconv.QuoteToASCII(s)
	}
	cut := s[:maxWordShown]
	for !utf8.ValidString(cut) && len(cut) > maxWordShown-utf8.UTFMax {
		cut = cut[:len(cut)-1]
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.QuoteToASCII(cut), len(s))
}

func plain(s string) bool {
	return len(s) <= maxWordShown && utf8.ValidString(s) && !strings.ContainsFunc(s, unprintable)
}
