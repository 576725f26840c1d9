package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Change is one entry that differs between two manifests. Old is undefined
// for an added key, New for a removed one.
type Change struct {
	Key      string
	Old, New cid.Cid
}

// DiffManifests lists the changes from a to b, sorted by key. It walks both
// HAMTs together and skips any sub-shard whose CID is the same on both sides
// without reading it, so the blocks it reads are those on the changed keys'
// paths: diffing neighbouring versions of a large manifest is cheap. Either
// side may be an empty manifest.
func DiffManifests(ctx context.Context, a, b *Manifest) ([]Change, error) {
	if a.info.Entries.Equals(b.info.Entries) {
		return nil, nil
	}
	_, ea, err := decodeShard(a.root)
	if err != nil {
		return nil, fmt.Errorf("diff manifests: %w", err)
	}
	_, eb, err := decodeShard(b.root)
	if err != nil {
		return nil, fmt.Errorf("diff manifests: %w", err)
	}
	d := &differ{ctx: ctx, a: a.dserv, b: b.dserv}
	if err := d.shards(ea, eb, nil); err != nil {
		return nil, fmt.Errorf("diff manifests: %w", err)
	}
	slices.SortFunc(d.changes, func(x, y Change) int { return strings.Compare(x.Key, y.Key) })
	return d.changes, nil
}

type differ struct {
	ctx     context.Context
	a, b    ipld.NodeGetter
	changes []Change
}

// shards diffs two shards found at the same path. Both are walked slot by
// slot; where both hold a sub-shard with different CIDs, the pair is read
// (each side's sub-shards in one batch) and diffed in turn.
func (d *differ) shards(ea, eb []shardEntry, path []byte) error {
	// Slot -> entry, for each side.
	var sa, sb [shardFanout]*shardEntry
	for i := range ea {
		sa[ea[i].slot] = &ea[i]
	}
	for i := range eb {
		sb[eb[i].slot] = &eb[i]
	}
	// Read the sub-shards the comparison needs, one batch per side.
	var needA, needB []cid.Cid
	for slot := range shardFanout {
		x, y := sa[slot], sb[slot]
		if x == nil || y == nil || x.key == "" && y.key == "" && x.cid.Equals(y.cid) {
			continue // one side alone is walked whole below; equal sub-shards are skipped
		}
		if x.key == "" {
			needA = append(needA, x.cid)
		}
		if y.key == "" {
			needB = append(needB, y.cid)
		}
	}
	if (len(needA) > 0 || len(needB) > 0) && len(path)+1 >= shardMaxDepth {
		return fmt.Errorf("HAMT is deeper than its %d-level hash", shardMaxDepth)
	}
	subA, err := fetchShards(d.ctx, d.a, needA)
	if err != nil {
		return err
	}
	subB, err := fetchShards(d.ctx, d.b, needB)
	if err != nil {
		return err
	}

	for slot := range shardFanout {
		x, y := sa[slot], sb[slot]
		switch {
		case x == nil && y == nil:
		case y == nil:
			if err := d.side(d.a, x, path, d.removed); err != nil {
				return err
			}
		case x == nil:
			if err := d.side(d.b, y, path, d.added); err != nil {
				return err
			}
		case x.key != "" && y.key != "":
			if err := checkPlacement(x.key, path, slot); err != nil {
				return err
			}
			if err := checkPlacement(y.key, path, slot); err != nil {
				return err
			}
			switch {
			case x.key != y.key:
				d.removed(x.key, x.cid)
				d.added(y.key, y.cid)
			case !x.cid.Equals(y.cid):
				d.changes = append(d.changes, Change{Key: x.key, Old: x.cid, New: y.cid})
			}
		case x.key == "" && y.key == "":
			if x.cid.Equals(y.cid) {
				continue
			}
			ca, cb := subA[x.cid], subB[y.cid]
			if err := checkSubShard(x.cid, ca); err != nil {
				return err
			}
			if err := checkSubShard(y.cid, cb); err != nil {
				return err
			}
			if err := d.shards(ca, cb, childPath(path, slot)); err != nil {
				return err
			}
		case x.key != "":
			// A value became a sub-shard: everything below it is new but
			// possibly x itself.
			sub := subB[y.cid]
			if err := d.valueVsShard(d.b, *x, y.cid, sub, childPath(path, slot), path, false); err != nil {
				return err
			}
		default:
			sub := subA[x.cid]
			if err := d.valueVsShard(d.a, *y, x.cid, sub, childPath(path, slot), path, true); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *differ) removed(key string, c cid.Cid) {
	d.changes = append(d.changes, Change{Key: key, Old: c})
}

func (d *differ) added(key string, c cid.Cid) {
	d.changes = append(d.changes, Change{Key: key, New: c})
}

// side reports every value under an entry present on one side only.
func (d *differ) side(ng ipld.NodeGetter, e *shardEntry, path []byte, emit func(string, cid.Cid)) error {
	if e.key != "" {
		if err := checkPlacement(e.key, path, e.slot); err != nil {
			return err
		}
		emit(e.key, e.cid)
		return nil
	}
	return d.subtree(ng, e.cid, childPath(path, e.slot), func(k string, c cid.Cid) error {
		emit(k, c)
		return nil
	})
}

// subtree walks the sub-shard c at path whole.
func (d *differ) subtree(ng ipld.NodeGetter, c cid.Cid, path []byte, fn func(string, cid.Cid) error) error {
	if len(path) >= shardMaxDepth {
		return fmt.Errorf("HAMT is deeper than its %d-level hash", shardMaxDepth)
	}
	subs, err := fetchShards(d.ctx, ng, []cid.Cid{c})
	if err != nil {
		return err
	}
	if err := checkSubShard(c, subs[c]); err != nil {
		return err
	}
	return walkShard(d.ctx, ng, subs[c], path, fn)
}

// valueVsShard diffs a slot holding the value v on one side and the
// sub-shard sc (entries sub, at subPath) on the other. valueInB tells which
// side the value is on.
func (d *differ) valueVsShard(ng ipld.NodeGetter, v shardEntry, sc cid.Cid, sub []shardEntry, subPath, path []byte, valueInB bool) error {
	if err := checkPlacement(v.key, path, v.slot); err != nil {
		return err
	}
	if err := checkSubShard(sc, sub); err != nil {
		return err
	}
	found := false
	err := walkShard(d.ctx, ng, sub, subPath, func(k string, c cid.Cid) error {
		switch {
		case k != v.key && valueInB:
			d.removed(k, c)
		case k != v.key:
			d.added(k, c)
		case !c.Equals(v.cid):
			found = true
			if valueInB {
				d.changes = append(d.changes, Change{Key: k, Old: c, New: v.cid})
			} else {
				d.changes = append(d.changes, Change{Key: k, Old: v.cid, New: c})
			}
		default:
			found = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		if valueInB {
			d.added(v.key, v.cid)
		} else {
			d.removed(v.key, v.cid)
		}
	}
	return nil
}
