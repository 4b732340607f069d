package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// MaxFileSize is the most a backends file may hold. The largest zone (65,536 backends) fits at
// 256 bytes a line; a file larger than that is a mistake or an attack, and reading it whole at
// every change would cost the server its memory.
const MaxFileSize = 16 << 20

var (
	// ErrNotRegular is wrapped by the error of a path that is not a regular file once its
	// symbolic links are followed.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge is wrapped by the error of a file larger than MaxFileSize.
	ErrTooLarge = errors.New("too large")
	// ErrNotRead is wrapped by the error of a read that ReadFileWithin gave up on.
	ErrNotRead = errors.New("not read")
)

// ReadFile reads the regular file at path, following symbolic links, if it holds at most
// MaxFileSize bytes. Anything else is refused without a read: a FIFO would block the open
// until a writer comes (and the reader with it, and whoever waits for the reader: a reload,
// a shutdown), a device such as /dev/zero never ends, a directory or socket has no list.
// Errors name the path; a missing file's matches fs.ErrNotExist.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	// Stat and open are two looks at the path: a FIFO renamed in between is opened without
	// blocking (O_NONBLOCK), then refused by what the opened file is.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	// One byte beyond the cap tells a file that grew since the stat.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path, "grew past the cap while read")
	}
	return data, nil
}

// ReadFileWithin is ReadFile given up after timeout, for a read that something waits on: at
// setup, a reload and the shutdown wait for it (CoreDNS handles SIGTERM in the goroutine that
// runs a reload). A read held longer than that is a network mount that stopped answering, where
// even a stat waits; it is left behind, to end when the kernel lets go.
func ReadFileWithin(path string, timeout time.Duration) ([]byte, error) {
	return readWithin(ReadFile, path, timeout)
}

func readWithin(read func(string) ([]byte, error), path string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		data []byte
		err  error
	)
	if !whileAlive(ctx, func() { data, err = read(path) }) {
		return nil, fmt.Errorf("%s: %w within %v: is it on a network mount that stopped answering?", path, ErrNotRead, timeout)
	}
	return data, err
}

// regular refuses what fi says is not a regular file of at most MaxFileSize bytes.
func regular(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is %s: %w", describe(path), kind(fi.Mode()), ErrNotRegular)
	}
	if fi.Size() > MaxFileSize {
		return tooLarge(path, fmt.Sprintf("%d bytes", fi.Size()))
	}
	return nil
}

func tooLarge(path, size string) error {
	return fmt.Errorf("%s is %w: %s, where a backends file may hold %d bytes (16 MiB)", describe(path), ErrTooLarge, size, MaxFileSize)
}

// describe names path and, when it is a symbolic link, what it leads to: the operator sees
// the link, the refusal is about its target.
func describe(path string) string {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			return fmt.Sprintf("%s (a link to %s)", path, target)
		}
	}
	return path
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "a file of type " + m.Type().String()
}
