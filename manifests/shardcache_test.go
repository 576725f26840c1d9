package manifests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

func TestShardCacheEvictsByBytes(t *testing.T) {
	c := newShardCache(300)
	blk := func(i, size int) blocks.Block {
		data := fmt.Appendf(nil, "%0*d", size, i)
		return blocks.NewBlock(data)
	}
	a, b, d := blk(1, 100), blk(2, 100), blk(3, 100)
	c.add(a)
	c.add(b)
	c.add(d)
	if _, ok := c.get(a.Cid()); !ok { // a is now the most recent
		t.Fatal("a missing before the cache was full")
	}
	c.add(blk(4, 100)) // 400 bytes: the least recent (b) goes
	if _, ok := c.get(b.Cid()); ok {
		t.Fatal("b, the least recently used, was kept")
	}
	for _, k := range []blocks.Block{a, d} {
		if got, ok := c.get(k.Cid()); !ok || !slices.Equal(got.RawData(), k.RawData()) {
			t.Fatalf("%s: %v %v", k.Cid(), got, ok)
		}
	}
	if c.size != 300 || len(c.byCID) != 3 || c.order.Len() != 3 {
		t.Fatalf("size %d, %d entries, %d in order; want 300, 3, 3", c.size, len(c.byCID), c.order.Len())
	}
	c.add(blk(5, 301)) // over the whole budget: not cached, nothing evicted
	if c.size != 300 || len(c.byCID) != 3 {
		t.Fatalf("an oversized block changed the cache: size %d, %d entries", c.size, len(c.byCID))
	}
}

// TestUpdateReadsFromMemory checks what Local.Update relies on: the diff
// of an update's old and new version reads nothing but the shards the
// update held already, and once they are kept in a shardCache the next
// update over the same keys reads no shard from the DAGService.
func TestUpdateReadsFromMemory(t *testing.T) {
	ctx := context.Background()
	keys, vals := syntheticKeys(20_000, "cache")
	dserv := newCountingDAG()
	base, err := EmptyManifest(dserv).Update(ctx, toMap(keys, vals), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cache := newShardCache(defaultShardCacheBytes)
	load := func(v cid.Cid) *Manifest {
		t.Helper()
		m, err := LoadManifest(ctx, cachedDAG{DAGService: dserv, cache: cache}, v)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	repoint := func(seed int) map[string]cid.Cid {
		puts := map[string]cid.Cid{}
		for i, k := range keys[:300] {
			puts[k] = infoCID(seed + i)
		}
		return puts
	}

	cur := load(base.Version())
	dserv.reset()
	next, store, err := cur.update(ctx, repoint(1_000_000), nil, time.Now(), dserv)
	if err != nil {
		t.Fatal(err)
	}
	if dserv.gets.Load() == 0 {
		t.Fatal("the first update read no shard: the cache was not empty")
	}
	dserv.reset()
	added, removed, err := shardDiff(ctx, store, cur.Info().Entries, next.Info().Entries)
	if err != nil {
		t.Fatal(err)
	}
	if n := dserv.gets.Load(); n != 0 {
		t.Fatalf("the diff read %d blocks from the DAGService", n)
	}
	wantAdded, wantRemoved, err := shardDiff(ctx, dserv, cur.Info().Entries, next.Info().Entries)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added, wantAdded) || !slices.Equal(removed, wantRemoved) || len(added) == 0 {
		t.Fatalf("diff from memory: +%d -%d; from the DAGService: +%d -%d", len(added), len(removed), len(wantAdded), len(wantRemoved))
	}

	cache.keep(store)
	again := load(next.Version())
	dserv.reset()
	if _, _, err := again.update(ctx, repoint(2_000_000), nil, time.Now(), dserv); err != nil {
		t.Fatal(err)
	}
	if shards := dserv.gets.Load() - dserv.cborGets.Load(); shards != 0 {
		t.Fatalf("the second update read %d shards from the DAGService", shards)
	}
}
