package ipfsnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// Write-ordered blocks. pebble sorts what a memtable flush writes by key,
// and a block's key is its hash, so the blob file of a flush held its
// blocks in random order: rendering one store path decompressed every 2 MiB
// block of every flush it was written in, shared with other paths. In a
// repo with the ordered layout a block is two entries written in one
// pebble batch:
//
//	/blocks/<hash>            the index: sequence number and size
//	/nixipfs-data/<sequence>  the block, in a blob file
//
// Sequence numbers grow with every block written, so a flush writes blocks
// in the order they were imported, which is the order a render reads them:
// a render decompresses each block of the blob files once, in order.
// Because both entries are in one batch, a crash leaves both or neither.
//
// Repos created before keep their blocks under /blocks/<hash> and are read
// and written as before; layoutKey marks the repos with the ordered layout.
//
// Small blocks put under a context from WithSmallReads (PathInfo records,
// manifest shards) get data entries of their own, /nixipfs-data/m<sequence>,
// which sort after every other data entry and which pebble keeps in its
// tables instead of blob files (smallReadPolicy). A narinfo reads one such
// block at a time: in a blob file it decompressed the 2 MiB block holding
// it, shared with NAR data; in the tables its neighbours are other records
// and shards.
const (
	blocksPrefix  = "/blocks/"
	dataPrefix    = "/nixipfs-data/"
	smallPrefix   = dataPrefix + "m"
	layoutKey     = "/nixipfs-layout"
	layoutOrdered = "ordered-1"
	// smallMax bounds the blocks WithSmallReads keeps in the tables; larger
	// ones go to blob files like any block.
	smallMax = 64 << 10
)

type smallReadsKey struct{}

// WithSmallReads marks ctx: blocks put under it (up to 64 KiB) are read one
// at a time, not in a DAG's order, and are kept apart from the NAR data.
func WithSmallReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, smallReadsKey{}, true)
}

func smallReads(ctx context.Context) bool { return ctx.Value(smallReadsKey{}) != nil }

// smallReadPolicy keeps the values of the small-read data entries in
// pebble's tables; every other key follows the value separation policy.
func smallReadPolicy(start []byte) (pebble.SpanPolicy, []byte, error) {
	lo, hi := []byte(smallPrefix), prefixEnd(smallPrefix)
	switch {
	case bytes.Compare(start, lo) < 0:
		return pebble.SpanPolicy{}, lo, nil
	case bytes.Compare(start, hi) < 0:
		return pebble.SpanPolicy{ValueStoragePolicy: pebble.ValueStorageLowReadLatency}, hi, nil
	}
	return pebble.SpanPolicy{}, nil, nil
}

// commitRetain bounds the buffer that commit's batch keeps for reuse: import
// batches are about 8 MiB (batchBytes plus a block), and the buffer grows by
// doubling.
const commitRetain = 32 << 20

// ordered does the block operations of a repo with the ordered layout.
type ordered struct {
	db *pebble.DB
	// mu makes check-then-write of a block atomic: two writers of the same
	// block would otherwise leave one data entry no index points to.
	mu    sync.Mutex
	seq   uint64                    // last sequence number used, under mu
	batch *pebble.Batch             // reused by commit, under mu
	bufs  *bufPool                  // what reads copy values into
	hot   atomic.Pointer[hotBlocks] // nil: none (Node.KeepHotBlocks)

	readers chan *reader // kept for get
	// Commits that wrote blocks, and that deleted blocks: what a reader
	// made before them does not see.
	writes, deletes atomic.Uint64
	// A get takes no reader older than maxAge, and expire closes every kept
	// reader maxAge after one was put back: an idle node would otherwise
	// hold on to memtables and files for good.
	expiring atomic.Bool // expire is due
	expMu    sync.Mutex  // held by expire and close, so close waits for it
	maxAge   time.Duration
}

// reader is a pair of pebble iterators that block reads reuse. A pebble Get
// builds an iterator over every level of the tree and drops it; that was a
// third of the cost of reading a block in a render (perf, --nar-cache-mb 0),
// and a kept iterator seeks on from where it is (a render reads data
// entries in order). An iterator sees the database as it was when made, so
// get looks again with a fresh reader when a block is not found and blocks
// were written since, readers made before a delete are dropped, and a
// reader is kept for at most readerMaxAge (it holds on to the memtables and
// files it sees).
type reader struct {
	refs, data      *pebble.Iterator
	writes, deletes uint64 // the counts when made
	made            time.Time
}

const (
	readersKept  = 8
	readerMaxAge = time.Second
)

func (o *ordered) newReader() (*reader, error) {
	// The counts are read first: a commit after them may or may not be
	// seen, and is then looked for again.
	r := &reader{writes: o.writes.Load(), deletes: o.deletes.Load(), made: time.Now()}
	var err error
	if r.refs, err = o.db.NewIter(&pebble.IterOptions{LowerBound: []byte(blocksPrefix), UpperBound: prefixEnd(blocksPrefix)}); err != nil {
		return nil, err
	}
	if r.data, err = o.db.NewIter(&pebble.IterOptions{LowerBound: []byte(dataPrefix), UpperBound: prefixEnd(dataPrefix)}); err != nil {
		r.refs.Close()
		return nil, err
	}
	return r, nil
}

func (r *reader) close() {
	r.refs.Close()
	r.data.Close()
}

// takeReader returns a kept reader that has seen every delete, or a new one.
func (o *ordered) takeReader() (*reader, error) {
	for {
		select {
		case r := <-o.readers:
			if r.deletes == o.deletes.Load() && time.Since(r.made) < o.maxAge {
				return r, nil
			}
			r.close()
		default:
			return o.newReader()
		}
	}
}

// putReader keeps r for another get, and has expire due.
func (o *ordered) putReader(r *reader) {
	if o.putBack(r) && o.expiring.CompareAndSwap(false, true) {
		time.AfterFunc(o.maxAge, o.expire)
	}
}

// putBack keeps r, or closes it if as many are kept as may be.
func (o *ordered) putBack(r *reader) bool {
	select {
	case o.readers <- r:
		return true
	default:
		r.close()
		return false
	}
}

// expire closes the kept readers. A reader put back after it starts has
// another expire due.
func (o *ordered) expire() {
	o.expMu.Lock()
	defer o.expMu.Unlock()
	o.expiring.Store(false)
	o.drain()
}

// close closes the kept readers, after an expire running now: pebble
// refuses to close with iterators open. No get may run during or after it;
// an expire due later finds nothing kept.
func (o *ordered) close() {
	o.expMu.Lock()
	defer o.expMu.Unlock()
	o.drain()
}

func (o *ordered) drain() {
	for {
		select {
		case r := <-o.readers:
			r.close()
		default:
			return
		}
	}
}

func isBlockKey(k ds.Key) bool { return strings.HasPrefix(k.String(), blocksPrefix) }

// key is the data entry of r: its prefix and sixteen hex digits of its
// sequence number (lastSeq reads them back).
func (r ref) key() []byte {
	prefix := dataPrefix
	if r.small {
		prefix = smallPrefix
	}
	return fmt.Appendf(nil, "%s%016x", prefix, r.seq)
}

// openOrdered sets the layout of a repo: ordered if it is new (fresh) or
// was created with it, the old one otherwise. It returns nil for the old.
func openOrdered(db *pebble.DB, fresh bool) (*ordered, error) {
	if fresh {
		if err := db.Set([]byte(layoutKey), []byte(layoutOrdered), pebble.Sync); err != nil {
			return nil, fmt.Errorf("record the datastore layout: %w", err)
		}
	}
	v, closer, err := db.Get([]byte(layoutKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the datastore layout: %w", err)
	}
	layout := string(v)
	closer.Close()
	if layout != layoutOrdered {
		return nil, fmt.Errorf("datastore layout %q: this version knows only %q", layout, layoutOrdered)
	}
	o := &ordered{db: db, bufs: newBufPool(), readers: make(chan *reader, readersKept), maxAge: readerMaxAge}
	// The last sequence number is the larger of the last data entry of
	// each kind.
	for _, p := range []string{dataPrefix, smallPrefix} {
		seq, err := lastSeq(db, p)
		if err != nil {
			return nil, fmt.Errorf("find the last block: %w", err)
		}
		o.seq = max(o.seq, seq)
	}
	return o, nil
}

// lastSeq is the sequence number of the last data entry named prefix and
// sixteen hex digits (0 if there is none).
func lastSeq(db *pebble.DB, prefix string) (uint64, error) {
	upper := prefixEnd(dataPrefix)
	if prefix == dataPrefix {
		upper = []byte(smallPrefix)
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: upper})
	if err != nil {
		return 0, err
	}
	var seq uint64
	if it.Last() {
		k := it.Key()
		if _, err := fmt.Sscanf(string(k[len(prefix):]), "%016x", &seq); err != nil {
			it.Close()
			return 0, fmt.Errorf("last block key %q: %w", k, err)
		}
	}
	return seq, it.Close()
}

func prefixEnd(p string) []byte {
	b := []byte(p)
	b[len(b)-1]++
	return b
}

// ref is an index entry: where the block is and its size. A small-read
// block's entry ends with one more byte, refSmall.
type ref struct {
	seq, size uint64
	small     bool
}

const refSmall = 1

func (r ref) encode() []byte {
	b := binary.AppendUvarint(nil, r.seq)
	b = binary.AppendUvarint(b, r.size)
	if r.small {
		b = append(b, refSmall)
	}
	return b
}

func decodeRef(b []byte) (ref, error) {
	seq, n := binary.Uvarint(b)
	if n <= 0 {
		return ref{}, errors.New("invalid block index entry")
	}
	size, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return ref{}, errors.New("invalid block index entry")
	}
	switch rest := b[n+m:]; {
	case len(rest) == 0:
		return ref{seq: seq, size: size}, nil
	case len(rest) == 1 && rest[0] == refSmall:
		return ref{seq: seq, size: size, small: true}, nil
	}
	return ref{}, errors.New("invalid block index entry")
}

func (o *ordered) ref(k ds.Key) (ref, error) {
	v, closer, err := o.db.Get(k.Bytes())
	if errors.Is(err, pebble.ErrNotFound) {
		return ref{}, ds.ErrNotFound
	}
	if err != nil {
		return ref{}, err
	}
	defer closer.Close()
	r, err := decodeRef(v)
	if err != nil {
		return ref{}, fmt.Errorf("%s: %w", k, err)
	}
	return r, nil
}

func (o *ordered) get(k ds.Key) ([]byte, error) {
	hot := o.hot.Load()
	if hot == nil {
		return o.getStored(k)
	}
	if b, ok := hot.get(k.String()); ok {
		return b, nil
	}
	gen := hot.generation()
	b, err := o.getStored(k)
	if err == nil {
		hot.missed(k.String(), b, gen, o.bufs.forget)
	}
	return b, err
}

// getHot returns block k if it is among the hot blocks.
func (o *ordered) getHot(k ds.Key) ([]byte, bool) {
	if hot := o.hot.Load(); hot != nil {
		return hot.get(k.String())
	}
	return nil, false
}

// getStored reads block k from pebble.
func (o *ordered) getStored(k ds.Key) ([]byte, error) {
	r, err := o.takeReader()
	if err != nil {
		return nil, err
	}
	b, err := o.read(r, k)
	if errors.Is(err, ds.ErrNotFound) && r.writes != o.writes.Load() {
		// Perhaps written since the reader was made: look again.
		r.close()
		if r, err = o.newReader(); err != nil {
			return nil, err
		}
		b, err = o.read(r, k)
	}
	o.putReader(r)
	return b, err
}

// read reads block k through r.
func (o *ordered) read(r *reader, k ds.Key) ([]byte, error) {
	kb := k.Bytes()
	if !r.refs.SeekGE(kb) || !bytes.Equal(r.refs.Key(), kb) {
		if err := r.refs.Error(); err != nil {
			return nil, err
		}
		return nil, ds.ErrNotFound
	}
	v, err := r.refs.ValueAndErr()
	if err != nil {
		return nil, err
	}
	ref, err := decodeRef(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	dk := ref.key()
	if !r.data.SeekGE(dk) || !bytes.Equal(r.data.Key(), dk) {
		if err := r.data.Error(); err != nil {
			return nil, err
		}
		return nil, errMissing(k, ref.seq)
	}
	if v, err = r.data.ValueAndErr(); err != nil {
		return nil, err
	}
	return o.own(v), nil
}

// value reads the data entry r of block k.
func (o *ordered) value(k ds.Key, r ref) ([]byte, error) {
	v, closer, err := o.db.Get(r.key())
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errMissing(k, r.seq)
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return o.own(v), nil
}

// own copies v, which pebble lends, into a buffer of the pool.
func (o *ordered) own(v []byte) []byte {
	b := o.bufs.get(len(v))
	copy(b, v)
	return b
}

func errMissing(k ds.Key, seq uint64) error {
	return fmt.Errorf("%s: data entry %d is missing", k, seq)
}

func (o *ordered) has(k ds.Key) (bool, error) {
	_, err := o.ref(k)
	if errors.Is(err, ds.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (o *ordered) getSize(k ds.Key) (int, error) {
	r, err := o.ref(k)
	if err != nil {
		return -1, err
	}
	return int(r.size), nil
}

// op is one write of a batch.
type op struct {
	key    ds.Key
	value  []byte
	delete bool
	small  bool // put under WithSmallReads
}

// commit writes ops in one pebble batch: block puts as an index and a data
// entry (skipped if the block is there), block deletes of both entries,
// anything else as it is.
func (o *ordered) commit(ops []op) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	// One batch is kept and reused, its buffer sized for the largest
	// import batch: a fresh batch grew by doubling, copying, and allocated
	// twice the bytes it wrote (a third of an import's allocation).
	if o.batch == nil {
		o.batch = o.db.NewBatch(pebble.WithMaxRetainedSizeBytes(commitRetain))
	}
	b := o.batch
	defer b.Reset()
	put := map[string]bool{} // blocks put by this batch
	seq := o.seq
	var deleted []string
	for _, w := range ops {
		k := w.key.Bytes()
		switch {
		case !isBlockKey(w.key) && w.delete:
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		case !isBlockKey(w.key):
			if err := b.Set(k, w.value, nil); err != nil {
				return err
			}
		case w.delete:
			deleted = append(deleted, w.key.String())
			delete(put, string(k))
			r, err := o.ref(w.key)
			if errors.Is(err, ds.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if err := b.Delete(r.key(), nil); err != nil {
				return err
			}
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		default:
			if put[string(k)] {
				continue
			}
			ok, err := o.has(w.key)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			seq++
			r := ref{seq: seq, size: uint64(len(w.value)), small: w.small && len(w.value) <= smallMax}
			if err := b.Set(r.key(), w.value, nil); err != nil {
				return err
			}
			if err := b.Set(k, r.encode(), nil); err != nil {
				return err
			}
			put[string(k)] = true
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	if seq != o.seq {
		o.writes.Add(1)
	}
	if deleted != nil {
		o.deletes.Add(1)
		if hot := o.hot.Load(); hot != nil {
			hot.remove(deleted)
		}
	}
	o.seq = seq
	return nil
}

// orderedBatch collects a batch's writes for commit.
type orderedBatch struct {
	o   *ordered
	ops []op
}

func (b *orderedBatch) Put(ctx context.Context, key ds.Key, value []byte) error {
	b.ops = append(b.ops, op{key: key, value: value, small: smallReads(ctx)})
	return nil
}

func (b *orderedBatch) Delete(_ context.Context, key ds.Key) error {
	b.ops = append(b.ops, op{key: key, delete: true})
	return nil
}

func (b *orderedBatch) Commit(context.Context) error {
	err := b.o.commit(b.ops)
	b.ops = nil
	return err
}

// touchesBlocks says whether a query with this prefix may list blocks or
// their data entries.
func touchesBlocks(prefix string) bool {
	p := ds.NewKey(prefix).String()
	return p == "/" || strings.HasPrefix(p+"/", blocksPrefix) || strings.HasPrefix(p+"/", dataPrefix)
}

// query answers q over the underlying results of all keys under q's
// prefix: data entries and the layout mark are left out, and blocks get
// their values and sizes from the data entries.
func (o *ordered) query(raw func(query.Query) (query.Results, error), q query.Query) (query.Results, error) {
	inner := query.Query{Prefix: q.Prefix, KeysOnly: q.KeysOnly && !q.ReturnsSizes}
	res, err := raw(inner)
	if err != nil {
		return nil, err
	}
	it := query.Iterator{
		Next: func() (query.Result, bool) {
			for {
				r, ok := res.NextSync()
				if !ok || r.Error != nil {
					return r, ok
				}
				k := ds.RawKey(r.Key)
				switch {
				case strings.HasPrefix(r.Key, dataPrefix) || r.Key == layoutKey:
					continue
				case !isBlockKey(k):
					return r, true
				case inner.KeysOnly:
					r.Size = -1
					return r, true
				}
				ref, err := decodeRef(r.Value)
				if err != nil {
					return query.Result{Error: fmt.Errorf("%s: %w", r.Key, err)}, true
				}
				r.Size = int(ref.size)
				r.Value = nil
				if !q.KeysOnly {
					if r.Value, err = o.value(k, ref); err != nil {
						return query.Result{Error: err}, true
					}
				}
				return r, true
			}
		},
		Close: res.Close,
	}
	return query.NaiveQueryApply(q, query.ResultsFromIterator(q, it)), nil
}
