package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/ipfs/kubo/misc/fsutil"
	"github.com/ipfs/kubo/plugin"
	"github.com/ipfs/kubo/repo"
	"github.com/ipfs/kubo/repo/fsrepo"
)

// PebbleType is the datastore type of new embedded repos: one pebble
// database for blocks, pins and kubo's own keys, compressed with zstd.
// kubo's stock "pebbleds" type has no setting for the codec, and flatfs
// (kubo's default) keeps each block uncompressed in a file of its own; see
// docs/gateway.md's Storage section for what each costs.
const PebbleType = "nixipfs-pebble"

// Datastore kinds for Options.Datastore.
const (
	DatastorePebble = "pebble"
	DatastoreFlatfs = "flatfs"
)

// Defaults of the nixipfs-pebble datastore. Each can be set in the repo's
// Datastore.Spec; only "path" is fixed once the repo exists.
const (
	pebbleZstdLevel  = 5
	pebbleBlockSize  = 2 << 20
	pebbleIndexBlock = 64 << 10
	pebbleMemTable   = 32 << 20
)

// defaultPebbleCache is the block cache of a repo whose Datastore.Spec sets
// no cacheSize: an eighth of the machine's memory, from 128 MiB to 1 GiB.
// It holds decompressed blocks, so a NAR rendered again (no NAR cache, or
// a path beside one just rendered: a small path shares its 2 MiB blocks
// with its neighbours) is not decompressed again. It fills only as blocks
// are read.
func defaultPebbleCache() int {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 128 << 20
	}
	return int(min(max(uint64(si.Totalram)*uint64(si.Unit)/8, 128<<20), 1<<30))
}

// pebbleSpec is the Datastore.Spec of a new embedded repo.
func pebbleSpec() map[string]any {
	return map[string]any{
		"type":      PebbleType,
		"prefix":    "pebble.datastore",
		"path":      "pebble",
		"zstdLevel": pebbleZstdLevel,
		"blockSize": pebbleBlockSize,
		"layout":    layoutOrdered,
	}
}

// pebblePlugin registers PebbleType with kubo's repo loader.
type pebblePlugin struct{}

var _ plugin.PluginDatastore = pebblePlugin{}

func (pebblePlugin) Name() string                   { return "nixipfs-ds-pebble" }
func (pebblePlugin) Version() string                { return "1" }
func (pebblePlugin) Init(*plugin.Environment) error { return nil }
func (pebblePlugin) DatastoreTypeName() string      { return PebbleType }

type pebbleConfig struct {
	path      string
	zstdLevel int
	blockSize int
	cacheSize int
	layout    string // "" (blocks under their hash) or layoutOrdered
}

func (pebblePlugin) DatastoreConfigParser() fsrepo.ConfigFromMap {
	return func(params map[string]any) (fsrepo.DatastoreConfig, error) {
		c := pebbleConfig{zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize, cacheSize: defaultPebbleCache()}
		p, ok := params["path"].(string)
		if !ok || p == "" {
			return nil, fmt.Errorf("%s datastore: 'path' is missing or not a string", PebbleType)
		}
		c.path = p
		if l, ok := params["layout"]; ok {
			if l != layoutOrdered {
				return nil, fmt.Errorf("%s datastore: layout %v: want %q or none", PebbleType, l, layoutOrdered)
			}
			c.layout = layoutOrdered
		}
		for key, dst := range map[string]*int{"zstdLevel": &c.zstdLevel, "blockSize": &c.blockSize, "cacheSize": &c.cacheSize} {
			v, ok := params[key]
			if !ok {
				continue
			}
			// JSON numbers arrive as float64, Go literals as int.
			switch n := v.(type) {
			case float64:
				*dst = int(n)
			case int:
				*dst = n
			default:
				return nil, fmt.Errorf("%s datastore: %q is %T, want a number", PebbleType, key, v)
			}
		}
		if c.zstdLevel < 1 || c.zstdLevel > 19 {
			return nil, fmt.Errorf("%s datastore: zstdLevel %d: want 1 to 19", PebbleType, c.zstdLevel)
		}
		if c.blockSize < 4<<10 || c.blockSize > 16<<20 {
			return nil, fmt.Errorf("%s datastore: blockSize %d: want 4 KiB to 16 MiB", PebbleType, c.blockSize)
		}
		if c.cacheSize < 8<<20 {
			return nil, fmt.Errorf("%s datastore: cacheSize %d: want at least 8 MiB", PebbleType, c.cacheSize)
		}
		return &c, nil
	}
}

// DiskSpec is what kubo checks against the repo on every open: the place
// and the layout, so the codec settings may change (pebble records each
// block's codec), and a version that does not know the ordered layout
// refuses such a repo instead of reading index entries as blocks.
func (c *pebbleConfig) DiskSpec() fsrepo.DiskSpec {
	spec := map[string]any{"type": PebbleType, "path": c.path}
	if c.layout != "" {
		spec["layout"] = c.layout
	}
	return spec
}

func (c *pebbleConfig) Create(repoPath string) (repo.Datastore, error) {
	p := c.path
	if !filepath.IsAbs(p) {
		p = filepath.Join(repoPath, p)
	}
	if err := fsutil.DirWritable(p); err != nil {
		return nil, err
	}
	// A directory without a pebble manifest is a new repo.
	manifests, err := filepath.Glob(filepath.Join(p, "MANIFEST-*"))
	if err != nil {
		return nil, err
	}
	d, err := pebbleds.NewDatastore(p, pebbleds.WithCacheSize(int64(c.cacheSize)), pebbleds.WithPebbleOpts(c.options()))
	if err != nil {
		return nil, fmt.Errorf("open pebble datastore %s: %w", p, err)
	}
	ord, err := openOrdered(d.DB, len(manifests) == 0 && c.layout == layoutOrdered)
	if err == nil && (ord != nil) != (c.layout == layoutOrdered) {
		err = fmt.Errorf("the repo's config says layout %q, its database the other", c.layout)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open pebble datastore %s: %w", p, err)
	}
	s := &pebbleStore{d: d, ord: ord, path: p, opts: c.options}
	if s.repo, err = filepath.Abs(repoPath); err == nil {
		openStores.Store(s.repo, s)
	}
	return s, nil
}

// openStores are the open nixipfs-pebble datastores by absolute repo path.
// kubo's loader builds a repo's datastore from its config and wraps it in
// layers that expose nothing, so this is how a Node reaches the store of
// its repo (Node.Recycle): process-wide, as the loader is.
var openStores sync.Map

// storeOf returns the open nixipfs-pebble datastore of the repo, or nil.
func storeOf(repoPath string) *pebbleStore {
	abs, err := filepath.Abs(repoPath)
	if err != nil {
		return nil
	}
	if s, ok := openStores.Load(abs); ok {
		return s.(*pebbleStore)
	}
	return nil
}

// options tunes pebble for a content store: values are blocks (mostly 1 KiB
// to 1 MiB, written once, keyed by a random hash), not small rows updated in
// place.
func (c *pebbleConfig) options() *pebble.Options {
	o := &pebble.Options{
		Logger:             pebbleLogger{},
		FormatMajorVersion: pebble.FormatNewest,
		// pebble's 4 MiB memtable flushes every few 1 MiB chunks; each flush
		// is an L0 table, and their compactions dominated import time. At
		// 8 MiB an import's 8 MiB batches were each a "large batch" (over
		// half a memtable): queued as a memtable of its own, flushed on its
		// own, its buffer not reusable. At 32 MiB they are applied to the
		// memtable, and the batch is reused (ordered.commit): W2 publishes
		// in 8.2-8.5 s instead of 9.8-10.2 s. The cost is the logs pebble
		// preallocates and recycles, 110% of a memtable each (reserveWrite).
		MemTableSize: pebbleMemTable,
	}
	// Flushes, compactions, blob rewrites and write stalls go to debug
	// logging (nixipfs -v); background errors and corruption are errors.
	// Without a listener pebble reports none of them.
	events := pebble.MakeLoggingEventListener(pebbleLogger{})
	o.EventListener = &events
	// Blocks go to blob files when a memtable is flushed: each blob file
	// holds blocks written close together in time (files of the same few
	// store paths, which compress well together and are rendered together).
	// Compactions then move only keys and blob references; the values are
	// written once.
	o.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:     true,
			MinimumSize: 64,
			// pebble's suggested 10 makes compactions rewrite values as soon
			// as a dozen flushes overlap, which every random-keyed flush does.
			MaxBlobReferenceDepth: 100,
			RewriteMinimumAge:     time.Hour,
			TargetGarbageRatio:    0.2,
		}
	}
	o.Experimental.SpanPolicyFunc = smallReadPolicy
	prof := zstdProfile(c.zstdLevel)
	o.ApplyCompressionSettings(func() pebble.DBCompressionSettings {
		return pebble.UniformDBCompressionSettings(prof)
	})
	// Large blocks compress better (zstd finds the same words across
	// neighbouring files; a blob file holds one flush, so a block as large
	// as a flush's compressed output gains nothing more), but a point read
	// decompresses a whole block. Blob files (written by flushes at L0 and
	// by rewrites at the last level) take the large size; keys in the levels
	// between stay in small blocks.
	for i := range o.Levels {
		o.Levels[i].BlockSize = pebbleIndexBlock
	}
	o.Levels[0].BlockSize = c.blockSize
	o.Levels[len(o.Levels)-1].BlockSize = c.blockSize
	return o
}

// zstdProfile is pebble's zstd profile at another level. pebble only exports
// level 3; its zstd codec takes any level and records only the algorithm in
// each block, so readers need nothing more.
func zstdProfile(level int) *block.CompressionProfile {
	p := *block.GoodCompression
	p.Name = fmt.Sprintf("nixipfs-zstd%d", level)
	p.DataBlocks.Level = uint8(level)
	p.ValueBlocks.Level = uint8(level)
	// Incompressible blocks (already compressed archives) are kept raw, so
	// reading them costs no decompression.
	p.MinReductionPercent = 5
	p.AdaptiveReductionCutoffPercent = 0
	return &p
}

// Free space pebble is never asked to do without. pebble treats a failed
// write-ahead log as fatal (it panics, leaving a mutex unlocked, so the
// process dies), so writes are refused with ENOSPC while they still fit:
// a write can fill the memtable, and while it is flushed (up to a memtable
// written, and compactions of keys after it) the next one fills: room for
// two new logs (110% of a memtable each) and a flush. Deletes and syncs,
// which free space or write almost nothing, need only a log.
const (
	reserveWrite  = 128 << 20
	reserveDelete = 40 << 20
)

// pebbleStore is go-ds-pebble made safe for a long-running node: it refuses
// writes before the disk is full (above), answers an error instead of
// pebble's panic when used after Close (kubo's bootstrap loop can outlive
// the node by a moment), and closes so that a closed repo takes only its
// data: pebble keeps up to four write-ahead logs, each preallocated to the
// memtable size, for reuse, and deletes the ones no longer needed only when
// it next opens.
type pebbleStore struct {
	d    *pebbleds.Datastore
	ord  *ordered // nil in repos made before the ordered layout
	path string
	repo string // absolute repo path, the key in openStores
	opts func() *pebble.Options

	mu     sync.RWMutex // held for reading by every operation, for writing by Close
	closed bool
}

var (
	_ repo.Datastore         = (*pebbleStore)(nil)
	_ ds.PersistentDatastore = (*pebbleStore)(nil)
)

var errClosed = errors.New("pebble datastore is closed")

// read runs f unless the store is closed; Close waits for it to return.
func read[T any](s *pebbleStore, f func() (T, error)) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		var zero T
		return zero, errClosed
	}
	return f()
}

// write runs f unless the store is closed or the disk has less than
// reserve bytes free.
func (s *pebbleStore) write(reserve uint64, f func() error) error {
	_, err := read(s, func() (struct{}, error) {
		if err := s.room(reserve); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, f()
	})
	return err
}

// room refuses a write that could leave pebble short of the space it needs.
func (s *pebbleStore) room(reserve uint64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.path, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", s.path, err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < reserve {
		return fmt.Errorf("IPFS datastore %s: %w (%d MiB free, %d MiB kept in reserve)", s.path, syscall.ENOSPC, free>>20, reserve>>20)
	}
	return nil
}

// blocks says whether key is a block stored in the ordered layout.
func (s *pebbleStore) blocks(key ds.Key) bool { return s.ord != nil && isBlockKey(key) }

func (s *pebbleStore) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	if s.blocks(key) {
		return read(s, func() ([]byte, error) { return s.ord.get(key) })
	}
	return read(s, func() ([]byte, error) { return s.d.Get(ctx, key) })
}

func (s *pebbleStore) Has(ctx context.Context, key ds.Key) (bool, error) {
	if s.blocks(key) {
		return read(s, func() (bool, error) { return s.ord.has(key) })
	}
	return read(s, func() (bool, error) { return s.d.Has(ctx, key) })
}

func (s *pebbleStore) GetSize(ctx context.Context, key ds.Key) (int, error) {
	n, err := read(s, func() (int, error) {
		if s.blocks(key) {
			return s.ord.getSize(key)
		}
		return s.d.GetSize(ctx, key)
	})
	if errors.Is(err, errClosed) {
		return -1, err
	}
	return n, err
}

// Query's results outlive the call: go-ds-pebble ends their goroutine
// itself when it closes.
func (s *pebbleStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	return read(s, func() (query.Results, error) {
		if s.ord != nil && touchesBlocks(q.Prefix) {
			return s.ord.query(func(q query.Query) (query.Results, error) { return s.d.Query(ctx, q) }, q)
		}
		return s.d.Query(ctx, q)
	})
}

// DiskUsage is what the database's files take on disk, as du counts them.
// pebble's own figure (go-ds-pebble's answer) leaves out its blob files,
// where the blocks are: 2 MB for a 140 MB repo.
func (s *pebbleStore) DiskUsage(context.Context) (uint64, error) {
	return read(s, func() (uint64, error) {
		entries, err := os.ReadDir(s.path)
		if err != nil {
			return 0, fmt.Errorf("disk usage of %s: %w", s.path, err)
		}
		var total uint64
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				continue // removed by a compaction meanwhile
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += uint64(st.Blocks) * 512
			} else {
				total += uint64(fi.Size())
			}
		}
		return total, nil
	})
}

func (s *pebbleStore) Put(ctx context.Context, key ds.Key, value []byte) error {
	if s.blocks(key) {
		return s.write(reserveWrite, func() error { return s.ord.commit([]op{{key: key, value: value, small: smallReads(ctx)}}) })
	}
	return s.write(reserveWrite, func() error { return s.d.Put(ctx, key, value) })
}

func (s *pebbleStore) Delete(ctx context.Context, key ds.Key) error {
	if s.blocks(key) {
		return s.write(reserveDelete, func() error { return s.ord.commit([]op{{key: key, delete: true}}) })
	}
	return s.write(reserveDelete, func() error { return s.d.Delete(ctx, key) })
}

func (s *pebbleStore) Sync(ctx context.Context, prefix ds.Key) error {
	return s.write(reserveDelete, func() error { return s.d.Sync(ctx, prefix) })
}

func (s *pebbleStore) Batch(ctx context.Context) (ds.Batch, error) {
	return read(s, func() (ds.Batch, error) {
		if s.ord != nil {
			return &pebbleBatch{b: &orderedBatch{o: s.ord}, s: s}, nil
		}
		b, err := s.d.Batch(ctx)
		if err != nil {
			return nil, err
		}
		return &pebbleBatch{b: b, s: s}, nil
	})
}

// pebbleBatch checks the store and the free space when it commits.
type pebbleBatch struct {
	b    ds.Batch
	s    *pebbleStore
	puts bool
}

func (b *pebbleBatch) Put(ctx context.Context, key ds.Key, value []byte) error {
	b.puts = true
	return b.b.Put(ctx, key, value)
}

func (b *pebbleBatch) Delete(ctx context.Context, key ds.Key) error {
	return b.b.Delete(ctx, key)
}

func (b *pebbleBatch) Commit(ctx context.Context) error {
	reserve := uint64(reserveDelete)
	if b.puts {
		reserve = reserveWrite
	}
	return b.s.write(reserve, func() error { return b.b.Commit(ctx) })
}

func (s *pebbleStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	openStores.CompareAndDelete(s.repo, s)
	if s.ord != nil {
		s.ord.close()
	}
	if err := s.room(reserveDelete); err != nil {
		// Closing flushes the memtable, which could meet a full disk.
		// Without the flush nothing is lost: the next open replays the log.
		slog.Warn("closing the IPFS datastore without a flush", "err", err)
		return s.d.DB.Close()
	}
	if err := s.d.Close(); err != nil {
		return err
	}
	db, err := pebble.Open(s.path, s.opts())
	if err != nil {
		return fmt.Errorf("reopen pebble datastore %s to drop old logs: %w", s.path, err)
	}
	return db.Close()
}

// pebbleLogger sends pebble's chatter (every flush and compaction) to debug
// and its errors to slog.
type pebbleLogger struct{}

func (pebbleLogger) Infof(format string, args ...any) {
	if slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		slog.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (pebbleLogger) Errorf(format string, args ...any) {
	slog.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf must not return: pebble calls it when its files are inconsistent.
func (pebbleLogger) Fatalf(format string, args ...any) {
	panic("pebble: " + fmt.Sprintf(format, args...))
}
