package health

import (
	"context"
	"net/netip"
	"time"
)

// probeAttempts is how many tries one probe may make within its timeout. A probe is one packet
// exchange (echo request and reply, SYN and SYN-ACK), and one lost packet would fail it: on a
// link losing 30% of packets, a third of all probes, and with fall 2 a flap every dozen
// intervals. TCP retransmits its SYN only after a second, past any useful timeout, so the
// monitor retransmits itself: a new try every timeout/probeAttempts while none has answered, each
// allowed to run until the deadline, as fping's retries do. On a healthy LAN the first try
// answers in well under timeout/3 and no second packet is ever sent.
const probeAttempts = 3

// attempt probes addr with up to tries staggered tries and returns the first conclusive result:
// success, or a failure that came before the deadline (a refused connection or an unreachable
// network is an answer, and asking again would only get it again). When every try runs into the
// deadline, the probe timed out. It returns only after every try has returned, so no goroutine
// outlives the probe.
func attempt(ctx context.Context, p Prober, addr netip.Addr, tries int) error {
	deadline, ok := ctx.Deadline()
	if !ok || tries <= 1 {
		return p.Probe(ctx, addr)
	}
	gap := time.Until(deadline) / time.Duration(tries)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	results := make(chan error, tries)
	started, finished := 0, 0
	launch := func() {
		started++
		go func() { results <- p.Probe(ctx, addr) }()
	}
	launch()
	retry := time.NewTimer(gap)
	defer retry.Stop()

	var err error
	for decided := false; !decided && finished < started; {
		select {
		case err = <-results:
			finished++
			// A try that failed while time was left failed for a reason, not for want of a reply.
			decided = err == nil || ctx.Err() == nil
		case <-retry.C:
			launch()
			if started < tries {
				retry.Reset(gap)
			}
		}
	}
	cancel()
	for ; finished < started; finished++ {
		<-results
	}
	return err
}
