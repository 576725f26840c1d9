package ipfsnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

func openTestStore(t *testing.T, repoPath, layout string) *pebbleStore {
	t.Helper()
	c := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize, layout: layout}
	d, err := c.Create(repoPath)
	if err != nil {
		t.Fatal(err)
	}
	return d.(*pebbleStore)
}

// dataEntries lists the sequence keys of the block data entries.
func dataEntries(t *testing.T, s *pebbleStore) []string {
	t.Helper()
	it, err := s.d.DB.NewIter(&pebble.IterOptions{LowerBound: []byte(dataPrefix), UpperBound: prefixEnd(dataPrefix)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var keys []string
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, string(it.Key()))
	}
	return keys
}

func queryKeys(t *testing.T, s *pebbleStore, q query.Query) map[string]query.Entry {
	t.Helper()
	res, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]query.Entry{}
	for _, e := range all {
		m[e.Key] = e
	}
	return m
}

// A new repo stores blocks in write order behind a hash index: every
// datastore operation kubo uses answers as before, a block written twice
// is stored once, a delete removes both entries, and sequence numbers go on
// after a reopen.
func TestOrderedLayout(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	s := openTestStore(t, repo, layoutOrdered)
	if s.ord == nil {
		t.Fatal("a new repo does not have the ordered layout")
	}
	blk := func(i int) (ds.Key, []byte) {
		return ds.NewKey(fmt.Sprintf("/blocks/B%03d", i)), bytes.Repeat([]byte{byte(i)}, 100+i)
	}
	b, err := s.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		k, v := blk(i)
		for range 2 { // the same block twice in one batch
			if err := b.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Put(ctx, ds.NewKey("/pins/x"), []byte("pin")); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	k0, v0 := blk(0)
	if err := s.Put(ctx, k0, v0); err != nil { // and again in another write
		t.Fatal(err)
	}
	if got := dataEntries(t, s); len(got) != 10 {
		t.Fatalf("%d data entries for 10 distinct blocks", len(got))
	}
	check := func(i int, want bool) {
		t.Helper()
		k, v := blk(i)
		got, err := s.Get(ctx, k)
		has, herr := s.Has(ctx, k)
		size, serr := s.GetSize(ctx, k)
		if herr != nil || has != want {
			t.Fatalf("Has %s: %v, %v; want %v", k, has, herr, want)
		}
		if !want {
			if !errors.Is(err, ds.ErrNotFound) || !errors.Is(serr, ds.ErrNotFound) {
				t.Fatalf("Get/GetSize of deleted %s: %v, %v; want not found", k, err, serr)
			}
			return
		}
		if err != nil || !bytes.Equal(got, v) || serr != nil || size != len(v) {
			t.Fatalf("%s: Get %d bytes (%v), GetSize %d (%v); want %d bytes", k, len(got), err, size, serr, len(v))
		}
	}
	for i := range 10 {
		check(i, true)
	}
	if v, err := s.Get(ctx, ds.NewKey("/pins/x")); err != nil || string(v) != "pin" {
		t.Fatalf("other keys: %q, %v", v, err)
	}

	k3, _ := blk(3)
	if err := s.Delete(ctx, k3); err != nil {
		t.Fatal(err)
	}
	check(3, false)
	if got := dataEntries(t, s); len(got) != 9 {
		t.Fatalf("%d data entries after deleting one of 10 blocks", len(got))
	}

	// Queries see blocks with their values and sizes, never the data
	// entries or the layout mark.
	blocks := queryKeys(t, s, query.Query{Prefix: "/blocks", ReturnsSizes: true})
	all := queryKeys(t, s, query.Query{Prefix: "/"})
	keysOnly := queryKeys(t, s, query.Query{Prefix: "/blocks", KeysOnly: true})
	if len(blocks) != 9 || len(keysOnly) != 9 || len(all) != 10 {
		t.Fatalf("queries list %d blocks, %d keys only, %d keys in all; want 9, 9, 10", len(blocks), len(keysOnly), len(all))
	}
	for i := range 10 {
		k, v := blk(i)
		e, ok := blocks[k.String()]
		if i == 3 {
			if ok {
				t.Fatalf("deleted %s listed", k)
			}
			continue
		}
		if !ok || !bytes.Equal(e.Value, v) || e.Size != len(v) || !bytes.Equal(all[k.String()].Value, v) {
			t.Fatalf("query entry of %s: %d bytes, size %d; want %d", k, len(e.Value), e.Size, len(v))
		}
	}
	if _, ok := all["/pins/x"]; !ok {
		t.Fatal("query of / leaves out /pins/x")
	}

	before := dataEntries(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	legacy := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize}
	if d, err := legacy.Create(repo); err == nil || !strings.Contains(err.Error(), "layout") {
		if d != nil {
			d.Close()
		}
		t.Fatalf("a repo with the ordered layout opened by a config without it: %v", err)
	}
	s = openTestStore(t, repo, layoutOrdered)
	defer s.Close()
	if s.ord == nil {
		t.Fatal("a reopened repo lost the ordered layout")
	}
	k10, v10 := blk(10)
	if err := s.Put(ctx, k10, v10); err != nil {
		t.Fatal(err)
	}
	after := dataEntries(t, s)
	if !slices.Equal(after[:len(before)], before) || len(after) != len(before)+1 || after[len(after)-1] <= before[len(before)-1] {
		t.Fatalf("data entries after reopen and one put: %v, before: %v", after, before)
	}
	for i := range 11 {
		check(i, i != 3)
	}
}

// A repo made before the ordered layout keeps its blocks where they are and
// is read and written as before.
func TestOrderedLayoutOldRepo(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	c := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize}
	old, err := pebbleds.NewDatastore(filepath.Join(repo, "pebble"), pebbleds.WithPebbleOpts(c.options()))
	if err != nil {
		t.Fatal(err)
	}
	k := ds.NewKey("/blocks/OLD")
	if err := old.Put(ctx, k, []byte("old block")); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// Its config has no layout; one that says ordered does not fit it.
	cfg := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize, layout: layoutOrdered}
	if d, err := cfg.Create(repo); err == nil || !strings.Contains(err.Error(), "layout") {
		if d != nil {
			d.Close()
		}
		t.Fatalf("an old repo opened with the ordered layout in its config: %v", err)
	}
	s := openTestStore(t, repo, "")
	defer s.Close()
	if s.ord != nil {
		t.Fatal("an existing repo was switched to the ordered layout")
	}
	if v, err := s.Get(ctx, k); err != nil || string(v) != "old block" {
		t.Fatalf("old block: %q, %v", v, err)
	}
	k2 := ds.NewKey("/blocks/NEW")
	if err := s.Put(ctx, k2, []byte("new block")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, k2); err != nil || string(v) != "new block" {
		t.Fatalf("new block in an old repo: %q, %v", v, err)
	}
	if got := dataEntries(t, s); len(got) != 0 {
		t.Fatalf("old repo got data entries %v", got)
	}
}

// commit reuses one pebble batch: batches of every size, one of them more
// than half a memtable (which pebble takes over as a memtable of its own),
// each read back whole after the ones written after it, and after a reopen.
func TestOrderedCommitReuse(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	s := openTestStore(t, repo, layoutOrdered)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[ds.Key][]byte{}
	for i, n := range []int{3, 1, pebbleMemTable/2/(1<<20) + 4, 2, 40, 1} {
		b, err := s.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j := range n {
			size := 1 << 20
			if n == 40 {
				size = 1000 + j // many small blocks
			}
			v := make([]byte, size)
			for k := range v {
				v[k] = byte(rng.Uint32())
			}
			k := ds.NewKey(fmt.Sprintf("/blocks/C%02d-%03d", i, j))
			want[k] = v
			if err := b.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(ctx); err != nil {
			t.Fatalf("commit %d of %d blocks: %v", i, n, err)
		}
	}
	check := func(when string) {
		t.Helper()
		for k, v := range want {
			got, err := s.Get(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("%s: %s: %d bytes (%v), want %d bytes as written", when, k, len(got), err, len(v))
			}
		}
		if n := len(dataEntries(t, s)); n != len(want) {
			t.Fatalf("%s: %d data entries for %d blocks", when, n, len(want))
		}
	}
	check("after the last commit")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, repo, layoutOrdered)
	defer s.Close()
	check("after a reopen")
}

// Block reads reuse pebble iterators, which see the database as it was
// when they were made: a read still finds a block written after its
// iterator was made, does not find one deleted since, finds it again once
// it is put back, and the store closes with iterators kept.
func TestOrderedReaders(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, t.TempDir(), layoutOrdered)
	key := func(i int) ds.Key { return ds.NewKey(fmt.Sprintf("/blocks/R%04d", i)) }
	val := func(i int) []byte { return fmt.Appendf(nil, "block %d", i) }
	get := func(i int) error {
		t.Helper()
		v, err := s.Get(ctx, key(i))
		if err == nil && !bytes.Equal(v, val(i)) {
			t.Fatalf("%s: %q, want %q", key(i), v, val(i))
		}
		return err
	}
	for _, i := range []int{0, 1} {
		if err := s.Put(ctx, key(i), val(i)); err != nil {
			t.Fatal(err)
		}
		if err := get(i); err != nil { // block 1: the reader kept from block 0 predates it
			t.Fatalf("get %s after its put: %v", key(i), err)
		}
	}
	if err := s.Delete(ctx, key(0)); err != nil {
		t.Fatal(err)
	}
	if err := get(0); !errors.Is(err, ds.ErrNotFound) {
		t.Fatalf("get %s after its delete: %v, want not found", key(0), err)
	}
	if err := s.Put(ctx, key(0), val(0)); err != nil {
		t.Fatal(err)
	}
	if err := get(0); err != nil {
		t.Fatalf("get %s put again: %v", key(0), err)
	}

	// Readers racing a writer: every block written before a read began is
	// found.
	var written atomic.Int64
	written.Store(2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 2; i < 2000; i++ {
			if err := s.Put(ctx, key(i), val(i)); err != nil {
				t.Error(err)
				return
			}
			written.Store(int64(i + 1))
		}
		close(stop)
	})
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := written.Load()
				for _, i := range []int64{n - 1, rng.Int64N(n)} {
					if v, err := s.Get(ctx, key(int(i))); err != nil || !bytes.Equal(v, val(int(i))) {
						t.Errorf("get %s while blocks are written: %q, %v", key(int(i)), v, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("close with readers kept: %v", err)
	}
}

// Kept readers are closed once old even if no read comes: an idle node
// does not hold on to pebble's memtables and files.
func TestOrderedReadersExpire(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, t.TempDir(), layoutOrdered)
	defer s.Close()
	s.ord.maxAge = 20 * time.Millisecond
	k := ds.NewKey("/blocks/E")
	if err := s.Put(ctx, k, []byte("e")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k); err != nil {
		t.Fatal(err)
	}
	if len(s.ord.readers) != 1 {
		t.Fatalf("%d readers kept after a get, want 1", len(s.ord.readers))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.ord.readers) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d readers still kept 10 s after a get, with a maximum age of %v", len(s.ord.readers), s.ord.maxAge)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blobBytes is the size of the repo's blob files.
func blobBytes(t *testing.T, repo string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo, "pebble", "*.blob"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// Blocks put under WithSmallReads (up to smallMax) get data entries of their
// own, which pebble keeps in its tables, not in blob files: read, listed and
// deleted like any block, and counted in the sequence after a reopen.
func TestOrderedSmallReads(t *testing.T) {
	ctx := context.Background()
	small := WithSmallReads(ctx)
	repo := t.TempDir()
	s := openTestStore(t, repo, layoutOrdered)
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		return b
	}
	// 2 MiB of incompressible small blocks, as records and shards, through
	// a batch and through Put; one block too large to be kept apart; and
	// as much in ordinary blocks.
	want := map[ds.Key][]byte{}
	b, err := s.Batch(small)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1024 {
		k, v := ds.NewKey(fmt.Sprintf("/blocks/S%04d", i)), random(2048)
		want[k] = v
		if i%2 == 0 {
			err = b.Put(small, k, v)
		} else {
			err = s.Put(small, k, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(small); err != nil {
		t.Fatal(err)
	}
	large, largeV := ds.NewKey("/blocks/LARGE"), random(smallMax+1)
	if err := s.Put(small, large, largeV); err != nil {
		t.Fatal(err)
	}
	want[large] = largeV
	if err := s.d.DB.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := blobBytes(t, repo); n < smallMax || n > smallMax+64<<10 {
		t.Fatalf("blob files hold %d bytes after 2 MiB of small-read blocks and one of %d bytes", n, smallMax+1)
	}
	b, err = s.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1024 {
		k, v := ds.NewKey(fmt.Sprintf("/blocks/P%04d", i)), random(2048)
		want[k] = v
		if err := b.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.d.DB.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := blobBytes(t, repo); n < 2<<20 {
		t.Fatalf("blob files hold %d bytes after 2 MiB of ordinary blocks", n)
	}

	var smallEntries int
	for _, k := range dataEntries(t, s) {
		if strings.HasPrefix(k, smallPrefix) {
			smallEntries++
		}
	}
	if smallEntries != 1024 {
		t.Fatalf("%d small-read data entries, want 1024", smallEntries)
	}
	check := func() {
		t.Helper()
		for k, v := range want {
			got, err := s.Get(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Get %s: %d bytes, %v", k, len(got), err)
			}
		}
		listed := queryKeys(t, s, query.Query{Prefix: "/blocks"})
		if len(listed) != len(want) {
			t.Fatalf("query lists %d blocks, want %d", len(listed), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(listed[k.String()].Value, v) {
				t.Fatalf("query value of %s differs", k)
			}
		}
	}
	check()

	// Sequence numbers go on after the last entry of either kind: here a
	// small-read one.
	if err := s.Put(small, ds.NewKey("/blocks/S1024"), []byte("last")); err != nil {
		t.Fatal(err)
	}
	want[ds.NewKey("/blocks/S1024")] = []byte("last")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, repo, layoutOrdered)
	defer s.Close()
	last := s.ord.seq
	if last != 2050 {
		t.Fatalf("reopened at sequence %d, want 2050", last)
	}
	if err := s.Put(small, ds.NewKey("/blocks/S9999"), []byte("after")); err != nil {
		t.Fatal(err)
	}
	want[ds.NewKey("/blocks/S9999")] = []byte("after")
	if r, err := s.ord.ref(ds.NewKey("/blocks/S9999")); err != nil || !r.small || r.seq != last+1 {
		t.Fatalf("block put after reopen: %+v, %v; want small, sequence %d", r, err, last+1)
	}
	check()

	k0 := ds.NewKey("/blocks/S0000")
	if err := s.Delete(ctx, k0); err != nil {
		t.Fatal(err)
	}
	delete(want, k0)
	if _, err := s.Get(ctx, k0); !errors.Is(err, ds.ErrNotFound) {
		t.Fatalf("Get of a deleted small-read block: %v", err)
	}
	if got := len(dataEntries(t, s)); got != len(want) {
		t.Fatalf("%d data entries for %d blocks", got, len(want))
	}
	check()
}

func TestDecodeRef(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want ref
		ok   bool
	}{
		{"ordinary", ref{seq: 300, size: 70000}.encode(), ref{seq: 300, size: 70000}, true},
		{"small reads", ref{seq: 7, size: 900, small: true}.encode(), ref{seq: 7, size: 900, small: true}, true},
		{"written before small reads", []byte{0x81, 0x01, 0x10}, ref{seq: 129, size: 16}, true},
		{"unknown flag", []byte{1, 2, 2}, ref{}, false},
		{"trailing bytes", []byte{1, 2, 1, 0}, ref{}, false},
		{"no size", []byte{1}, ref{}, false},
		{"empty", nil, ref{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRef(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("decodeRef(%x) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}
