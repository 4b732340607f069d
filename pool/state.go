package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/healthdns/healthdns/balance"
)

// State is where a pool keeps, across restarts of the server, what a restart would otherwise
// forget: the serving group nopreempt chose, the drains set through the status API, and the
// last known health of each backend (README, "State file"). Without etcd nothing else holds
// them: Keepalived's nopreempt survives a daemon restart because the master's adverts carry it.
type State struct {
	Path string // "" for none
	// MaxAge bounds how long the server may have been down for its state to be taken: past it
	// the backends, the fleet and the operator have had time to change what it describes.
	MaxAge time.Duration
}

// DefaultStateMaxAge is MaxAge when the Corefile does not say: a restart, an upgrade or a reboot
// takes minutes; an hour later a state describes a world an operator has had time to change.
const DefaultStateMaxAge = time.Hour

// stateVersion is the file's format; a file of another version is ignored.
const stateVersion = 1

// stateFileDoc is the file: each zone's state, by Owner (server and zone), since several pools
// (the zones of a block, or blocks naming the same file) may share one file.
type stateFileDoc struct {
	Version int                  `json:"version"`
	Zones   map[string]zoneState `json:"zones"`
}

// zoneState is one pool's saved state.
type zoneState struct {
	// Fingerprint is the pool's configuration that the state is about (stateFingerprint): a
	// state saved for other backends or priorities says nothing of these.
	Fingerprint string    `json:"fingerprint"`
	Saved       time.Time `json:"saved"`
	// Serving is each family's serving group ("ipv4", "ipv6"), once decided.
	Serving map[string]uint8      `json:"serving,omitempty"`
	Drains  []savedDrain          `json:"drains,omitempty"`
	Health  map[netip.Addr]string `json:"health,omitempty"` // "up" or "down", of backends with a verdict
}

// savedDrain is an operator's drain, as the status API set it.
type savedDrain struct {
	Backend netip.Addr `json:"backend"`
	Until   time.Time  `json:"until,omitzero"`
	Reason  string     `json:"reason,omitempty"`
	By      string     `json:"by"`
	Since   time.Time  `json:"since"`
}

// sameAs reports whether z and o say the same, whenever they were saved.
func (z zoneState) sameAs(o zoneState) bool {
	return z.Fingerprint == o.Fingerprint && maps.Equal(z.Serving, o.Serving) && maps.Equal(z.Health, o.Health) &&
		slices.Equal(z.Drains, o.Drains)
}

// stateFile is one state file of the process: what each pool last set, and its writer. Pools
// of the same path share it (stateFiles); during a reload the old pool and the new both run,
// and only the zone's newest pool writes (owners).
type stateFile struct {
	path string

	mu      sync.Mutex
	zones   map[string]zoneState // as read at the first open, then as set
	owners  map[string][]*Pool   // the pools of each zone, oldest first: the newest's state is saved
	pending bool                 // zones changed since the last write began
	writing bool                 // a writer goroutine runs
	failed  string               // the last write's error, logged once until a write succeeds
	written sync.WaitGroup       // the writer goroutine, for Stop to wait
}

// stateFiles are the process's state files, by path: pools of successive reloads find the same.
var stateFiles = struct {
	sync.Mutex
	byPath map[string]*stateFile
}{byPath: map[string]*stateFile{}}

// openStateFile returns the process's state file at path, reading it at the first open. A file
// that cannot be read or parsed is ignored, with a log line: the server starts as without one.
func openStateFile(path string) *stateFile {
	stateFiles.Lock()
	defer stateFiles.Unlock()
	if f, ok := stateFiles.byPath[path]; ok {
		return f
	}
	f := &stateFile{path: path, zones: map[string]zoneState{}, owners: map[string][]*Pool{}}
	stateFiles.byPath[path] = f
	doc, err := readStateFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Infof("state file %s: none yet; it is written at the first change", path)
	case err != nil:
		log.Warningf("state file %s: ignored, starting without it: %v", path, err)
	default:
		f.zones = doc.Zones
	}
	return f
}

// readStateFile reads and checks the file at path.
func readStateFile(path string) (stateFileDoc, error) {
	var doc stateFileDoc
	b, err := os.ReadFile(path)
	if err != nil {
		return doc, err
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return doc, fmt.Errorf("not a state file (corrupt or truncated?): %w", err)
	}
	if doc.Version != stateVersion {
		return doc, fmt.Errorf("format version %d, this server reads version %d", doc.Version, stateVersion)
	}
	if doc.Zones == nil {
		doc.Zones = map[string]zoneState{}
	}
	return doc, nil
}

// claim makes p the pool whose state is saved for its zone, and returns the zone's entry.
func (f *stateFile) claim(p *Pool) (zoneState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := Owner(p.cfg.Server, p.cfg.Zone)
	f.owners[key] = append(f.owners[key], p)
	z, ok := f.zones[key]
	return z, ok
}

// release lets go of p's claim: the zone's entry stays, for the next start, and the pool p
// replaced saves it again if p was a failed reload's.
func (f *stateFile) release(p *Pool) {
	f.mu.Lock()
	key := Owner(p.cfg.Server, p.cfg.Zone)
	f.owners[key] = slices.DeleteFunc(f.owners[key], func(q *Pool) bool { return q == p })
	if len(f.owners[key]) == 0 {
		delete(f.owners, key)
	}
	f.mu.Unlock()
	f.written.Wait() // what p set is on disk when the server stops
}

// set records p's state of its zone and has the writer write the file, unless a newer pool of
// the zone claimed it. It never waits for the disk: it runs in a rebuild, which probes wait on.
func (f *stateFile) set(p *Pool, z zoneState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := Owner(p.cfg.Server, p.cfg.Zone)
	if owners := f.owners[key]; len(owners) == 0 || owners[len(owners)-1] != p {
		return
	}
	f.zones[key] = z
	f.pending = true
	if !f.writing {
		f.writing = true
		f.written.Add(1)
		go f.writer()
	}
}

// writer writes the file until no change is pending: changes that come during a write are
// written together by the next one.
func (f *stateFile) writer() {
	defer f.written.Done()
	for {
		f.mu.Lock()
		if !f.pending {
			f.writing = false
			f.mu.Unlock()
			return
		}
		f.pending = false
		// A zone's entry is never changed, only replaced: a copy of the map is enough for the
		// marshalling to run without the mutex that rebuilds take.
		zones := maps.Clone(f.zones)
		f.mu.Unlock()
		b, err := json.MarshalIndent(stateFileDoc{Version: stateVersion, Zones: zones}, "", "  ")
		if err == nil {
			err = writeAtomically(f.path, append(b, '\n'))
		}
		f.mu.Lock()
		switch {
		case err != nil && err.Error() != f.failed:
			f.failed = err.Error()
			log.Errorf("state file %s: not saved: %v; a restart would not resume what this server serves", f.path, err)
		case err == nil && f.failed != "":
			f.failed = ""
			log.Infof("state file %s: saved again", f.path)
		}
		f.mu.Unlock()
	}
}

// writeAtomically replaces the file at path with b so that a crash at any moment leaves the old
// file or the new one whole: a temporary file beside it, synced, renamed over it, and the
// directory synced so that the rename itself survives a power cut. Its errors name the step,
// not the temporary file's random name, so that a failure that repeats reads the same.
func writeAtomically(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return stepError("creating a temporary file in "+dir, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing left to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return stepError("writing the temporary file", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return stepError("syncing the temporary file", err)
	}
	if err := tmp.Close(); err != nil {
		return stepError("closing the temporary file", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return stepError("renaming the temporary file over it", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return stepError("opening "+dir+" to sync it", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return stepError("syncing "+dir, err)
	}
	return nil
}

// stepError is err of a step of writeAtomically, without the paths the os package adds.
func stepError(step string, err error) error {
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	switch {
	case errors.As(err, &pathErr):
		err = pathErr.Err
	case errors.As(err, &linkErr):
		err = linkErr.Err
	}
	return fmt.Errorf("%s: %w", step, err)
}

// stateFingerprint is the part of the pool's configuration a state is about: its server and
// zone, its backends and their priority groups (or its source, whose list changes under it),
// and nopreempt. A restart with anything of these changed starts afresh, as a reload does.
func (p *Pool) stateFingerprint() string {
	h := fnv.New64a()
	for fam := range p.failover {
		fmt.Fprintln(h, p.failoverKey(fam))
	}
	fmt.Fprintf(h, "nopreempt %t\n", p.cfg.Preempt.Never)
	return fmt.Sprintf("%016x", h.Sum64())
}

// resumed is what a pool took from its state file at start.
type resumed struct {
	serving [2]uint8            // the group to resume per family under nopreempt, 0 for none
	health  map[netip.Addr]bool // last known health, for backends without a first verdict yet
	from    string              // the file and its age, for the log
}

// resumeLocked reads the pool's saved state, if it has a state file, and takes what a restart
// must not forget: the serving groups (unless a reload carried them over), the operator's drains
// (unless a reload carried them over: opsFresh says it did not) and the last known health. A
// state too old or of another configuration is ignored, with a log line. Callers hold mu, after
// the members and the operator drains are made.
func (p *Pool) resumeLocked(now time.Time, carried [2]bool, opsFresh bool) {
	if p.cfg.State.Path == "" {
		return
	}
	p.state = openStateFile(p.cfg.State.Path)
	p.fingerprint = p.stateFingerprint()
	z, ok := p.state.claim(p)
	if !ok {
		return
	}
	path := p.cfg.State.Path
	maxAge := p.cfg.State.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultStateMaxAge
	}
	switch age := now.Sub(z.Saved); {
	case z.Fingerprint != p.fingerprint:
		log.Warningf("zone %s: state file %s: ignored, starting afresh: it was saved for another configuration of the zone (its backends, priorities, source or nopreempt changed)", p.cfg.Zone, path)
		return
	case age > maxAge:
		log.Warningf("zone %s: state file %s: ignored, starting afresh: saved %s ago, more than its max age %s (the server was down too long for it to tell what serves now)",
			p.cfg.Zone, path, age.Round(time.Second), maxAge)
		return
	case age < -time.Minute:
		log.Warningf("zone %s: state file %s: ignored, starting afresh: saved at %s, in the future (has the clock moved?)", p.cfg.Zone, path, z.Saved.Format(time.RFC3339))
		return
	}
	r := resumed{health: map[netip.Addr]bool{}, from: fmt.Sprintf("state file %s, saved %s ago", path, now.Sub(z.Saved).Round(time.Second))}
	var took []string
	if p.cfg.Preempt.Never && !p.agreeing() { // with etcd, the fleet's key says what serves
		for fam := range p.failover {
			if g := z.Serving[familyName(fam)]; g != 0 && !carried[fam] && p.failover[fam].Groups().Len() > 1 {
				r.serving[fam] = g
				took = append(took, fmt.Sprintf("%s priority group %d (nopreempt)", familyName(fam), g))
			}
		}
	}
	if opsFresh && p.cfg.Source.Kind != SourceEtcd { // etcd holds a fleet's drains itself
		n := 0
		p.ops.mu.Lock()
		for _, d := range z.Drains {
			od := operatorDrain{Drain: Drain{On: true, Until: d.Until, Reason: d.Reason}, by: d.By, since: d.Since}
			if _, set := p.ops.byAddr[d.Backend]; set || !od.At(now) {
				continue
			}
			p.ops.byAddr[d.Backend] = od
			n++
			if p.memberLocked(d.Backend) != nil {
				log.Infof("zone %s: backend %s: still drained%s by %s via the status API (since %s, from the state file), probed but not answered%s",
					p.cfg.Zone, d.Backend, untilSuffix(d.Until), d.By, d.Since.Format(time.RFC3339), reasonSuffix(d.Reason))
			}
		}
		p.ops.mu.Unlock()
		if n > 0 {
			took = append(took, fmt.Sprintf("%d drain(s) of the status API", n))
		}
	}
	for addr, h := range z.Health {
		r.health[addr] = h == "up"
	}
	if len(r.health) > 0 {
		took = append(took, fmt.Sprintf("the last known health of %d backend(s), until their first verdicts", len(r.health)))
	}
	if len(took) == 0 {
		return
	}
	p.resume = r
	log.Infof("zone %s: resuming from %s: %s", p.cfg.Zone, r.from, strings.Join(took, ", "))
}

// resumeServingLocked makes the serving group the one the state file kept, at the failover's
// first decision under nopreempt, when that group has a healthy backend now: a restart must not
// move clients back to the primary any more than a reload does. A saved group with no healthy
// backend is not resumed: the failover's own choice stands, as it would have moved anyway.
// Callers hold mu.
func (p *Pool) resumeServingLocked(fam int, sw balance.Switch) balance.Switch {
	g := p.resume.serving[fam]
	if g == 0 {
		return sw
	}
	p.resume.serving[fam] = 0
	if adopted := p.failover[fam].Adopt(g, "resumed from the "+p.resume.from+" (nopreempt)"); adopted.Changed() {
		return balance.Switch{From: sw.From, To: adopted.To, Reason: adopted.Reason}
	}
	if serving, _ := p.failover[fam].Serving(); serving != g {
		log.Warningf("zone %s: %s: priority group %d, which the %s says served, has no healthy backend; serving group %s",
			p.cfg.Zone, familyName(fam), g, p.resume.from, groupName(serving))
	}
	return sw
}

// lastKnownUp reports whether the state file said member m was up, for a member without its
// first verdict: the first probe round may outlast startup's wait (a probe's timeout at most),
// and what was up a moment ago is a better answer than all_down's meanwhile.
func (p *Pool) lastKnownUp(m *member) bool {
	return p.resume.health[m.Addr] && !checked(m)
}

// saveStateLocked sets the pool's state in its file when it changed, or when it is due again so
// that its age says how long the server has been down. Callers hold mu, in a rebuild.
func (p *Pool) saveStateLocked(now time.Time) {
	if p.state == nil || !p.settled {
		return // nothing decided yet: the saved state stays what the last run left
	}
	z := zoneState{Fingerprint: p.fingerprint, Saved: now, Serving: map[string]uint8{}, Health: map[netip.Addr]string{}}
	for fam, fo := range p.failover {
		if g, ok := fo.Serving(); ok && p.decided[fam] {
			z.Serving[familyName(fam)] = g
		}
	}
	for _, m := range p.members {
		if !checked(m) {
			continue
		}
		h := "down"
		if up(m) {
			h = "up"
		}
		z.Health[m.Addr] = h
	}
	if p.ops != nil && p.cfg.Source.Kind != SourceEtcd {
		p.ops.mu.Lock()
		for addr, od := range p.ops.byAddr {
			if od.At(now) {
				z.Drains = append(z.Drains, savedDrain{Backend: addr, Until: od.Until.UTC(), Reason: od.Reason, By: od.by, Since: od.since.UTC()})
			}
		}
		p.ops.mu.Unlock()
		slices.SortFunc(z.Drains, func(a, b savedDrain) int { return a.Backend.Compare(b.Backend) })
	}
	if z.sameAs(p.saved) && now.Before(p.stateDue()) {
		return
	}
	p.saved = z
	p.state.set(p, z)
}

// stateDue is when the pool's state is saved again though nothing changed: a tenth of its max
// age after the last save, so that a state read after a crash is at most that much older than
// the moment the server stopped.
func (p *Pool) stateDue() time.Time {
	maxAge := p.cfg.State.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultStateMaxAge
	}
	return p.saved.Saved.Add(maxAge / 10)
}
