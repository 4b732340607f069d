package pool

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// SetupReadTimeout bounds the read of a backends file at setup, which a reload and the shutdown
// wait for: a local file is read in microseconds, a network mount that takes this long is hung.
const SetupReadTimeout = 10 * time.Second

// ReadFile reads and parses the backends file at setup into s.Initial, against the pool's
// Corefile backends. A path that is not a regular file, or a file over source.MaxFileSize, is
// refused unread; a read that takes longer than SetupReadTimeout is given up. The contents are
// kept: the watch started with the pool holds them, so a writer that truncates the file between
// this read and the watch's first one is not taken for an emptied list.
func (s *Source) ReadFile(static []Backend) error {
	data, err := source.ReadFileWithin(s.Path, SetupReadTimeout)
	if err != nil {
		return err
	}
	if s.Initial, err = parseBackendsFileData(s.Path, data, static); err != nil {
		return err
	}
	s.initialData = data
	return nil
}

// parseBackendsFileData parses a backends file: one backend a line, the words of a Corefile
// backend line after 'backend', with '#' comments and blank lines. Errors name the file and line.
func parseBackendsFileData(path string, data []byte, static []Backend) ([]Backend, error) {
	var list []Backend
	seen := map[netip.Addr]string{}
	for _, b := range static {
		seen[b.Addr] = "the Corefile"
	}
	for i, line := range strings.Split(string(data), "\n") {
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, i+1)
		b, err := ParseBackendWords(words)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		if prev, dup := seen[b.Addr]; dup {
			return nil, fmt.Errorf("%s: backend %s listed twice (first in %s)", where, b.Addr, prev)
		}
		seen[b.Addr] = fmt.Sprintf("line %d", i+1)
		list = append(list, b)
	}
	if n := len(static) + len(list); n > balance.MaxSetSize {
		return nil, fmt.Errorf("%s: %d backends with the Corefile's; at most %d fit in one zone", path, n, balance.MaxSetSize)
	}
	return list, nil
}

// parseEtcdBackends parses the backends of an etcd prefix: a key per backend, its address
// under the prefix, its value the rest of a backend line. Each key is a backend of its own,
// written on its own: a key that does not parse, or names a backend listed already, is
// skipped (and returned, by its full key, with its error) and the others make the list. Only
// a list too long for a zone fails as a whole.
func parseEtcdBackends(prefix string, kvs map[string]string, static []Backend) ([]Backend, []skippedKey, error) {
	keys := slices.Sorted(maps.Keys(kvs))
	seen := map[netip.Addr]string{}
	for _, b := range static {
		seen[b.Addr] = "the Corefile"
	}
	var list []Backend
	var skipped []skippedKey
	for _, k := range keys {
		b, err := ParseBackendWords(append([]string{k}, strings.Fields(kvs[k])...))
		if err == nil {
			if prev, dup := seen[b.Addr]; dup {
				err = fmt.Errorf("backend %s listed twice (also %s)", b.Addr, prev)
			}
		}
		if err != nil {
			skipped = append(skipped, skippedKey{key: prefix + k, err: err.Error()})
			continue
		}
		seen[b.Addr] = "key " + prefix + k
		list = append(list, b)
	}
	if n := len(static) + len(list); n > balance.MaxSetSize {
		return nil, nil, fmt.Errorf("etcd prefix %s: %d backends with the Corefile's; at most %d fit in one zone", prefix, n, balance.MaxSetSize)
	}
	return list, skipped, nil
}

// oversizedKeys are the keys whose value source did not keep, skipped as a key that does not
// parse is.
func oversizedKeys(prefix string, sizes map[string]int) []skippedKey {
	var skipped []skippedKey
	for _, k := range slices.Sorted(maps.Keys(sizes)) {
		skipped = append(skipped, skippedKey{key: prefix + k, err: oversized(sizes[k])})
	}
	return skipped
}

func oversized(size int) string {
	return fmt.Sprintf("value of %d bytes, over the %d bytes a value may hold", size, source.MaxValueSize)
}

// skippedKey is an etcd key left out of the list, and why.
type skippedKey struct {
	key, err string
}

// skipped records the keys the last list from etcd left out: each newly skipped key (or one
// skipped for a new reason) is logged and counted once, and each that no longer is, logged.
//
//	zone app.lan.: backends_etcd: etcd key /healthdns/app.lan/web3: invalid address 'web3': want an IPv4 or IPv6 literal; skipped, the prefix's other keys apply
func (p *Pool) skipped(keys []skippedKey) {
	now := time.Now()
	p.mu.Lock()
	was := p.src.skipped
	p.src.skipped = make(map[string]string, len(keys))
	var fresh []skippedKey
	for _, k := range keys {
		p.src.skipped[k.key] = k.err
		if was[k.key] != k.err {
			fresh = append(fresh, k)
			p.src.lastError, p.src.lastErrorAt = "etcd key "+k.key+": "+k.err, now
			p.src.errors++
		}
	}
	var cleared []string
	for key := range was {
		if _, still := p.src.skipped[key]; !still {
			cleared = append(cleared, key)
		}
	}
	p.mu.Unlock()
	labels := []string{p.cfg.Server, p.cfg.Zone, p.cfg.Source.Label()}
	p.metrics.SourceSkippedKeys.WithLabelValues(labels...).Set(float64(len(keys)))
	for _, k := range fresh {
		p.metrics.SourceErrorsTotal.WithLabelValues(labels...).Inc()
		log.Errorf("zone %s: %s: etcd key %s: %s; skipped, the prefix's other keys apply", p.cfg.Zone, p.cfg.Source.Directive(), shown(k.key), k.err)
	}
	slices.Sort(cleared)
	for _, key := range cleared {
		log.Infof("zone %s: %s: etcd key %s no longer skipped (deleted or fixed)", p.cfg.Zone, p.cfg.Source.Directive(), shown(key))
	}
}

// setSourceList makes list the source's part of the pool's backends. A backend that stays keeps
// its member (its health state and its probe loops) and takes its new weight, priority and
// drain; a new one is probed and not answered before its first verdict; a removed one stops
// being answered now, its loops stop unless another pool probes it too, and its series go.
// Before start it only records the list, which start then uses.
func (p *Pool) setSourceList(list []Backend) {
	p.listMu.Lock()
	defer p.listMu.Unlock()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	first := p.awaiting
	p.fromSrc, p.awaiting = list, false
	if p.timer == nil { // not started
		p.mu.Unlock()
		return
	}
	now := time.Now()
	want := slices.Concat(p.cfg.Backends, list)
	have := make(map[netip.Addr]*member, len(p.members))
	for _, m := range p.members {
		have[m.Addr] = m
	}
	next := make([]*member, 0, len(want))
	var added []*member
	var addedAddrs, changedAddrs, removedAddrs []string
	for _, b := range want {
		m, ok := have[b.Addr]
		if !ok {
			m = p.acquireLocked(b)
			p.startDrainLocked(m, now)
			added = append(added, m)
			addedAddrs = append(addedAddrs, b.Addr.String())
			next = append(next, m)
			continue
		}
		delete(have, b.Addr)
		next = append(next, m)
		if sameBackend(m.Backend, b) {
			continue
		}
		changedAddrs = append(changedAddrs, b.Addr.String())
		drainChanged := !sameDrain(m.Drain, b.Drain)
		m.Backend = b
		switch {
		case drainChanged && b.Drain.On:
			p.startDrainLocked(m, now)
		case drainChanged && m.Drained:
			m.Drained = false
			log.Infof("zone %s: backend %s: undrained by the %s; answered again while healthy", p.cfg.Zone, m.Addr, p.cfg.Source)
		}
	}
	var removed []*member
	for _, m := range p.members {
		if _, gone := have[m.Addr]; gone {
			removed = append(removed, m)
			removedAddrs = append(removedAddrs, m.Addr.String())
		}
	}
	p.members = next
	p.setGroupsLocked(want)
	p.heardLocked() // after the members: startup waits for the first verdicts of these
	p.mu.Unlock()

	if !first {
		p.listEvents(addedAddrs, removedAddrs)
	}
	p.release(removed)
	p.subscribe(added)
	if first || len(addedAddrs)+len(changedAddrs)+len(removedAddrs) > 0 {
		changes := []string{fmt.Sprintf("the %s lists %d", p.cfg.Source, len(list))}
		for _, c := range []struct {
			what  string
			addrs []string
		}{{"added", addedAddrs}, {"removed", removedAddrs}, {"changed", changedAddrs}} {
			if len(c.addrs) > 0 {
				changes = append(changes, c.what+" "+listed(c.addrs))
			}
		}
		log.Infof("zone %s: backends: %s; %d in all", p.cfg.Zone, strings.Join(changes, ", "), len(next))
	}
	p.rebuild()
}

// listed says how many addresses, and which when few, for a log line: "2 (10.0.0.7, 10.0.0.9)".
func listed(addrs []string) string {
	const shown = 5
	switch {
	case len(addrs) == 0:
		return "0"
	case len(addrs) <= shown:
		return fmt.Sprintf("%d (%s)", len(addrs), strings.Join(addrs, ", "))
	}
	return fmt.Sprintf("%d (%s, ...)", len(addrs), strings.Join(addrs[:shown], ", "))
}

func sameBackend(a, b Backend) bool {
	return a.Addr == b.Addr && a.Weight == b.Weight && a.Priority == b.Priority && sameDrain(a.Drain, b.Drain)
}

func sameDrain(a, b Drain) bool {
	return a.On == b.On && a.Until.Equal(b.Until) && a.Reason == b.Reason
}
