package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/healthdns/healthdns/source"
)

// A pool whose list is in etcd keeps its operator drains there too, so that a drain through
// one server's status API reaches every server of the fleet, as the list itself does, and
// outlives reloads and restarts. Each is a key under the prefix, PREFIX_drain/ADDRESS, whose
// value is a fleetDrainValue; an undrain deletes it. Every server reads them with the list
// (source.List.State) and applies them as the operator drains of its zone. Anything that writes
// the key (etcdctl, a console) drains the backend the same way.
const drainKeyPrefix = "_drain/"

// fleetDrainValue is the JSON value of a drain key.
type fleetDrainValue struct {
	Reason string     `json:"reason,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	By     string     `json:"by"` // who asked: the API caller's address
	At     time.Time  `json:"at"` // when
}

// fleetWriteTimeout bounds a drain's write to etcd, and the wait for its list to apply here.
const fleetWriteTimeout = 5 * time.Second

func drainKey(addr netip.Addr) string { return drainKeyPrefix + addr.String() }

// parseFleetDrains reads the drain keys of a list's state: the drains by address, ended ones
// too, and the keys that do not parse (skipped, as a backend key that does not parse is).
func parseFleetDrains(prefix string, state map[string]source.KeyValue) (map[netip.Addr]operatorDrain, []skippedKey) {
	drains := map[netip.Addr]operatorDrain{}
	var skipped []skippedKey
	for key, kv := range state {
		name, ok := strings.CutPrefix(key, drainKeyPrefix)
		if !ok {
			continue
		}
		addr, err := ParseAddr(name)
		var v fleetDrainValue
		if err == nil && kv.Size > 0 {
			err = errors.New(oversized(kv.Size))
		} else if err == nil {
			if err = json.Unmarshal([]byte(kv.Value), &v); err != nil {
				err = fmt.Errorf("want a JSON object {\"reason\", \"until\", \"by\", \"at\"}: %v", err)
			} else if err = CheckReason(v.Reason); err == nil {
				err = checkLogText("drain caller", v.By)
			}
		}
		if err != nil {
			skipped = append(skipped, skippedKey{key: prefix + key, err: err.Error()})
			continue
		}
		d := operatorDrain{Drain: Drain{On: true, Reason: v.Reason}, by: v.By, since: v.At, key: prefix + key, rev: kv.ModRevision}
		if v.Until != nil {
			d.Until = *v.Until
		}
		drains[addr] = d
	}
	return drains, skipped
}

// fleetDrains makes the drains of a list from etcd the zone's operator drains, logging each
// that starts, changes or is lifted; it returns the drain keys that do not parse.
func (p *Pool) fleetDrains(state map[string]source.KeyValue) []skippedKey {
	now := time.Now()
	drains, skipped := parseFleetDrains(p.cfg.Source.Etcd.Prefix, state)
	p.mu.Lock()
	ops := p.ops
	for addr, d := range drains {
		if !d.At(now) {
			delete(drains, addr)
			p.deleteEndedDrainLocked(addr, d)
		}
	}
	p.mu.Unlock()
	if ops == nil {
		return skipped // stopped
	}
	ops.mu.Lock()
	was := ops.byAddr
	ops.byAddr = drains
	ops.mu.Unlock()
	changed := false
	for addr, d := range drains {
		// The key's revision says whether it was written since; comparing the values instead
		// would see a new drain in every list whose until or at has an offset, since each
		// parse of one makes a *time.Location of its own.
		if prev, ok := was[addr]; ok && prev.key == d.key && prev.rev == d.rev {
			continue
		}
		changed = true
		log.Infof("zone %s: backend %s: drained%s by %s via the status API (etcd %s), probed but not answered%s",
			p.cfg.Zone, addr, untilSuffix(d.Until), d.by, d.key, reasonSuffix(d.Reason))
	}
	for addr, d := range was {
		if _, ok := drains[addr]; ok {
			continue
		}
		changed = true
		switch {
		case d.key == "":
			// Set through this server's API before a reload gave the zone backends_etcd.
			log.Warningf("zone %s: backend %s: drain by %s via the status API dropped: the zone's drains are kept in etcd now; drain it again for the fleet",
				p.cfg.Zone, addr, d.by)
		case d.At(now):
			log.Infof("zone %s: backend %s: undrained via the status API (etcd %s deleted); answered again while healthy", p.cfg.Zone, addr, d.key)
		default:
			log.Infof("zone %s: backend %s: drain by %s via the status API ended at %s; answered again while healthy%s",
				p.cfg.Zone, addr, d.by, d.Until.Format(time.RFC3339), reasonSuffix(d.Reason))
		}
	}
	if changed {
		ops.rebuildAll()
	}
	return skipped
}

// deleteEndedDrainLocked deletes the etcd key of a drain whose until has passed, unless it was
// written again since: every server of the fleet may try, and one does it. The key would
// otherwise stay until the backend's next drain or undrain. Callers hold mu.
func (p *Pool) deleteEndedDrainLocked(addr netip.Addr, d operatorDrain) {
	e, ctx := p.agree.Etcd, p.agree.ctx
	if d.key == "" || e == nil || !p.src.connected {
		return // not the fleet's, or cut off: another server, or the next list, deletes it
	}
	p.agreeWG.Add(1)
	go func() {
		defer p.agreeWG.Done()
		ctx, cancel := context.WithTimeout(ctx, fleetWriteTimeout)
		defer cancel()
		if _, err := e.CompareAndDelete(ctx, drainKey(addr), d.rev); err != nil && ctx.Err() == nil {
			log.Warningf("zone %s: backend %s: the drain ended, and its key could not be deleted: %v", p.cfg.Zone, addr, err)
		}
	}()
}

// writeFleetDrain writes an operator's drain (d.on) or undrain of addr to etcd, for every
// server of the fleet, and waits until this server's list has it. While etcd cannot be reached
// it refuses: a drain applied here alone would be the very split the keys exist to prevent.
func (p *Pool) writeFleetDrain(addr netip.Addr, d Drain, by string, now time.Time) error {
	p.mu.Lock()
	e, connected := p.agree.Etcd, p.src.connected
	p.mu.Unlock()
	key := drainKey(addr)
	full := p.cfg.Source.Etcd.Prefix + key
	if e == nil || !connected {
		return refuse(Unavailable, "zone %s: backend %s: the zone's backends are in etcd, which cannot be reached now; "+
			"its drains are written there (%s) for every server of the fleet: try again once etcd answers", p.cfg.Zone, addr, full)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	var rev int64
	if d.On {
		v := fleetDrainValue{Reason: d.Reason, By: by, At: now.UTC()}
		if !d.Until.IsZero() {
			until := d.Until.UTC()
			v.Until = &until
		}
		value, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("zone %s: backend %s: encoding the drain: %w", p.cfg.Zone, addr, err)
		}
		if rev, err = e.Put(ctx, key, string(value)); err != nil {
			return refuse(Unavailable, "zone %s: backend %s: the drain was not written: %v", p.cfg.Zone, addr, err)
		}
		log.Infof("zone %s: backend %s: drain%s by %s via the status API written to etcd %s for the fleet%s",
			p.cfg.Zone, addr, untilSuffix(d.Until), by, full, reasonSuffix(d.Reason))
	} else {
		existed, r, err := e.Delete(ctx, key)
		if err != nil {
			return refuse(Unavailable, "zone %s: backend %s: the undrain was not written: %v", p.cfg.Zone, addr, err)
		}
		if !existed {
			return refuse(Conflict, "zone %s: backend %s is not drained (no etcd %s)", p.cfg.Zone, addr, full)
		}
		rev = r
		log.Infof("zone %s: backend %s: undrain by %s via the status API written to etcd (%s deleted) for the fleet", p.cfg.Zone, addr, by, full)
	}
	// The caller's next query to this server must see what it asked for.
	if !p.awaitList(ctx, rev) {
		log.Warningf("zone %s: backend %s: etcd has the write (revision %d), and this server's list does not yet; it applies when the list comes", p.cfg.Zone, addr, rev)
	}
	return nil
}

// listApplied records that the list of revision rev is applied, for awaitList.
func (p *Pool) listApplied(rev int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.src.revision = rev
	if p.src.applied != nil {
		close(p.src.applied)
		p.src.applied = nil
	}
}

// awaitList waits until a list of revision rev or later is applied, or until ctx ends.
func (p *Pool) awaitList(ctx context.Context, rev int64) bool {
	for {
		p.mu.Lock()
		if p.src.revision >= rev {
			p.mu.Unlock()
			return true
		}
		if p.src.applied == nil {
			p.src.applied = make(chan struct{})
		}
		applied := p.src.applied
		p.mu.Unlock()
		select {
		case <-applied:
		case <-ctx.Done():
			return false
		}
	}
}
