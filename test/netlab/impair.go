package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Impairment is what a bad link does to the frames a host sends, as tc-netem's "loss P" and
// "delay D J" do: each frame is dropped with probability Loss, and the rest are held for Delay
// plus a uniformly random offset within ±Jitter (so, as with netem, frames may be reordered).
//
// The lab applies it in user space rather than with netem, because the kernels this runs on
// (the CI machines included) are built without sch_netem and cannot load modules.
type Impairment struct {
	Loss   float64
	Delay  time.Duration
	Jitter time.Duration
}

// tapLink joins a host to the bridge through two TAP devices and this process, which copies
// frames between them and impairs those the host sends.
type tapLink struct {
	host, bridge *os.File

	mu  sync.Mutex
	imp Impairment
}

// ImpairableHost adds a host like Host does, but cabled through this process, so that Impair
// can make its link lossy or slow. Its link lives as long as the lab (or this process).
func (l *Lab) ImpairableHost(name, addr string) (*Host, error) {
	h, err := l.newHost(name, addr)
	if err != nil {
		return nil, err
	}
	if err := run("ip", "netns", "add", h.NS); err != nil {
		return nil, err
	}
	k := &tapLink{}
	err = h.Do(func() (err error) {
		k.host, err = openTAP("eth0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	bridge := &Host{Name: "bridge", NS: l.bridge, lab: l}
	err = bridge.Do(func() (err error) {
		k.bridge, err = openTAP(h.port)
		return err
	})
	if err != nil {
		k.host.Close()
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h.link = k
	l.mu.Lock()
	l.links = append(l.links, k)
	l.mu.Unlock()
	go k.pump(k.host, k.bridge, true)
	go k.pump(k.bridge, k.host, false)
	return h, h.configure()
}

// Impair sets what the host's link does to the frames it sends; the zero Impairment clears it.
func (h *Host) Impair(im Impairment) error {
	if h.link == nil {
		return fmt.Errorf("host %s: not an impairable host (see Lab.ImpairableHost)", h.Name)
	}
	h.link.mu.Lock()
	h.link.imp = im
	h.link.mu.Unlock()
	return nil
}

func (k *tapLink) impairment() Impairment {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.imp
}

func (k *tapLink) pump(from, to *os.File, impaired bool) {
	buf := make([]byte, 1<<16)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return // closed with the lab
		}
		frame := buf[:n]
		if impaired {
			im := k.impairment()
			if im.Loss > 0 && rand.Float64() < im.Loss {
				continue
			}
			if d := im.Delay; d > 0 || im.Jitter > 0 {
				if im.Jitter > 0 {
					d += time.Duration(rand.Int64N(int64(2*im.Jitter)+1)) - im.Jitter
				}
				held := bytes.Clone(frame)
				time.AfterFunc(d, func() { to.Write(held) })
				continue
			}
		}
		to.Write(frame) // a port that is down refuses frames: they are lost, as on a cable
	}
}

func (k *tapLink) close() error {
	return errors.Join(k.host.Close(), k.bridge.Close())
}

// openTAP creates a TAP device in the calling thread's namespace; it exists while the returned
// file is open.
func openTAP(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating TAP device %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
