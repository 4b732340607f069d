package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// tapSYNs logs the arrival of every SYN to port on the interface dev, in the calling thread's
// network namespace. It sees the probes whether they connect or are half-open (a half-open
// probe is never accepted, so counting accepts would miss it), and counts tries, not probes.
// A tap bound to IPv4 alone, unlike one on every protocol, sees each packet once on loopback:
// as it arrives, not also as it leaves.
func tapSYNs(dev string, port int, log *arrivalLog) error {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return err
	}
	proto := int(htons(unix.ETH_P_IP))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	filter, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipFalse: 6},
		bpf.LoadMemShift{Off: 0},
		bpf.LoadIndirect{Off: 2, Size: 2}, // destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port), SkipFalse: 4},
		bpf.LoadIndirect{Off: 13, Size: 1}, // flags: SYN without ACK
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x12},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x02, SkipFalse: 1},
		bpf.RetConstant{Val: 64},
		bpf.RetConstant{Val: 0},
	})
	if err == nil {
		err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: sockFilter(filter)})
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("tapping %s: %w", dev, err)
	}
	f := os.NewFile(uintptr(fd), dev)
	go func() { // for as long as the driver runs
		buf := make([]byte, 64)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			now := time.Now()
			log.mu.Lock()
			log.times = append(log.times, now)
			log.mu.Unlock()
		}
	}()
	return nil
}

func sockFilter(raw []bpf.RawInstruction) *unix.SockFilter {
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &out[0]
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
