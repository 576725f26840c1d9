package ipfsnode

import (
	"container/list"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"syscall"
)

// hotBlocks keeps the values of blocks read more than once, in memory of
// their own, and hands them out as they are. pebble's cache holds blob
// blocks decompressed, but reading a block from it still takes two seeks
// (the index entry, then the data entry) and a copy out of pebble's buffer:
// with no NAR cache, where every request renders, that was a third of the
// daemon's CPU. A block is immutable (its key is its hash), so a value kept
// here is shared by every reader; readers never write to block data, and a
// value kept is one the pool (bufPool) lent and then forgot, so a reader
// giving it back (Node.Recycle) does not have it reused under the others.
// Keeping a value copies nothing.
//
// A block enters only on its second read within a window of recent misses:
// a first request reads each block once, and keeping them all would cost it
// fresh memory for each. When full, the least recently used values leave;
// a reader still holding one keeps it (it is garbage once dropped). Who
// should keep hot blocks: see Node.KeepHotBlocks.
type hotBlocks struct {
	mu   sync.Mutex
	max  int64
	size int64
	lru  *list.List               // *hotEntry, most recently used first
	byK  map[string]*list.Element // by block key
	// seen and seenOld are the keys of recent misses, in two generations
	// of at most seenMax each (a bounded set with no per-key age).
	seen, seenOld map[uint64]struct{}
	seenMax       int
	seed          maphash.Seed
	// gen counts removals: a value read before one is not kept, as its
	// block may be gone (see missed).
	gen   atomic.Uint64
	stats HotStats
}

// HotStats are the figures of a node's hot blocks, for metrics.
type HotStats struct {
	Hits  atomic.Int64 // reads answered from memory
	Kept  atomic.Int64 // blocks kept (on their second read)
	Bytes atomic.Int64 // held now, as the bound counts them
}

type hotEntry struct {
	key  string
	data []byte
}

// hotEntryCost is what a kept value costs beyond its bytes (the entry, its
// key, the map and list cells), so that many tiny blocks do not exceed the
// bound.
const hotEntryCost = 160

// newHotBlocks returns a hot set of at most size bytes, or nil if size is 0.
func newHotBlocks(size int64) *hotBlocks {
	if size <= 0 {
		return nil
	}
	return &hotBlocks{
		max:     size,
		lru:     list.New(),
		byK:     map[string]*list.Element{},
		seen:    map[uint64]struct{}{},
		seenOld: map[uint64]struct{}{},
		// A generation remembers as many misses as blocks of 16 KiB
		// would fill the set: enough for a working set that fits.
		seenMax: int(max(size/(16<<10), 4096)),
		seed:    maphash.MakeSeed(),
	}
}

// DefaultHotBlocks is a size for Node.KeepHotBlocks: a sixteenth of the
// machine's memory, from 32 MiB to 2 GiB.
func DefaultHotBlocks() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 32 << 20
	}
	return int64(min(max(uint64(si.Totalram)*uint64(si.Unit)/16, 32<<20), 2<<30))
}

// get returns the kept value of key, which the caller must not modify.
func (h *hotBlocks) get(key string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	el, ok := h.byK[key]
	if !ok {
		return nil, false
	}
	h.lru.MoveToFront(el)
	h.stats.Hits.Add(1)
	return el.Value.(*hotEntry).data, true
}

// generation is taken before a read from the store, for missed.
func (h *hotBlocks) generation() uint64 { return h.gen.Load() }

// missed tells the set that value was read from the store for key, in
// generation gen. If key was missed recently too, value is kept: keep
// returns it as a slice nobody will write to again (its reader may still
// read it). Else key is remembered. Nothing is kept if blocks were removed
// since gen: the read may have raced with the delete of this very block.
func (h *hotBlocks) missed(key string, value []byte, gen uint64, keep func([]byte) []byte) {
	cost := int64(cap(value)) + hotEntryCost
	if cost > h.max/4 {
		return
	}
	kh := maphash.String(h.seed, key)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.byK[key]; ok || h.gen.Load() != gen {
		return
	}
	_, again := h.seen[kh]
	if !again {
		_, again = h.seenOld[kh]
	}
	if !again {
		if len(h.seen) >= h.seenMax {
			h.seenOld, h.seen = h.seen, make(map[uint64]struct{}, h.seenMax)
		}
		h.seen[kh] = struct{}{}
		return
	}
	delete(h.seen, kh)
	delete(h.seenOld, kh)
	h.byK[key] = h.lru.PushFront(&hotEntry{key: key, data: keep(value)})
	h.size += cost
	h.stats.Kept.Add(1)
	for h.size > h.max {
		h.drop(h.lru.Back())
	}
	h.stats.Bytes.Store(h.size)
}

// drop removes el. Called with mu held.
func (h *hotBlocks) drop(el *list.Element) {
	e := el.Value.(*hotEntry)
	h.lru.Remove(el)
	delete(h.byK, e.key)
	h.size -= int64(cap(e.data)) + hotEntryCost
}

// remove forgets keys, whose blocks were deleted. Call it after the
// delete is committed.
func (h *hotBlocks) remove(keys []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen.Add(1)
	for _, k := range keys {
		if el, ok := h.byK[k]; ok {
			h.drop(el)
		}
	}
	h.stats.Bytes.Store(h.size)
}
