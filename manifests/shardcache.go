package manifests

import (
	"container/list"
	"context"
	"sync"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// defaultShardCacheBytes bounds the HAMT shards a Local keeps in memory
// between updates: all of them up to about 1.4M paths (a 1M-path manifest
// has 89 MB of shards). An update reads the root's 256 children and a shard
// below each changed key, and each read from the node cost about 0.5 ms at
// 1M paths (pebble decompresses a whole block of its blob file for each).
const defaultShardCacheBytes = 128 << 20

// shardCache holds raw HAMT shards, least recently used dropped first. Only
// blocks known to be stored and pinned go in: a cached shard is never
// written again, so the node must already hold it.
type shardCache struct {
	mu    sync.Mutex
	max   int
	size  int
	order *list.List // of blocks.Block, most recent first
	byCID map[cid.Cid]*list.Element
}

func newShardCache(maxBytes int) *shardCache {
	return &shardCache{max: maxBytes, order: list.New(), byCID: map[cid.Cid]*list.Element{}}
}

func (c *shardCache) get(k cid.Cid) (blocks.Block, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byCID[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(blocks.Block), true
}

func (c *shardCache) add(blk blocks.Block) {
	n := len(blk.RawData())
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byCID[blk.Cid()]; ok {
		c.order.MoveToFront(el)
		return
	}
	c.byCID[blk.Cid()] = c.order.PushFront(blk)
	c.size += n
	for c.size > c.max {
		el := c.order.Back()
		old := c.order.Remove(el).(blocks.Block)
		delete(c.byCID, old.Cid())
		c.size -= len(old.RawData())
	}
}

// cachedDAG answers Get from a shardCache first; everything else (GetMany,
// writes) goes to the DAGService underneath.
type cachedDAG struct {
	ipld.DAGService
	cache *shardCache
}

func (d cachedDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if blk, ok := d.cache.get(c); ok {
		// A fresh node each time: boxo may sort a ProtoNode's links.
		return dag.DecodeProtobufBlock(blk)
	}
	return d.DAGService.Get(ctx, c)
}

// keep caches what an update read and wrote. Called once they are pinned.
func (c *shardCache) keep(s *hamtStore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[cid.Cid]ipld.Node{s.loaded, s.pending} {
		for k, nd := range m {
			// A plain block: a ProtoNode's encoding changes if it is mutated.
			blk, err := blocks.NewBlockWithCid(nd.RawData(), k)
			if err == nil {
				c.add(blk)
			}
		}
	}
}
