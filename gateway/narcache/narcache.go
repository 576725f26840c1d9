// Package narcache keeps rendered NARs on disk, bounded in size, so that a
// gateway serves a NAR it has rendered and verified once straight from a
// file (sendfile from the page cache) instead of rendering it from the
// blockstore again. A NAR enters the cache only after its bytes matched the
// NarHash they were asked for, and is fsynced before it becomes visible, so
// the cache holds verified NARs only. When the cache is over its bound, the
// least recently used NARs are removed.
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

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Cache is a directory of NARs, each named as its NAR URL is: the root of
// the DAG it was rendered from, its size and its SHA-256 (a NAR is only ever
// served for the root it came from). It is safe for concurrent use.
type Cache struct {
	dir string
	max int64

	mu      sync.Mutex
	size    int64                    // bytes of the committed NARs
	lru     *list.List               // *entry, most recently used first
	byName  map[string]*list.Element // committed NARs
	writing map[string]bool          // NARs being written
	commits sync.WaitGroup
}

type entry struct {
	name string
	size int64
}

const (
	narSuffix = ".nar"
	tmpSuffix = ".tmp"
)

// Open opens the cache in dir (created if missing) holding at most max bytes
// of NARs. What an earlier process left is kept, least recently modified
// first out; unfinished files are removed.
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
	c := &Cache{dir: dir, max: max, lru: list.New(), byName: map[string]*list.Element{}, writing: map[string]bool{}}
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
		have = append(have, found{entry{name, size}, fi.ModTime().UnixNano()})
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

// Close waits for NARs being committed.
func (c *Cache) Close() { c.commits.Wait() }

// Size is the bytes of NARs the cache holds.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
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
// the NarHash and size the writer was created for. The file is synced and
// renamed in the background, so the response is not held up; until then
// the NAR is simply not cached yet.
func (w *Writer) Commit() {
	w.c.commits.Go(func() {
		err := w.err
		if err == nil && w.n != w.size {
			err = fmt.Errorf("%d bytes written, want %d", w.n, w.size)
		}
		if err == nil {
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
		c.byName[w.name] = c.lru.PushFront(&entry{w.name, w.size})
		c.size += w.size
		c.evictLocked()
	})
}

// Abort drops what was written.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
	w.c.done(w.name)
}
