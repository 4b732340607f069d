package harness

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// AnswerAddrs returns the sorted A and AAAA addresses in a reply's answer section.
func AnswerAddrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

// Distinct counts the different strings in list.
func Distinct(list []string) int {
	seen := map[string]bool{}
	for _, x := range list {
		seen[x] = true
	}
	return len(seen)
}

// SameSet reports whether got, sorted, holds exactly the addresses of want, each once.
func SameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	w := append([]string(nil), want...)
	sort.Strings(w)
	for i := range got {
		if got[i] != w[i] {
			return false
		}
	}
	return true
}

// LastLine returns the last non-blank line of s.
func LastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// LinesMatching returns the lines of out that match every pattern.
func LinesMatching(out string, patterns ...*regexp.Regexp) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, p := range patterns {
			if !p.MatchString(line) {
				ok = false
				break
			}
		}
		if ok {
			lines = append(lines, line)
		}
	}
	return lines
}

// IPWord matches ip as a whole address: 127.0.0.10 does not match in 127.0.0.101, ::1 does not
// match in fe80::1:2.
func IPWord(ip string) *regexp.Regexp {
	if strings.Contains(ip, ":") {
		return regexp.MustCompile(`(^|[^0-9a-fA-F:])` + regexp.QuoteMeta(ip) + `($|[^0-9a-fA-F:])`)
	}
	return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `($|[^0-9.]|\.([^0-9]|$))`)
}

// Pool is a healthdns block for zone over backends; lines are added as they are.
func Pool(zone string, backends []string, lines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, " healthdns %s {\n", zone)
	for _, ip := range backends {
		fmt.Fprintf(&b, "  backend %s\n", ip)
	}
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	b.WriteString(" }\n")
	return b.String()
}

// TCPPool is a healthdns block with a TCP check on port; extra lines are added as they are.
func TCPPool(zone string, port int, interval, timeout string, backends []string, extra ...string) string {
	lines := []string{fmt.Sprintf("check tcp %d", port), "interval " + interval, "timeout " + timeout}
	return Pool(zone, backends, append(lines, extra...)...)
}
