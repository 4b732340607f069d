package source

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
)

// never is a re-read interval no test outlives: a test using it sees only what the watcher
// reports.
const never = time.Hour

// patience bounds every wait for a delivery; generous because -race on a busy machine is slow,
// and a missed event would otherwise be found only by the re-read that never comes.
const patience = 5 * time.Second

type delivery struct {
	data string
	err  error
}

// watched is a running File and what it delivered.
type watched struct {
	f          *File
	deliveries chan delivery
	reads      atomic.Int64
}

// newWatched returns a File on path whose reads are counted; start it with run.
func newWatched(path string, reread time.Duration) *watched {
	w := &watched{f: NewFile(path, reread), deliveries: make(chan delivery, 64)}
	read := w.f.readFile
	w.f.readFile = func(p string) ([]byte, error) {
		defer w.reads.Add(1)
		return read(p)
	}
	return w
}

// run starts Run and stops it when the test ends, failing the test if Run does not return.
func (w *watched) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.f.Run(ctx, func(data []byte, err error) {
			select {
			case w.deliveries <- delivery{string(data), err}:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(patience):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// next is the next delivery; the test fails if none comes.
func (w *watched) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-w.deliveries:
		return d
	case <-time.After(patience):
		t.Fatalf("no delivery within %v", patience)
		return delivery{}
	}
}

// nextData is the next delivery, which must be contents, not an error.
func (w *watched) nextData(t *testing.T) string {
	t.Helper()
	d := w.next(t)
	if d.err != nil {
		t.Fatalf("delivered error %v, want contents", d.err)
	}
	return d.data
}

// awaitData waits for a delivery of want, skipping others (an in-place writer can be read
// half-way, a vim-style one while the name is missing).
func (w *watched) awaitData(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case d := <-w.deliveries:
			if d.err == nil && d.data == want {
				return
			}
		case <-deadline:
			t.Fatalf("%q not delivered within %v", want, patience)
		}
	}
}

// awaitReads waits until the File has read more than n times.
func (w *watched) awaitReads(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for w.reads.Load() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no read after read %d within %v", n, patience)
		}
		time.Sleep(time.Millisecond)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes data the way editors and config managers do: a temporary file beside the
// target, written in several calls, renamed over it.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.SplitAfter(data, "\n") {
		if _, err := tmp.WriteString(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

func TestFileReadMissingNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	_, err := NewFile(path, 0).Read()
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Read() error = %v, want a not-exist error naming %s", err, path)
	}
}

func TestFileFirstDelivery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.run(t)
	if got := w.nextData(t); got != "10.0.0.1\n" {
		t.Fatalf("first delivery = %q, want the file's contents", got)
	}
}

func TestFileFirstDeliveryOfAMissingFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	w := newWatched(path, never)
	w.run(t)
	if d := w.next(t); !errors.Is(d.err, fs.ErrNotExist) {
		t.Fatalf("first delivery = %+v, want a not-exist error", d)
	}
	write(t, path, "10.0.0.1\n")
	w.awaitData(t, "10.0.0.1\n")
}

func TestFileInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.run(t)
	w.nextData(t)

	// Truncate, then write in two calls, as `cat > file` does.
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"10.0.0.2\n", "10.0.0.3\n"} {
		if _, err := out.WriteString(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	w.awaitData(t, "10.0.0.2\n10.0.0.3\n")
}

func TestFileAtomicRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.run(t)
	w.nextData(t)

	// The name only ever holds a whole file, so the next delivery must be all of it.
	replace(t, path, "10.0.0.2\n10.0.0.3\n")
	if got := w.nextData(t); got != "10.0.0.2\n10.0.0.3\n" {
		t.Fatalf("delivery after rename = %q", got)
	}
	// The watch must survive the first rename: a watch on the file would now follow a
	// deleted inode.
	replace(t, path, "10.0.0.4\n")
	if got := w.nextData(t); got != "10.0.0.4\n" {
		t.Fatalf("delivery after second rename = %q", got)
	}
}

func TestFileVimStyleWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.run(t)
	w.nextData(t)

	// vim's default for a file with one link: move the original away, write a new file under
	// the name, remove the backup.
	backup := path + "~"
	if err := os.Rename(path, backup); err != nil {
		t.Fatal(err)
	}
	write(t, path, "10.0.0.2\n")
	if err := os.Remove(backup); err != nil {
		t.Fatal(err)
	}
	w.awaitData(t, "10.0.0.2\n")

	write(t, path, "10.0.0.3\n")
	w.awaitData(t, "10.0.0.3\n")
}

func TestFileDeleteThenRecreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	// A short re-read makes the file be read many times while it is missing.
	w := newWatched(path, 5*time.Millisecond)
	w.run(t)
	w.nextData(t)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if d := w.next(t); !errors.Is(d.err, fs.ErrNotExist) {
		t.Fatalf("delivery after delete = %+v, want a not-exist error", d)
	}
	w.awaitReads(t, w.reads.Load()+3)

	// The same contents again: the receiver still has to learn that the failure is over.
	// Renamed in whole, because the quick re-read could catch a file created and not yet written.
	replace(t, path, "10.0.0.1\n")
	if d := w.next(t); d.err != nil || d.data != "10.0.0.1\n" {
		t.Fatalf("delivery after re-creation = %+v, want the contents (one error per failure)", d)
	}
}

func TestFileTouchWithoutChangeDeliversNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.run(t)
	w.nextData(t)

	reads := w.reads.Load()
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	w.awaitReads(t, reads)
	// Rewriting the same bytes is no change either.
	reads = w.reads.Load()
	replace(t, path, "10.0.0.1\n")
	w.awaitReads(t, reads)

	replace(t, path, "10.0.0.2\n")
	if got := w.nextData(t); got != "10.0.0.2\n" {
		t.Fatalf("delivery after a touch, a same-contents rewrite and a change = %q, want only the change", got)
	}
}

// configMapVolume lays out dir the way the kubelet mounts a ConfigMap: each version in its own
// timestamped directory, "..data" a link to the current one, the key a link through "..data".
type configMapVolume struct {
	t       *testing.T
	dir     string
	version int
	current string
}

func newConfigMapVolume(t *testing.T, data string) *configMapVolume {
	v := &configMapVolume{t: t, dir: t.TempDir()}
	v.update(data)
	if err := os.Symlink(filepath.Join("..data", "backends"), v.path()); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *configMapVolume) path() string { return filepath.Join(v.dir, "backends") }

// update swaps in a new version as the kubelet's atomic writer does.
func (v *configMapVolume) update(data string) {
	t := v.t
	v.version++
	version := "..2026_01_01_00_00_0" + string(rune('0'+v.version))
	if err := os.Mkdir(filepath.Join(v.dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(v.dir, version, "backends"), data)
	tmpLink := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(version, tmpLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpLink, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.current != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.current)); err != nil {
			t.Fatal(err)
		}
	}
	v.current = version
}

func TestFileConfigMapSwap(t *testing.T) {
	v := newConfigMapVolume(t, "10.0.0.1\n")
	w := newWatched(v.path(), never)
	w.run(t)
	if got := w.nextData(t); got != "10.0.0.1\n" {
		t.Fatalf("first delivery = %q", got)
	}

	// No event names "backends": only "..data" and the version directories change.
	v.update("10.0.0.2\n")
	if got := w.nextData(t); got != "10.0.0.2\n" {
		t.Fatalf("delivery after the first swap = %q", got)
	}
	v.update("10.0.0.3\n")
	if got := w.nextData(t); got != "10.0.0.3\n" {
		t.Fatalf("delivery after the second swap = %q", got)
	}
}

func TestFileSymlinkToAnotherDirectory(t *testing.T) {
	targetDir := t.TempDir()
	target := filepath.Join(targetDir, "backends.list")
	write(t, target, "10.0.0.1\n")
	path := filepath.Join(t.TempDir(), "backends")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	w := newWatched(path, never)
	w.run(t)
	w.nextData(t)

	// The rename happens in the target's directory, where the link's directory sees nothing.
	replace(t, target, "10.0.0.2\n")
	if got := w.nextData(t); got != "10.0.0.2\n" {
		t.Fatalf("delivery after replacing the link's target = %q", got)
	}

	// Point the link elsewhere: the new target's directory is the one to watch now.
	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "backends.list")
	write(t, other, "10.0.0.3\n")
	newLink := path + ".new"
	if err := os.Symlink(other, newLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(newLink, path); err != nil {
		t.Fatal(err)
	}
	if got := w.nextData(t); got != "10.0.0.3\n" {
		t.Fatalf("delivery after re-pointing the link = %q", got)
	}
	replace(t, other, "10.0.0.4\n")
	if got := w.nextData(t); got != "10.0.0.4\n" {
		t.Fatalf("delivery after replacing the new target = %q", got)
	}
}

func TestFilePeriodicRereadWithoutWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, 20*time.Millisecond)
	w.f.newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("watcher disabled") }
	w.run(t)
	w.nextData(t)

	write(t, path, "10.0.0.2\n")
	w.awaitData(t, "10.0.0.2\n")
}

func TestFileRunReturnsAndLeavesNoGoroutine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	f := NewFile(path, never)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	delivered := make(chan struct{}, 1)
	go func() {
		defer close(done)
		f.Run(ctx, func([]byte, error) {
			select {
			case delivered <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-delivered:
	case <-time.After(patience):
		t.Fatal("no first delivery")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatal("Run did not return after its context was cancelled")
	}
	// The watcher's reader goroutine must be gone too.
	goleak.VerifyNone(t)
}

func TestFileWaitsForASlowInPlaceWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	// Far longer than the writer's pauses, so only a stall of the test itself could split
	// the burst.
	w.f.settle = 300 * time.Millisecond
	w.run(t)
	w.nextData(t)

	out, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, part := range []string{"10.0.0.2\n", "10.0.0.3\n", "10.0.0.4\n"} {
		if i > 0 {
			// A writer that is slow between its calls, not a wait for a state.
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := out.WriteString(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if got := w.nextData(t); got != "10.0.0.2\n10.0.0.3\n10.0.0.4\n" {
		t.Fatalf("delivery during a burst of writes = %q, want the whole file once the burst ends", got)
	}
}

// truncate empties the file in place, as a shell's `>` redirection does before its command
// writes.
func truncate(t *testing.T, path string) *os.File {
	t.Helper()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFileTruncatedThenRewrittenIsOneChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	// Far longer than the writer's pause, so only a stall of the test itself could outlast it.
	w.f.emptyHold = 30 * time.Second
	w.run(t)
	w.nextData(t)

	n := w.reads.Load()
	out := truncate(t, path)
	w.awaitReads(t, n) // the truncation is read, and must not be delivered
	if _, err := out.WriteString("10.0.0.1\n10.0.0.2\n"); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if got := w.nextData(t); got != "10.0.0.1\n10.0.0.2\n" {
		t.Fatalf("delivered %q after a truncation and a rewrite, want the rewritten list alone", got)
	}
}

func TestFileLeftBlankIsDeliveredAfterTheHold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	w := newWatched(path, never)
	w.f.emptyHold = 100 * time.Millisecond
	w.run(t)
	w.nextData(t)

	truncate(t, path).Close()
	if got := w.nextData(t); got != "" {
		t.Fatalf("delivered %q, want the file's emptiness once it stayed empty", got)
	}
	// Blank after blank is no news; contents after it are, at once.
	write(t, path, "\n")
	write(t, path, "10.0.0.3\n")
	if got := w.nextData(t); got != "10.0.0.3\n" {
		t.Fatalf("delivered %q, want the list written into the empty file", got)
	}
}

// A receiver that read the file at setup holds its contents: the same contents read again by
// Run's first read are no news, and a file truncated between the two reads (a writer caught
// mid-write as the watch starts) is held as any later truncation, not delivered as an empty list.
func TestFileHoldingWhatSetupRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1\n")
	setup, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	w := newWatched(path, never)
	w.f.Holding(setup)
	w.f.emptyHold = 30 * time.Second
	truncate(t, path).Close() // after setup's read, before Run's
	w.run(t)
	w.awaitReads(t, 0)
	write(t, path, "10.0.0.1\n10.0.0.2\n")
	if got := w.nextData(t); got != "10.0.0.1\n10.0.0.2\n" {
		t.Fatalf("delivered %q first, want the list written after the truncation", got)
	}

	// Contents already held are no news: the first delivery is the change that follows.
	same := newWatched(path, never)
	same.f.Holding([]byte("10.0.0.1\n10.0.0.2\n"))
	same.run(t)
	same.awaitReads(t, 0)
	write(t, path, "10.0.0.3\n")
	if got := same.nextData(t); got != "10.0.0.3\n" {
		t.Fatalf("delivered %q first, want nothing for the contents already held, then the change", got)
	}
}
