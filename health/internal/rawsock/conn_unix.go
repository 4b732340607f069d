//go:build unix && !linux

package rawsock

import "syscall"

// BatchedICMP: privileged pings go through the echo wire's one socket.
const BatchedICMP = true

// recvDontWait makes a batch read return at once when nothing has arrived.
const recvDontWait = syscall.MSG_DONTWAIT
