package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// DefaultReread is how often a File is looked at when nothing announced a change, and
	// read if its inode, size or modification time differ: the bound on how late a change
	// that the watcher missed (a network file system, an overflowed event queue, a directory
	// that was replaced) is seen.
	DefaultReread = 5 * time.Second

	// defaultSettle is how long a File waits after the last event of a burst before it reads:
	// an in-place writer (truncate, then write in several calls) is most likely done by then.
	defaultSettle = 50 * time.Millisecond
	// maxSettle bounds the wait for a writer that never pauses, so a change is still seen
	// well within a second.
	maxSettle = 500 * time.Millisecond

	// DefaultEmptyHold is how long a file that lists something must stay blank before its
	// emptiness is delivered. An in-place writer truncates the file first and may pause before
	// it writes (a shell's `>` redirection, then a command that takes its time): delivering
	// the truncation would empty the pool, and the list written next would be probed afresh,
	// answered with nothing meanwhile. A file emptied on purpose loses nothing by the wait,
	// since a pool emptied answers nothing either.
	DefaultEmptyHold = 2 * time.Second
)

// File watches one file through its directory. Watching the file itself would lose it on the
// first atomic rename (write a temporary file, rename it over): the watch follows the old inode,
// which is gone. The directory's watch sees every way the name gets new contents.
type File struct {
	path   string
	reread time.Duration

	// settle, emptyHold, newWatcher, readFile and stat are seams for the tests: widen the
	// quiet period, shorten the hold of a blank file, disable the watcher, count reads and
	// looks. A File holds no state of Run's, so one File may Run twice.
	settle     time.Duration
	emptyHold  time.Duration
	newWatcher func() (*fsnotify.Watcher, error)
	readFile   func(string) ([]byte, error)
	stat       func(string) (fs.FileInfo, error)

	held    []byte // the contents the receiver already holds (Holding), if holding
	holding bool
}

// NewFile returns a File for path, read whenever its directory announces a change, and looked
// at every reread (DefaultReread if zero or less) to be read again if it changed.
func NewFile(path string, reread time.Duration) *File {
	if reread <= 0 {
		reread = DefaultReread
	}
	return &File{
		path:       filepath.Clean(path),
		reread:     reread,
		settle:     defaultSettle,
		emptyHold:  DefaultEmptyHold,
		newWatcher: fsnotify.NewWatcher,
		readFile:   ReadFile,
		stat:       os.Stat,
	}
}

// Holding tells f that the receiver already holds data, read from the file before Run starts
// (at setup): Run's first read is then news only if it differs, and a blank first read is held
// as any later one. Without it, a writer that truncates the file between that read and Run's
// first would have its truncation delivered, emptying the receiver's list.
func (f *File) Holding(data []byte) *File {
	f.held, f.holding = data, true
	return f
}

// Read reads the file once, as ReadFile does: a regular file of at most MaxFileSize bytes.
// Its error names the path (a missing file's matches fs.ErrNotExist).
func (f *File) Read() ([]byte, error) { return f.readFile(f.path) }

// Run delivers the file's contents each time they differ from the last delivered ones, and an
// error when a read fails (a missing file, a permission error) once per failure streak, until
// ctx is done. The first delivery is the first read's outcome, unless f is Holding those
// contents already. After a failure streak, the next successful read is delivered even if the
// contents did not change, so the receiver learns that the failure is over. A file that turns blank (empty, or only white space) after contents
// that were not is delivered only once it has stayed blank for DefaultEmptyHold: contents
// written within the hold are delivered instead, as one change. deliver is called from Run's
// goroutine, one call at a time.
func (f *File) Run(ctx context.Context, deliver func(data []byte, err error)) {
	var (
		events  <-chan fsnotify.Event
		errs    <-chan error
		watched *dirWatch
	)
	// Without a watcher, the periodic re-read is the only way: slower, still correct.
	if w, err := f.newWatcher(); err == nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
		watched = &dirWatch{w: w, path: f.path}
	}

	var last contents
	if f.holding {
		last.news(f.held, nil)
	}
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()
	var blankSince time.Time // when the file was first read blank after contents; zero when not
	var lastGood look        // the file as it was before its last good read; zero after a failure
	// read reads the file; periodic says the ticker asked, and nothing announced a change:
	// then a file that still looks as it did before the last good read is not read again.
	// It returns false when ctx ended first, and Run must return then.
	read := func(periodic bool) bool {
		var (
			now       look
			unchanged bool
			data      []byte
			err       error
		)
		prev := lastGood
		if !whileAlive(ctx, func() {
			// Follow the link, its target and the directory before reading, so that a
			// change after this read finds the watch in place.
			watched.sync()
			now = f.look()
			if unchanged = periodic && prev.same(now); !unchanged {
				data, err = f.Read()
			}
		}) {
			return false
		}
		if unchanged {
			return true
		}
		if err != nil {
			data, lastGood = nil, look{}
		} else {
			lastGood = now
		}
		if err == nil && last.blanked(data) {
			now := time.Now()
			if blankSince.IsZero() {
				blankSince = now
				hold.Reset(f.emptyHold)
			}
			if now.Sub(blankSince) < f.emptyHold {
				return true
			}
		}
		blankSince = time.Time{}
		hold.Stop()
		if last.news(data, err) {
			deliver(data, err)
		}
		return true
	}
	if !read(false) {
		return
	}

	ticker := time.NewTicker(f.reread)
	defer ticker.Stop()
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	var burstStart time.Time // zero when no read is pending

	soon := func() {
		now := time.Now()
		if burstStart.IsZero() {
			burstStart = now
		}
		wait.Reset(min(f.settle, burstStart.Add(maxSettle).Sub(now)))
	}

	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if !read(true) {
				return
			}
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if watched.concerns(ev) {
				soon()
			}
		case _, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflowed queue lost events, maybe ours: look rather than wait for the tick.
			soon()
		case <-wait.C:
			burstStart = time.Time{}
			if !read(false) {
				return
			}
		case <-hold.C:
			if !read(false) {
				return
			}
		}
	}
}

// whileAlive runs look in a goroutine of its own and waits for it, or for ctx to end, and says
// whether look finished. A read that the kernel holds (a hung network mount, where even a stat
// waits) must not hold Run, which a reload and the shutdown wait for: the goroutine is left to
// end when the kernel lets go, and look must then touch nothing that Run still uses.
func whileAlive(ctx context.Context, look func()) bool {
	if ctx.Err() != nil {
		return false
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		look()
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// racyWindow is how long a file must have been left alone before its read for its size and
// modification time to vouch for its contents. Timestamps advance in ticks (the kernel's coarse
// clock, a second on some file systems, two on FAT): a write in the tick of the read leaves
// both as they were, so a file written shortly before its read is read again until it has
// been quiet this long, as git treats a "racily clean" file.
const racyWindow = 2 * time.Second

// look is what a stat of the path found, and when it was taken.
type look struct {
	fi fs.FileInfo
	at time.Time
}

func (f *File) look() look {
	fi, err := f.stat(f.path)
	if err != nil {
		return look{}
	}
	return look{fi: fi, at: time.Now()}
}

// same says whether now finds the file l found, unchanged: the same inode (a rename over it,
// or a link swapped to another target, makes another), size, mode and modification time,
// that time old enough for l to trust it.
func (l look) same(now look) bool {
	if l.fi == nil || now.fi == nil {
		return false
	}
	return os.SameFile(l.fi, now.fi) && l.fi.Size() == now.fi.Size() && l.fi.Mode() == now.fi.Mode() &&
		l.fi.ModTime().Equal(now.fi.ModTime()) && l.fi.ModTime().Before(l.at.Add(-racyWindow))
}

// contents remembers what was last delivered, to deliver only news.
type contents struct {
	sum       [sha256.Size]byte
	delivered bool
	failing   bool
	blank     bool // the last contents delivered were blank
}

// blanked says whether data, read without error, is blank where the last contents delivered
// were not (a failure since does not count: the receiver still holds those contents).
func (c *contents) blanked(data []byte) bool {
	return c.delivered && !c.blank && len(bytes.TrimSpace(data)) == 0
}

// news records a read's outcome and says whether it is worth delivering.
func (c *contents) news(data []byte, err error) bool {
	if err != nil {
		wasFailing := c.failing
		c.failing = true
		return !wasFailing
	}
	sum := sha256.Sum256(data)
	if c.delivered && !c.failing && sum == c.sum {
		return false
	}
	c.sum, c.delivered, c.failing = sum, true, false
	c.blank = len(bytes.TrimSpace(data)) == 0
	return true
}

// dirWatch keeps the watcher on the directories whose events can change what the path reads:
// its own directory and, when the path is a symbolic link, the directory of its final target.
// A nil *dirWatch (no watcher) does nothing.
type dirWatch struct {
	w    *fsnotify.Watcher
	path string
	// link is whether the path was a symbolic link at the last sync. Then any event in the
	// watched directories may change the contents: a Kubernetes ConfigMap volume swaps a
	// "..data" link to a new directory, and no event names the file.
	link bool
}

// sync points the watcher at the directories the path depends on now. A directory that
// cannot be watched (it does not exist yet) is tried again at the next sync; until then the
// periodic re-read covers it.
func (d *dirWatch) sync() {
	if d == nil {
		return
	}
	want := map[string]bool{filepath.Dir(d.path): true}
	fi, err := os.Lstat(d.path)
	d.link = err == nil && fi.Mode()&os.ModeSymlink != 0
	if d.link {
		if target, err := filepath.EvalSymlinks(d.path); err == nil {
			want[filepath.Dir(target)] = true
		}
	}
	have := map[string]bool{}
	for _, dir := range d.w.WatchList() {
		have[dir] = true
		if !want[dir] {
			// A directory that is gone already dropped its watch; nothing to undo then.
			_ = d.w.Remove(dir)
		}
	}
	for dir := range want {
		if !have[dir] {
			_ = d.w.Add(dir)
		}
	}
}

// concerns says whether ev can have changed what the path reads.
func (d *dirWatch) concerns(ev fsnotify.Event) bool {
	return d.link || filepath.Base(ev.Name) == filepath.Base(d.path)
}
