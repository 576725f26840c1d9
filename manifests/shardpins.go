package manifests

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// shardDiff lists the HAMT shards under to that are not under from (added)
// and those under from that are not under to (removed), reading only
// shards: it never follows a value. Sub-shards with the same CID on both
// sides are skipped unread, so neighbouring versions cost their changed
// paths. Either side may be cid.Undef (nothing). One level of the two tries
// is read per batch.
func shardDiff(ctx context.Context, ng ipld.NodeGetter, from, to cid.Cid) (added, removed []cid.Cid, err error) {
	type pair struct{ from, to cid.Cid }
	level := []pair{{from, to}}
	for depth := 0; len(level) > 0; depth++ {
		if depth > shardMaxDepth {
			return nil, nil, fmt.Errorf("HAMT is deeper than its %d-level hash", shardMaxDepth)
		}
		var fromC, toC []cid.Cid
		for _, p := range level {
			if p.from.Equals(p.to) {
				continue
			}
			if p.from.Defined() {
				fromC = append(fromC, p.from)
				removed = append(removed, p.from)
			}
			if p.to.Defined() {
				toC = append(toC, p.to)
				added = append(added, p.to)
			}
		}
		fromE, err := fetchShards(ctx, ng, fromC)
		if err != nil {
			return nil, nil, fmt.Errorf("old HAMT: %w", err)
		}
		toE, err := fetchShards(ctx, ng, toC)
		if err != nil {
			return nil, nil, fmt.Errorf("new HAMT: %w", err)
		}
		var next []pair
		for _, p := range level {
			if p.from.Equals(p.to) {
				continue
			}
			var subs [shardFanout]pair
			for _, e := range fromE[p.from] {
				if e.key == "" {
					subs[e.slot].from = e.cid
				}
			}
			for _, e := range toE[p.to] {
				if e.key == "" {
					subs[e.slot].to = e.cid
				}
			}
			for _, s := range subs {
				if !s.from.Equals(s.to) {
					next = append(next, s)
				}
			}
		}
		level = next
	}
	return added, removed, nil
}
