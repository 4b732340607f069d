//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/coredns/caddy"
)

// TestCaddyTrapsSignals checks that keepEarlyReloads still recognises caddy's signal goroutine:
// a caddy that renamed it would leave keepEarlyReloads waiting, and early reloads caught for
// ever.
func TestCaddyTrapsSignals(t *testing.T) {
	if caddyTrapsSignals() {
		t.Fatal("caddy traps signals before TrapSignals")
	}
	caddy.TrapSignals()
	// Give the signals back to the test binary's defaults; caddy's goroutines then wait idle.
	t.Cleanup(func() {
		signal.Reset(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	})
	deadline := time.Now().Add(10 * time.Second)
	for !caddyTrapsSignals() {
		if time.Now().After(deadline) {
			t.Fatalf("caddy's signal goroutine (%s) not found waiting on its channel", caddySignalLoop)
		}
		time.Sleep(time.Millisecond)
	}
}
