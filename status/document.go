package status

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// document builds /status.json from the view's pools and the registry's loops.
func (v *View) document(now time.Time) Document {
	var loops []health.LoopStatus
	if v.Loops != nil {
		loops = v.Loops()
	}
	doc := Document{
		Version:   SchemaVersion,
		Generated: now,
		HealthDNS: ProcessDoc{
			Version:       v.Process.Version,
			Started:       v.Process.Started,
			UptimeSeconds: now.Sub(v.Process.Started).Seconds(),
			ConfigHash:    configHash(v.Pools),
		},
		Checker: checkerStatus(loops, now),
		Pools:   make([]PoolDoc, 0, len(v.Pools)),
	}
	for _, shown := range v.Pools {
		doc.Pools = append(doc.Pools, poolDoc(shown, shown.Pool.Status()))
	}
	return doc
}

func checkerStatus(loops []health.LoopStatus, now time.Time) CheckerDoc {
	c := CheckerDoc{Loops: make([]LoopDoc, 0, len(loops))}
	for _, l := range loops {
		sl := LoopDoc{
			Wire:               l.Wire,
			Running:            l.Running,
			Targets:            l.Targets,
			IntervalSeconds:    l.Interval.Seconds(),
			LastTick:           timePtr(l.LastTick),
			Wakes:              l.Wakes,
			LatenessP99Seconds: l.LatenessP99.Seconds(),
			StallAfterSeconds:  health.StallAfter.Seconds(),
			Stalled:            l.Stalled,
		}
		if !l.LastTick.IsZero() {
			sl.LastTickAgeSeconds = max(now.Sub(l.LastTick), 0).Seconds()
		}
		c.Stalled = c.Stalled || l.Stalled
		c.Loops = append(c.Loops, sl)
	}
	return c
}

// configHash is a hash of the configuration of the pools shown (each zone's SOA serial hashes
// its own): two servers showing the same hash serve the same pools alike.
func configHash(pools []Shown) string {
	lines := make([]string, 0, len(pools))
	for _, p := range pools {
		lines = append(lines, fmt.Sprintf("%s %s %08x", p.Pool.Server(), p.Pool.Zone(), p.Serial))
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8])
}

func priorities(g balance.Groups) []int {
	out := make([]int, 0, g.Len()) // [], not null, for a family with no healthy group
	for _, p := range g.List() {
		out = append(out, int(p))
	}
	return out
}

func stateName(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// poolDoc is the pool's part of /status.json.
func poolDoc(shown Shown, st pool.Status) PoolDoc {
	cfg := &st.Config
	sp := PoolDoc{
		Server:              cfg.Server,
		Zone:                cfg.Zone,
		Policy:              cfg.Policy,
		Answers:             shown.Answers,
		TTL:                 shown.TTL,
		AllDownMode:         cfg.AllDown.String(),
		IntervalSeconds:     cfg.Spec.Interval.Seconds(),
		FastIntervalSeconds: cfg.Spec.Fast.Seconds(),
		TimeoutSeconds:      cfg.Spec.Timeout.Seconds(),
		Rise:                cfg.Spec.Rise,
		Fall:                cfg.Spec.Fall,
		Checks:              make([]CheckDoc, 0, len(cfg.Checks)),
		AllDown:             st.AllDown,
		Backends:            make([]BackendDoc, 0, len(st.Backends)),
	}
	for _, c := range cfg.Checks {
		sp.Checks = append(sp.Checks, CheckDoc{
			Check: c.String(), Kind: c.Kind.String(), Port: c.Port, Path: c.Path, Expect: c.Expect,
			Body: c.Body, BodyExact: c.BodyExact, Host: c.Host, TLSCA: c.TLSCA, TLSInsecure: c.TLSInsecure, Command: c.Command,
			TTLSeconds: c.TTL.Seconds(), ReportToken: c.Kind == health.Push && cfg.ReportToken != "",
		})
	}
	for _, f := range st.Families {
		fd := FamilyDoc{
			Family: f.Family, Configured: f.Configured, Up: f.Up, Down: f.Down, AllDown: f.AllDown, ServingDrained: f.ServingDrained,
			ServingPriority: f.Serving, Priorities: priorities(f.Groups), HealthyPriorities: priorities(f.Healthy),
		}
		if w := f.PreemptWait; w != nil {
			fd.PreemptWait = &PreemptWaitDoc{Group: w.Group, Until: w.Until}
		}
		if a := f.Agreement; a != nil {
			fd.Agreement = &AgreementDoc{Key: a.Key, Known: a.Known, Group: a.Group, Revision: a.Revision, Connected: a.Connected,
				Quorum: a.Quorum, Views: a.Views, Disagrees: a.Disagrees}
		}
		sp.Families = append(sp.Families, fd)
	}
	switch {
	case cfg.Preempt.Never:
		sp.Preemption = "nopreempt"
	case cfg.Preempt.Delay > 0:
		sp.Preemption = "preempt_delay " + cfg.Preempt.Delay.String()
	default:
		sp.Preemption = "preempt"
	}
	sp.Sources = append(sp.Sources, SourceDoc{Kind: "corefile", Backends: len(cfg.Backends)})
	if src := st.Source; src != nil {
		sd := SourceDoc{
			Kind: cfg.Source.Label(), Name: cfg.Source.String(), Backends: src.Backends, LastLoad: timePtr(src.LastLoad),
			LastError: src.LastError, LastErrorAt: timePtr(src.LastErrorAt), Errors: src.Errors, Waiting: src.Waiting, Connected: src.Connected,
		}
		for _, k := range src.Skipped {
			sd.Skipped = append(sd.Skipped, SkippedKeyDoc{Key: k.Key, Error: k.Error})
		}
		sp.Sources = append(sp.Sources, sd)
	}
	for _, b := range st.Backends {
		bd := BackendDoc{
			Address:  b.Addr.String(),
			Family:   "ipv4",
			Weight:   b.Weight,
			Priority: b.Priority,
			State:    "down",
			Answers:  b.Answers,
			Checks:   make([]BackendCheckDoc, 0, len(b.Checks)),
		}
		if b.Addr.Is6() {
			bd.Family = "ipv6"
		}
		bd.fill(b.Checks)
		// Drained is said over the health, which the checks still show.
		if b.DrainedBy != "" {
			bd.State, bd.DrainReason, bd.DrainUntil, bd.DrainedBy = "drained", b.Drained.Reason, timePtr(b.Drained.Until), b.DrainedBy
			bd.DrainCaller, bd.DrainSince = b.Caller, timePtr(b.Since)
		}
		sp.Backends = append(sp.Backends, bd)
	}
	return sp
}

// fill gives a backend its checks' status. It is up while every check is up, since the last of
// them came up; down since the first of its failing checks went down, for that check's reason.
func (sb *BackendDoc) fill(checks []health.Status) {
	up, checked := true, true
	var since time.Time
	for _, st := range checks {
		c := BackendCheckDoc{
			Check:               st.Target.Spec.Check.String(),
			State:               stateName(st.Up),
			Checked:             st.Checked,
			Since:               timePtr(st.Since),
			Successes:           st.Successes,
			Failures:            st.Failures,
			LastCheck:           timePtr(st.LastCheck),
			LastDurationSeconds: st.LastDuration.Seconds(),
			Transitions:         st.Transitions,
			History:             make([]TransitionDoc, 0, len(st.History)),
		}
		if st.LastFailure != nil {
			c.LastFailure = &FailureDoc{At: st.LastFailureAt, Reason: health.Reason(st.LastFailure), Error: st.LastFailure.Error()}
		}
		for _, t := range st.History {
			tr := TransitionDoc{At: t.At, State: stateName(t.Up), First: t.First}
			if t.Err != nil {
				tr.Reason, tr.Error = health.Reason(t.Err), t.Err.Error()
			}
			c.History = append(c.History, tr)
		}
		sb.Transitions += st.Transitions
		checked = checked && st.Checked
		switch {
		case !st.Up && up: // the first failing check: its reason is the backend's
			up, since = false, st.Since
			if c.LastFailure != nil {
				sb.Reason, sb.Error = c.LastFailure.Reason, c.LastFailure.Error
			}
		case !st.Up && st.Since.Before(since):
			since = st.Since
		case st.Up && up && st.Since.After(since):
			since = st.Since
		}
		sb.Checks = append(sb.Checks, c)
	}
	sb.Checked = checked
	sb.State = stateName(up && checked)
	sb.Since = timePtr(since)
}
