package ipfsnode

import (
	"bytes"
	"context"
	"testing"
	"unsafe"

	ds "github.com/ipfs/go-datastore"
)

func sameArray(a, b []byte) bool { return unsafe.SliceData(a) == unsafe.SliceData(b) }

func TestBufPool(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		pooled bool // a buffer given back is lent again
		cap    int
	}{
		{"small value: not pooled", 32<<10 - 1, false, 32<<10 - 1},
		{"smallest pooled", 32 << 10, true, 64 << 10},
		{"64 KiB", 64 << 10, true, 64 << 10},
		{"a chunk", 1 << 20, true, 1 << 20},
		{"a chunk and its dag-pb wrapping", 1<<20 + 14, true, 2 << 20},
		{"largest pooled", 2 << 20, true, 2 << 20},
		{"over 2 MiB: not pooled", 2<<20 + 1, false, 2<<20 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newBufPool()
			a := p.get(tc.n)
			if len(a) != tc.n || cap(a) != tc.cap {
				t.Fatalf("get(%d): len %d cap %d, want cap %d", tc.n, len(a), cap(a), tc.cap)
			}
			p.put(a)
			b := p.get(tc.n)
			if sameArray(a, b) != tc.pooled {
				t.Fatalf("buffer given back lent again: %v, want %v", sameArray(a, b), tc.pooled)
			}
		})
	}

	t.Run("only what it lent, once", func(t *testing.T) {
		p := newBufPool()
		p.put(make([]byte, 1<<20)) // not lent: ignored
		a := p.get(1 << 20)
		p.put(a[1:]) // not the buffer's start: ignored
		if b := p.get(1 << 20); sameArray(a, b) {
			t.Fatal("a slice inside a lent buffer was taken back")
		}
		p.put(a)
		p.put(a) // twice: the second is ignored
		b, c := p.get(1<<20), p.get(1<<20)
		if !sameArray(a, b) || sameArray(b, c) {
			t.Fatal("a buffer given back twice was lent twice")
		}
	})

	t.Run("forgets buffers kept for two generations", func(t *testing.T) {
		p := newBufPool()
		kept := p.get(1 << 20)
		for range 2 * bufLentMax {
			p.get(64 << 10) // lent, never given back
		}
		p.put(kept)
		if b := p.get(1 << 20); sameArray(kept, b) {
			t.Fatal("a buffer lent two generations ago was taken back")
		}
		if len(p.lent)+len(p.old) > 2*bufLentMax {
			t.Fatalf("remembers %d buffers, at most %d", len(p.lent)+len(p.old), 2*bufLentMax)
		}
	})
}

// Blocks read from an ordered store come in lent buffers; given back
// through the repo's registered store, the next read reuses one.
func TestStoreRecycle(t *testing.T) {
	ctx := context.Background()
	repoPath := t.TempDir()
	s := openTestStore(t, repoPath, layoutOrdered)
	if storeOf(repoPath) != s {
		t.Fatal("the open store is not registered under its repo path")
	}
	a, b := bytes.Repeat([]byte{'a'}, 1<<20), bytes.Repeat([]byte{'b'}, 1<<20)
	for k, v := range map[string][]byte{"/blocks/a": a, "/blocks/b": b} {
		if err := s.Put(ctx, ds.NewKey(k), v); err != nil {
			t.Fatal(err)
		}
	}
	ga, err := s.Get(ctx, ds.NewKey("/blocks/a"))
	if err != nil || !bytes.Equal(ga, a) {
		t.Fatalf("Get a: %v", err)
	}
	storeOf(repoPath).ord.bufs.put(ga)
	gb, err := s.Get(ctx, ds.NewKey("/blocks/b"))
	if err != nil || !bytes.Equal(gb, b) {
		t.Fatalf("Get b: %v", err)
	}
	if !sameArray(ga, gb) {
		t.Fatal("the read after a buffer was given back did not reuse it")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if storeOf(repoPath) != nil {
		t.Fatal("a closed store stays registered")
	}
}
