//go:build linux

package rawsock

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The raw-socket wires read and write their batches with recvmmsg and sendmmsg on message
// headers they build once. x/net's batch methods marshal every address on every call and
// allocate one for every packet read: at 10,000 probes a second that was a tenth of the probe
// loop's CPU (bench/RESULTS.md).

// BatchedICMP reports whether a raw ICMP socket can be read and written here, so that every
// privileged ping can share one socket per family (the echo wire).
const BatchedICMP = true

// Conn is a raw socket with its batch reads and writes.
type Conn struct {
	*net.IPConn
	fd syscall.RawConn
}

// NewConn wraps c for batch reads and writes.
func NewConn(c *net.IPConn) (*Conn, error) {
	fd, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &Conn{IPConn: c, fd: fd}, nil
}

// Addr is a destination as the kernel takes it: a sockaddr_in or sockaddr_in6.
type Addr struct {
	sa  [unix.SizeofSockaddrInet6]byte
	len uint32
}

// NewAddr returns addr as the kernel takes a destination.
func NewAddr(addr netip.Addr) *Addr {
	a := &Addr{}
	if addr.Is4() {
		binary.NativeEndian.PutUint16(a.sa[0:], unix.AF_INET)
		ip := addr.As4()
		copy(a.sa[4:], ip[:])
		a.len = unix.SizeofSockaddrInet4
		return a
	}
	binary.NativeEndian.PutUint16(a.sa[0:], unix.AF_INET6)
	ip := addr.As16()
	copy(a.sa[8:], ip[:])
	binary.NativeEndian.PutUint32(a.sa[24:], zoneIndex(addr.Zone()))
	a.len = unix.SizeofSockaddrInet6
	return a
}

// zoneIndex is the interface index of an IPv6 zone, a name or a number; 0 if there is none.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(n)
}

// mmsghdr is the kernel's struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// sendScratch is what SendBatch builds its headers in, reused at every flush.
type sendScratch struct {
	hdrs []mmsghdr
	iovs []unix.Iovec
}

// SendBatch writes o's packets from the first on and returns how many the kernel took. With
// none taken, err is why the first was refused.
func (c *Conn) SendBatch(o *Outbox, first int) (int, error) {
	n := len(o.packets) - first
	s := &o.scratch
	if cap(s.hdrs) < n {
		s.hdrs = make([]mmsghdr, n)
		s.iovs = make([]unix.Iovec, n)
	}
	hdrs, iovs := s.hdrs[:n], s.iovs[:n]
	for i := range n {
		packet, to := o.packets[first+i], o.to[first+i]
		iovs[i] = unix.Iovec{Base: &packet[0]}
		iovs[i].SetLen(len(packet))
		hdrs[i] = mmsghdr{hdr: unix.Msghdr{Name: &to.sa[0], Namelen: to.len, Iov: &iovs[i]}}
		hdrs[i].hdr.SetIovlen(1)
	}
	var sent uintptr
	var errno syscall.Errno
	err := c.fd.Write(func(fd uintptr) bool {
		sent, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(n), 0, 0, 0)
		return errno != unix.EAGAIN // else wait until the socket can take more
	})
	clear(hdrs) // the packets and addresses are the targets', not the scratch's
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(sent), nil
}

// Inbox is what drain reads into: ReadBatch packets and where they came from.
type Inbox struct {
	bufs  [][]byte
	names [][unix.SizeofSockaddrAny]byte
	iovs  []unix.Iovec
	hdrs  []mmsghdr
	zones map[uint32]string // IPv6 zone names by interface index
}

// NewInbox returns an inbox of ReadBatch buffers.
func NewInbox() Inbox {
	in := Inbox{
		bufs:  make([][]byte, ReadBatch),
		names: make([][unix.SizeofSockaddrAny]byte, ReadBatch),
		iovs:  make([]unix.Iovec, ReadBatch),
		hdrs:  make([]mmsghdr, ReadBatch),
		zones: map[uint32]string{},
	}
	for i := range in.hdrs {
		in.bufs[i] = make([]byte, 1500)
		in.iovs[i] = unix.Iovec{Base: &in.bufs[i][0]}
		in.iovs[i].SetLen(len(in.bufs[i]))
		in.hdrs[i].hdr.Name = &in.names[i][0]
		in.hdrs[i].hdr.Iov = &in.iovs[i]
		in.hdrs[i].hdr.SetIovlen(1)
	}
	return in
}

// RecvBatch reads what c has received, up to ReadBatch packets, without waiting.
func (c *Conn) RecvBatch(in *Inbox) (int, error) {
	for i := range in.hdrs {
		in.hdrs[i].hdr.Namelen = unix.SizeofSockaddrAny
	}
	var got uintptr
	var errno syscall.Errno
	err := c.fd.Read(func(fd uintptr) bool {
		got, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&in.hdrs[0])), uintptr(len(in.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case errno == unix.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, errno
	}
	return int(got), nil
}

// packet returns the ith packet read, and its source; an invalid address if the kernel gave
// none of the IP families.
func (in *Inbox) Packet(i int) ([]byte, netip.Addr) {
	h := &in.hdrs[i]
	sa := in.names[i][:min(int(h.hdr.Namelen), unix.SizeofSockaddrAny)]
	b := in.bufs[i][:h.len]
	if len(sa) < 2 {
		return b, netip.Addr{}
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) >= unix.SizeofSockaddrInet4 {
			return b, netip.AddrFrom4([4]byte(sa[4:8]))
		}
	case unix.AF_INET6:
		if len(sa) >= unix.SizeofSockaddrInet6 {
			addr := netip.AddrFrom16([16]byte(sa[8:24]))
			if index := binary.NativeEndian.Uint32(sa[24:]); index != 0 {
				addr = addr.WithZone(in.zone(index))
			}
			return b, addr
		}
	}
	return b, netip.Addr{}
}

// zone names an interface index as a target's address does (net.InterfaceByIndex, then the
// number), remembering it: it is asked for every link-local reply.
func (in *Inbox) zone(index uint32) string {
	name, ok := in.zones[index]
	if !ok {
		name = strconv.FormatUint(uint64(index), 10)
		if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
			name = ifi.Name
		}
		in.zones[index] = name
	}
	return name
}
