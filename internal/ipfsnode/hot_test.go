package ipfsnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

func keepAsIs(b []byte) []byte { return b }

// A value is kept on its second read, served as it is from then on, and
// the least recently used leave when the set is full.
func TestHotBlocks(t *testing.T) {
	val := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1000) }
	key := func(i int) string { return fmt.Sprintf("/blocks/%d", i) }
	cost := int64(1000 + hotEntryCost)
	h := newHotBlocks(4 * cost)

	h.missed(key(1), val(1), h.generation(), keepAsIs)
	if _, ok := h.get(key(1)); ok {
		t.Fatal("a value read once is kept")
	}
	v := val(1)
	h.missed(key(1), v, h.generation(), keepAsIs)
	got, ok := h.get(key(1))
	if !ok || !sameArray(got, v) {
		t.Fatalf("a value read twice is not kept as it was given (kept: %v)", ok)
	}

	// Fill the set: 1 is used again, so 2 is the least recently used.
	for i := 2; i <= 4; i++ {
		h.missed(key(i), val(i), h.generation(), keepAsIs)
		h.missed(key(i), val(i), h.generation(), keepAsIs)
	}
	h.get(key(1))
	h.missed(key(5), val(5), h.generation(), keepAsIs)
	h.missed(key(5), val(5), h.generation(), keepAsIs)
	for i, want := range map[int]bool{1: true, 2: false, 3: true, 4: true, 5: true} {
		if got, ok := h.get(key(i)); ok != want || ok && !bytes.Equal(got, val(i)) {
			t.Errorf("block %d kept: %v, want %v", i, ok, want)
		}
	}
	if h.size > h.max {
		t.Errorf("holds %d bytes, bound %d", h.size, h.max)
	}
	if got := h.stats.Bytes.Load(); got != h.size {
		t.Errorf("stats: %d bytes, the set holds %d", got, h.size)
	}
	if kept, hits := h.stats.Kept.Load(), h.stats.Hits.Load(); kept != 5 || hits < 5 {
		t.Errorf("stats: %d kept, %d hits; want 5 kept, at least 5 hits", kept, hits)
	}

	// A value larger than a quarter of the set is never kept.
	big := bytes.Repeat([]byte{9}, int(h.max))
	h.missed(key(9), big, h.generation(), keepAsIs)
	h.missed(key(9), big, h.generation(), keepAsIs)
	if _, ok := h.get(key(9)); ok {
		t.Error("a value larger than a quarter of the set is kept")
	}

	// remove drops a value, and a value read before a remove is not kept:
	// the read may have raced with the delete of its block.
	h.remove([]string{key(3)})
	if _, ok := h.get(key(3)); ok {
		t.Error("a removed value is still served")
	}
	gen := h.generation()
	h.missed(key(6), val(6), gen, keepAsIs)
	h.remove([]string{key(7)})
	h.missed(key(6), val(6), gen, keepAsIs)
	if _, ok := h.get(key(6)); ok {
		t.Error("a value read before a remove is kept")
	}
	h.missed(key(6), val(6), h.generation(), keepAsIs)
	if _, ok := h.get(key(6)); !ok {
		t.Error("a value read twice after a remove is not kept")
	}
	if newHotBlocks(0) != nil {
		t.Error("a set of 0 bytes is not none")
	}
}

// In a store, a block read twice is then served from memory: the same
// bytes, not reused when its reader gives the buffer back, and gone when
// the block is deleted.
func TestStoreHotBlocks(t *testing.T) {
	ctx := context.Background()
	repoPath := t.TempDir()
	s := openTestStore(t, repoPath, layoutOrdered)
	defer s.Close()
	s.ord.hot.Store(newHotBlocks(64 << 20))
	a, b := bytes.Repeat([]byte{'a'}, 1<<20), bytes.Repeat([]byte{'b'}, 1<<20)
	ka, kb := ds.NewKey("/blocks/a"), ds.NewKey("/blocks/b")
	for k, v := range map[ds.Key][]byte{ka: a, kb: b} {
		if err := s.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	var reads [3][]byte
	for i := range reads {
		v, err := s.Get(ctx, ka)
		if err != nil || !bytes.Equal(v, a) {
			t.Fatalf("read %d of a: %v", i+1, err)
		}
		reads[i] = v
	}
	if sameArray(reads[0], reads[2]) {
		t.Fatal("the first read was kept")
	}
	if !sameArray(reads[1], reads[2]) {
		t.Fatal("the third read is not the value kept at the second")
	}
	// A reader gives the kept value back; the next read of another block
	// must not be copied into it.
	s.ord.bufs.put(reads[2])
	gb, err := s.Get(ctx, kb)
	if err != nil || !bytes.Equal(gb, b) {
		t.Fatalf("Get b: %v", err)
	}
	if sameArray(gb, reads[2]) || !bytes.Equal(reads[2], a) {
		t.Fatal("the pool reused a kept value")
	}
	if err := s.Delete(ctx, ka); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ka); !errors.Is(err, ds.ErrNotFound) {
		t.Fatalf("Get of a deleted block that was kept: %v, want not found", err)
	}
}
