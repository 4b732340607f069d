//go:build unix && !linux

package health

import "syscall"

// sharedICMPWorks: privileged pings go through RawICMPProber's one socket.
const sharedICMPWorks = true

// recvDontWait makes a batch read return at once when nothing has arrived.
const recvDontWait = syscall.MSG_DONTWAIT
