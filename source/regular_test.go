package source

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// mkfifo makes a FIFO at path. Should a read block on it anyway, the cleanup opens it as a
// writer and closes it, which ends the blocked open and read: the test fails instead of hanging.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unblockFIFO(path) })
}

// unblockFIFO releases a reader blocked in the FIFO's open: O_RDWR never blocks on Linux.
func unblockFIFO(path string) {
	if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
		f.Close()
	}
}

// oversized makes a sparse file one byte over MaxFileSize: it costs no disk.
func oversized(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
}

// notRegular lays out, in dir, each kind of path a backends file must not be, and says what
// its error must wrap and say.
func notRegular(t *testing.T, dir string) []struct {
	name, path string
	is         error
	says       string
} {
	t.Helper()
	fifo := filepath.Join(dir, "fifo")
	mkfifo(t, fifo)
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	linkToFIFO := filepath.Join(dir, "link-to-fifo")
	if err := os.Symlink(fifo, linkToFIFO); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	big := filepath.Join(dir, "big")
	oversized(t, big)
	return []struct {
		name, path string
		is         error
		says       string
	}{
		{"FIFO", fifo, ErrNotRegular, fifo + " is a named pipe (FIFO): not a regular file"},
		{"link to /dev/zero", zero, ErrNotRegular, zero + " (a link to /dev/zero) is a character device"},
		{"link to a FIFO", linkToFIFO, ErrNotRegular, linkToFIFO + " (a link to " + fifo + ") is a named pipe (FIFO)"},
		{"directory", sub, ErrNotRegular, sub + " is a directory"},
		{"socket", sock, ErrNotRegular, sock + " is a socket"},
		{"over the size cap", big, ErrTooLarge, big + " is too large: 16777217 bytes, where a backends file may hold 16777216 bytes (16 MiB)"},
	}
}

// readWithinPatience runs read, failing the test if it blocks past patience.
func readWithinPatience(t *testing.T, read func() ([]byte, error), unblock func()) ([]byte, error) {
	t.Helper()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := read()
		done <- result{data, err}
	}()
	select {
	case r := <-done:
		return r.data, r.err
	case <-time.After(patience):
		unblock()
		<-done
		t.Fatalf("the read blocked for %v", patience)
		return nil, nil
	}
}

// TestFileReadRefusesWhatIsNotARegularFile: what startup reads, through File.Read, is refused
// without blocking when it is not a regular file of at most MaxFileSize bytes, and the error
// names the path and what it is.
func TestFileReadRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range notRegular(t, dir) {
		t.Run(tc.name, func(t *testing.T) {
			data, err := readWithinPatience(t, NewFile(tc.path, 0).Read, func() { unblockFIFO(filepath.Join(dir, "fifo")) })
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Read() = %d bytes, error %v; want an error that says %q", len(data), err, tc.says)
			}
		})
	}
}

// TestOpenedFIFOIsRefusedWithoutBlocking: ReadFile's second check, for a FIFO put at the path
// between its stat and its open: the open does not block, and the opened file is refused.
func TestOpenedFIFOIsRefusedWithoutBlocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	mkfifo(t, path)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("a FIFO opened for reading with O_NONBLOCK: %v, want no error and no wait", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := regular(path, fi); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("regular(the opened FIFO) = %v, want ErrNotRegular", err)
	}
}

// TestReadFileAtTheCap: a file of exactly MaxFileSize bytes is read; the cap is not off by one.
func TestReadFileAtTheCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	if err := os.WriteFile(path, make([]byte, MaxFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := ReadFile(path)
	if err != nil || len(data) != MaxFileSize {
		t.Fatalf("ReadFile of %d bytes = %d bytes, %v", MaxFileSize, len(data), err)
	}
}

// TestFileRunRefusesWhatIsNotARegularFile: each kind of path renamed over a watched file is
// delivered as an error, without blocking Run (its stop is checked by run's cleanup), and a
// good file renamed over it afterwards is delivered again.
func TestFileRunRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range notRegular(t, dir) {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "backends")
			write(t, path, "10.0.0.1\n")
			w := newWatched(path, never)
			w.run(t)
			w.nextData(t)

			// A link takes the target's place, so that a directory or socket need not move.
			if err := os.Symlink(tc.path, path+".new"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
			d := w.next(t)
			if !errors.Is(d.err, tc.is) || !strings.Contains(d.err.Error(), strings.TrimPrefix(tc.says, tc.path)) {
				t.Fatalf("delivery after %s took the file's place: %d bytes, error %v; want an error that says %q", tc.name, len(d.data), d.err, tc.says)
			}
			want := "10.0.0." + string(rune('2'+i)) + "\n"
			replace(t, path, want)
			w.awaitData(t, want)
		})
	}
}

// TestFileUnchangedIsNotReadAgain: the periodic look reads a file only when it changed; a file
// renamed over it is read even when size and modification time are the old file's.
func TestFileUnchangedIsNotReadAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	w := newWatched(path, time.Millisecond)
	w.f.newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("watcher disabled") }
	var looks atomic.Int64
	w.f.stat = func(p string) (fs.FileInfo, error) {
		defer looks.Add(1)
		return os.Stat(p)
	}
	w.run(t)
	w.nextData(t)

	awaitLooks := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(patience)
		for looks.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d looks within %v, want %d", looks.Load(), patience, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	reads := w.reads.Load()
	awaitLooks(looks.Load() + 5)
	if got := w.reads.Load(); got != reads {
		t.Fatalf("an unchanged file was read %d times more by the periodic look", got-reads)
	}

	// Same size, same time, another inode: as a config manager that keeps times renames.
	tmp := path + ".tmp"
	write(t, tmp, "10.0.0.2\n")
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	w.awaitData(t, "10.0.0.2\n")

	// Written in place: a new modification time.
	write(t, path, "10.0.0.3\n")
	w.awaitData(t, "10.0.0.3\n")
}

// TestFileRunReturnsWhileAReadHangs: a read that the kernel holds (a hung network mount, where
// no type check helps) does not hold Run, which a reload and the shutdown wait for.
func TestFileRunReturnsWhileAReadHangs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	hung, release := make(chan struct{}), make(chan struct{})
	read := w.f.readFile
	w.f.readFile = func(p string) ([]byte, error) {
		if w.reads.Add(1) > 1 {
			close(hung)
			<-release
		}
		return read(p)
	}
	// Let the held read go once the test is over, for goleak in TestMain.
	t.Cleanup(func() { close(release) })
	w.run(t) // its cleanup fails the test if Run does not return once cancelled
	w.nextData(t)
	write(t, path, "10.0.0.2\n")
	select {
	case <-hung:
	case <-time.After(patience):
		t.Fatalf("the change was not read within %v", patience)
	}
}

// TestReadWithinGivesUpOnAHeldRead: a read held past the timeout (a hung network mount) is
// given up with an error that names the path, and the caller is not held with it.
func TestReadWithinGivesUpOnAHeldRead(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // for goleak in TestMain
	held := func(string) ([]byte, error) {
		<-release
		return nil, nil
	}
	data, err := readWithinPatience(t, func() ([]byte, error) { return readWithin(held, "/mnt/nfs/backends", 50*time.Millisecond) }, func() {})
	if !errors.Is(err, ErrNotRead) || !strings.Contains(err.Error(), "/mnt/nfs/backends: not read within 50ms") {
		t.Fatalf("readWithin of a held read = %d bytes, %v; want ErrNotRead naming the path", len(data), err)
	}
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	if data, err := ReadFileWithin(path, patience); err != nil || string(data) != "10.0.0.1\n" {
		t.Fatalf("ReadFileWithin of a regular file = %q, %v", data, err)
	}
}
