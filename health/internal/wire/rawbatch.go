package wire

import (
	"context"
	"net/netip"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
)

// rawBatch is what a wire over raw sockets (one per address family) keeps for its loop's
// goroutine: the buffers it reads into, and the tries queued for the next flush with the targets
// they are for.
type rawBatch[S any] struct {
	in      rawsock.Inbox
	sends   [2]rawsock.Outbox
	sentTo  [2][]*engine.Slot[S]
	refusal []engine.Answer[S] // of flush
}

func newRawBatch[S any]() rawBatch[S] { return rawBatch[S]{in: rawsock.NewInbox()} }

// queueTry adds a try of s to the next flush: packet, to be sent to "to" through family's socket.
func (b *rawBatch[S]) queueTry(family int, packet []byte, to *rawsock.Addr, s *engine.Slot[S]) {
	b.sends[family].Add(packet, to)
	b.sentTo[family] = append(b.sentTo[family], s)
}

// drain hands take every packet c has received, and its source, without waiting. c may be nil.
func (b *rawBatch[S]) drain(c *rawsock.Conn, take func(packet []byte, from netip.Addr)) {
	rawsock.Drain(c, &b.in, take)
}

// flush writes the queued tries through conns, a batch per family, and returns those the
// kernel refused to send (no route, say), each with the error wrap makes of the cause.
func (b *rawBatch[S]) flush(conns [2]*rawsock.Conn, wrap func(s *engine.Slot[S], err error) error) []engine.Answer[S] {
	failed := b.refusal[:0]
	for family := range b.sends {
		o := &b.sends[family]
		for i := 0; i < o.Len(); {
			n, err := conns[family].SendBatch(o, i)
			i += n
			if err != nil && i < o.Len() {
				s := b.sentTo[family][i]
				failed = append(failed, engine.Answer[S]{Slot: s, Err: wrap(s, unwrapDial(context.Background(), s.Timeout(), err))})
				i++
			}
		}
		o.Reset()
		clear(b.sentTo[family])
		b.sentTo[family] = b.sentTo[family][:0]
	}
	b.refusal = failed
	return failed
}

func familyOf(addr netip.Addr) int {
	if addr.Is4() {
		return 0
	}
	return 1
}
