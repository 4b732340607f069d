//go:build unix

package main

import (
	"bytes"
	"log"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/build/earlyreload"
)

// keepEarlyReloads makes a SIGUSR1 that arrives while CoreDNS starts a reload once it has
// started, rather than nothing. The Go runtime drops a signal that no signal.Notify asks for,
// and caddy asks for SIGUSR1 from a goroutine that coremain.Run starts: on a loaded machine
// that goroutine ran after the servers answered, and a reload sent then was lost without a
// word (1 in 30 under load here). And a SIGUSR1 that caddy takes before its instance has
// started fails with "no server instances are fully running". So SIGUSR1 is caught from main
// on, and once caddy listens and its instance runs, one is sent again if any came before.
// A SIGUSR1 that caddy also took then reloads twice, which only costs a reload.
func keepEarlyReloads() {
	early := earlyreload.Caught
	go func() {
		for !caddy.Started() || !caddyTrapsSignals() {
			time.Sleep(5 * time.Millisecond)
		}
		signal.Stop(early)
		select {
		case <-early:
			log.Println("[INFO] SIGUSR1 during startup: reloading now that the servers run")
			syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		default:
		}
	}()
}

// caddySignalLoop is the goroutine of caddy's TrapSignals that handles SIGUSR1.
var caddySignalLoop = []byte("github.com/coredns/caddy.trapSignalsPosix.func1(")

// caddyTrapsSignals reports whether caddy's signal goroutine waits on its channel, which it
// does only after its signal.Notify. os/signal cannot be asked who listens, so this reads the
// goroutines' stacks; TestCaddyTrapsSignals checks that the name still matches caddy's.
func caddyTrapsSignals() bool {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		header, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(g, caddySignalLoop) && bytes.Contains(header, []byte("[chan receive")) {
			return true
		}
	}
	return false
}
