// Package narcache keeps rendered NARs on disk, bounded in size, so that a
// gateway serves a NAR it has rendered and verified once straight from a
// file (sendfile from the page cache) instead of rendering it from the
// blockstore again. A NAR enters the cache only after its bytes matched the
// NarHash they were asked for, so the cache holds verified NARs only. When
// the cache is over its bound, the least recently used NARs are removed.
//
// NARs are not fsynced one by one: on a first pass over a closure that was
// one fsync per NAR, and those syncs held up the renders of the NARs after
// them (all of W2's first requests took 15% longer). Instead a marker file
// says that the directory holds NARs written since the last sync: Close
// syncs them and removes it. If a process stops without Close, the next Open
// finds the marker and drops every NAR written after it, which a crash may
// have left with the right size but not the right bytes.
package narcache

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
)

// Cache is a directory of NARs, each named as its NAR URL is: the root of
// the DAG it was rendered from, its size and its SHA-256 (a NAR is only ever
// served for the root it came from). It is safe for concurrent use.
type Cache struct {
	dir string
	max int64

	mu       sync.Mutex
	size     int64                    // bytes of the committed NARs
	lru      *list.List               // *entry, most recently used first
	byName   map[string]*list.Element // committed NARs
	writing  map[string]bool          // NARs being written
	dirty    bool                     // the marker exists: unsynced NARs may be written
	unsynced map[string]bool          // NARs committed since the last sync
	commits  sync.WaitGroup
}

type entry struct {
	name string
	size int64
}

const (
	narSuffix = ".nar"
	tmpSuffix = ".tmp"
	// marker is the file that says NARs written after it may not be on
	// disk yet (see the package comment).
	marker = ".unsynced"
	// markerSlack is how much older than the marker a NAR of a crashed
	// process may look and still be dropped: the file system's clock is
	// coarse, and a step of the system clock moves it back.
	markerSlack = time.Minute
)

// Open opens the cache in dir (created if missing) holding at most max bytes
// of NARs. What an earlier process left is kept, least recently modified
// first out; unfinished files are removed, and so are the NARs a process
// that stopped without Close wrote after its last sync.
func Open(dir string, max int64) (*Cache, error) {
	if max <= 0 {
		return nil, fmt.Errorf("NAR cache %s: size bound %d is not positive", dir, max)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("NAR cache: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("NAR cache: %w", err)
	}
	c := &Cache{dir: dir, max: max, lru: list.New(), byName: map[string]*list.Element{}, writing: map[string]bool{}, unsynced: map[string]bool{}}
	var unsyncedSince time.Time
	crashed := false
	if fi, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		crashed, unsyncedSince = true, fi.ModTime().Add(-markerSlack)
	}
	var dropped int
	type found struct {
		entry
		mtime int64
	}
	var have []found
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		size, ok := parseName(name)
		fi, err := e.Info()
		if !ok || err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			continue // not ours, or not whole: leave it alone, never serve it
		}
		if crashed && !fi.ModTime().Before(unsyncedSince) {
			os.Remove(filepath.Join(dir, name))
			dropped++
			continue
		}
		have = append(have, found{entry{name, size}, fi.ModTime().UnixNano()})
	}
	if crashed {
		slog.Warn("NAR cache: the last process stopped without syncing it; dropped the NARs it wrote", "dir", dir, "dropped", dropped)
		if err := os.Remove(filepath.Join(dir, marker)); err != nil {
			return nil, fmt.Errorf("NAR cache: %w", err)
		}
		if err := atomicfile.Sync(dir); err != nil {
			return nil, fmt.Errorf("NAR cache: %w", err)
		}
	}
	sort.Slice(have, func(i, j int) bool { return have[i].mtime > have[j].mtime })
	for _, f := range have {
		c.byName[f.name] = c.lru.PushBack(&entry{f.name, f.size})
		c.size += f.size
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

// Name is the file name of the NAR rendered from root, with this size and
// SHA-256: <root>-<size>-<nix32 hash>.nar, as in the gateway's NAR URLs.
func Name(root cid.Cid, narHash []byte, size int64) string {
	return root.String() + "-" + strconv.FormatInt(size, 10) + "-" + nixbase32.EncodeToString(narHash) + narSuffix
}

func parseName(name string) (int64, bool) {
	base, ok := strings.CutSuffix(name, narSuffix)
	if !ok {
		return 0, false
	}
	parts := strings.Split(base, "-")
	if len(parts) != 3 || len(parts[2]) != 52 {
		return 0, false
	}
	if _, err := cid.Decode(parts[0]); err != nil {
		return 0, false
	}
	if b, err := nixbase32.DecodeString(parts[2]); err != nil || len(b) != 32 {
		return 0, false
	}
	size, err := strconv.ParseInt(parts[1], 10, 64)
	return size, err == nil && size > 0
}

// Close waits for NARs being committed and syncs the NARs written since the
// last sync. The cache stays usable: Close is also a checkpoint.
func (c *Cache) Close() {
	c.commits.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty {
		return
	}
	for name := range c.unsynced {
		if err := atomicfile.Sync(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The marker stays: the next Open drops what this run wrote.
			slog.Warn("NAR cache: sync", "nar", name, "err", err)
			return
		}
	}
	if err := atomicfile.Sync(c.dir); err != nil {
		slog.Warn("NAR cache: sync", "err", err)
		return
	}
	if err := os.Remove(filepath.Join(c.dir, marker)); err != nil {
		slog.Warn("NAR cache: remove the marker", "err", err)
		return
	}
	if err := atomicfile.Sync(c.dir); err != nil {
		slog.Warn("NAR cache: sync", "err", err)
	}
	c.dirty = false
	clear(c.unsynced)
}

// markDirtyLocked creates the marker, durably, before the first NAR written
// after a sync.
func (c *Cache) markDirtyLocked() error {
	if c.dirty {
		return nil
	}
	name := filepath.Join(c.dir, marker)
	err := os.WriteFile(name, nil, 0o600)
	if err == nil {
		err = atomicfile.Sync(name)
	}
	if err == nil {
		err = atomicfile.Sync(c.dir)
	}
	if err != nil {
		return fmt.Errorf("NAR cache marker: %w", err)
	}
	c.dirty = true
	return nil
}

// Size is the bytes of NARs the cache holds.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Max is the bytes of NARs the cache holds at most.
func (c *Cache) Max() int64 { return c.max }

// Has reports whether the cache holds the NAR with this name (Name).
func (c *Cache) Has(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byName[name] != nil
}

// Open returns the NAR of root with this hash and size, opened for
// reading, or nil if the cache does not hold it.
func (c *Cache) Open(root cid.Cid, narHash []byte, size int64) *os.File {
	name := Name(root, narHash, size)
	c.mu.Lock()
	el, ok := c.byName[name]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	f, err := os.Open(filepath.Join(c.dir, name))
	if err != nil {
		// Removed behind our back: forget it.
		c.forget(name)
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		f.Close()
		c.forget(name)
		return nil
	}
	return f
}

func (c *Cache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byName[name]; ok {
		c.size -= el.Value.(*entry).size
		c.lru.Remove(el)
		delete(c.byName, name)
		delete(c.unsynced, name)
	}
}

// Create starts writing the NAR of root with this hash and size. It returns
// nil when there is nothing to do: the NAR is cached or being written
// already, or it would take more than half the cache.
func (c *Cache) Create(root cid.Cid, narHash []byte, size int64) *Writer {
	if size > c.max/2 {
		return nil
	}
	name := Name(root, narHash, size)
	c.mu.Lock()
	if c.byName[name] != nil || c.writing[name] {
		c.mu.Unlock()
		return nil
	}
	// The marker goes first, so that every byte of this NAR is written
	// after it (Open compares times).
	if err := c.markDirtyLocked(); err != nil {
		c.mu.Unlock()
		slog.Warn("NAR cache: create", "err", err)
		return nil
	}
	c.writing[name] = true
	c.mu.Unlock()
	f, err := os.CreateTemp(c.dir, name+".*"+tmpSuffix)
	if err != nil {
		slog.Warn("NAR cache: create", "err", err)
		c.done(name)
		return nil
	}
	return &Writer{c: c, f: f, name: name, size: size}
}

func (c *Cache) done(name string) {
	c.mu.Lock()
	delete(c.writing, name)
	c.mu.Unlock()
}

// evictLocked removes least recently used NARs until the cache fits.
func (c *Cache) evictLocked() {
	for c.size > c.max {
		el := c.lru.Back()
		e := el.Value.(*entry)
		c.lru.Remove(el)
		delete(c.byName, e.name)
		delete(c.unsynced, e.name)
		c.size -= e.size
		// A reader that has it open keeps reading the unlinked file.
		if err := os.Remove(filepath.Join(c.dir, e.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("NAR cache: evict", "file", e.name, "err", err)
		}
	}
}

// Writer receives one NAR. Nothing is visible in the cache until Commit.
type Writer struct {
	c    *Cache
	f    *os.File
	name string
	size int64
	n    int64
	err  error
}

// Write appends to the NAR. A write error is kept for Commit, never
// returned: a full disk must not fail the response the NAR is copied from.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err == nil {
		var n int
		n, w.err = w.f.Write(p)
		w.n += int64(n)
	}
	return len(p), nil
}

// Commit makes the NAR visible. Call it only once the bytes written matched
// the NarHash and size the writer was created for. The file is closed and
// renamed in the background, so the response is not held up; until then
// the NAR is simply not cached yet. It is synced at the next Close, or now
// if a Close has happened since the writer was created.
func (w *Writer) Commit() { w.c.commits.Go(w.commit) }

// CommitNow is Commit done before it returns, for a writer no client
// waits on: the NAR is visible (or dropped) when it returns.
func (w *Writer) CommitNow() {
	w.c.commits.Add(1)
	defer w.c.commits.Done()
	w.commit()
}

func (w *Writer) commit() {
	err := w.err
	if err == nil && w.n != w.size {
		err = fmt.Errorf("%d bytes written, want %d", w.n, w.size)
	}
	w.c.mu.Lock()
	dirty := w.c.dirty
	w.c.mu.Unlock()
	if err == nil && !dirty {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	final := filepath.Join(w.c.dir, w.name)
	if err == nil {
		err = os.Rename(w.f.Name(), final)
	}
	if err != nil {
		slog.Warn("NAR cache: not cached", "nar", w.name, "err", err)
		os.Remove(w.f.Name())
		w.c.done(w.name)
		return
	}
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.writing, w.name)
	if c.dirty {
		c.unsynced[w.name] = true
	}
	c.byName[w.name] = c.lru.PushFront(&entry{w.name, w.size})
	c.size += w.size
	c.evictLocked()
}

// Abort drops what was written.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
	w.c.done(w.name)
}
