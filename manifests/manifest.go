package manifests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Manifest is one version of the map from keys (KeyStorePath, KeyNarHash,
// KeyBlake3) to PathInfo CIDs: a boxo UnixFS HAMT whose values link the
// PathInfo blocks themselves, so the manifest's DAG reaches every record it
// lists. The HAMT is canonical: the same entries give the same root whatever
// order they were added or removed in, so two nodes publishing the same
// paths publish the same entries CID.
//
// A Manifest is an immutable value, safe for concurrent use; Update returns
// a new one. Only the HAMT root is held in memory; everything below it is
// read from the DAGService when needed.
type Manifest struct {
	dserv   ipld.DAGService
	version cid.Cid
	info    Version
	root    *dag.ProtoNode // decoded from bytes and never mutated
}

// EmptyManifest is the manifest with no entries and no version yet. Its
// entries root is the empty shard, held in memory until an Update writes it.
func EmptyManifest(dserv ipld.DAGService) *Manifest {
	root, err := emptyRoot()
	if err != nil {
		// Encoding a fixed, empty shard cannot fail.
		panic(fmt.Errorf("empty manifest: %w", err))
	}
	return &Manifest{dserv: dserv, root: root, info: Version{Entries: root.Cid()}}
}

var emptyRootBlock = sync.OnceValues(func() (blocks.Block, error) {
	sh, err := hamt.NewShard(newWritableStore(nil, nil), shardFanout)
	if err != nil {
		return nil, err
	}
	sh.SetCidBuilder(shardCIDBuilder)
	nd, err := sh.Node()
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(nd.RawData(), nd.Cid())
})

func emptyRoot() (*dag.ProtoNode, error) {
	blk, err := emptyRootBlock()
	if err != nil {
		return nil, err
	}
	return decodeRoot(blk)
}

// decodeRoot gives a Manifest its own decoded copy of the root shard, so no
// other holder of the node can mutate it (ProtoNode sorts its links lazily).
func decodeRoot(blk blocks.Block) (*dag.ProtoNode, error) {
	nd, err := dag.DecodeProtobufBlock(blk)
	if err != nil {
		return nil, err
	}
	pb, _, err := decodeShard(nd)
	return pb, err
}

// LoadManifest reads the manifest version whose Version block is version.
// The block and the root shard are checked (it may come from another node);
// the rest of the HAMT is checked as lookups and walks read it.
func LoadManifest(ctx context.Context, dserv ipld.DAGService, version cid.Cid) (*Manifest, error) {
	v, err := loadVersion(ctx, dserv, version)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	nd, err := (&hamtStore{base: dserv}).Get(ctx, v.Entries)
	if err != nil {
		return nil, fmt.Errorf("load manifest %s: root: %w", version, err)
	}
	root, err := decodeRoot(nd)
	if err != nil {
		return nil, fmt.Errorf("load manifest %s: root: %w", version, err)
	}
	return &Manifest{dserv: dserv, version: version, info: v, root: root}, nil
}

// Version is the CID of the manifest's Version block; cid.Undef for the
// empty manifest.
func (m *Manifest) Version() cid.Cid { return m.version }

// Info is what the Version block records. For the empty manifest: seq 0,
// count 0, no time, and the empty shard (not stored) as entries.
func (m *Manifest) Info() Version { return m.info }

func checkKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("key of %d bytes is over the %d limit", len(key), maxKeyLen)
	}
	return nil
}

// Get returns the CID recorded under key; an error satisfying
// errors.Is(err, ErrNotFound) when there is none. An empty key or one over
// 256 bytes is refused with another error: no manifest can hold it.
func (m *Manifest) Get(ctx context.Context, key string) (cid.Cid, error) {
	if err := checkKey(key); err != nil {
		return cid.Undef, fmt.Errorf("manifest get: %w", err)
	}
	store := &hamtStore{base: m.dserv}
	sh, err := hamt.NewHamtFromDag(store, m.root)
	if err != nil {
		return cid.Undef, fmt.Errorf("manifest get %s: %w", key, err)
	}
	lnk, err := sh.Find(ctx, key)
	if rerr := store.readErr(); rerr != nil {
		return cid.Undef, fmt.Errorf("manifest get %s: %w", key, rerr)
	}
	if errors.Is(err, os.ErrNotExist) {
		return cid.Undef, fmt.Errorf("manifest get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("manifest get %s: %w", key, err)
	}
	return lnk.Cid, nil
}

// Update applies deletes and puts (key -> PathInfo CID) and writes a new
// version linking m: the HAMT shards that changed, then the Version block.
// It loads only the shards on the changed keys' paths, so its cost grows
// with the number of changes, not with the manifest. Deleting an absent key
// is not an error. An update that changes no entry writes nothing and
// returns m. A key may not be both put and deleted.
func (m *Manifest) Update(ctx context.Context, puts map[string]cid.Cid, deletes []string, now time.Time) (*Manifest, error) {
	next, _, err := m.update(ctx, puts, deletes, now, m.dserv)
	return next, err
}

// update is Update writing the new blocks to w, which may be write-only (a
// bulk writer), instead of m's DAGService. It also returns its hamtStore,
// which answers from memory for every shard the update read or wrote (and
// from m's DAGService for the rest): all that a shardDiff of m and the new
// version reads.
func (m *Manifest) update(ctx context.Context, puts map[string]cid.Cid, deletes []string, now time.Time, w ipld.DAGService) (*Manifest, *hamtStore, error) {
	for k, c := range puts {
		if err := checkKey(k); err != nil {
			return nil, nil, fmt.Errorf("manifest update: put: %w", err)
		}
		if !c.Defined() {
			return nil, nil, fmt.Errorf("manifest update: put %s: no CID", k)
		}
	}
	for _, k := range deletes {
		if err := checkKey(k); err != nil {
			return nil, nil, fmt.Errorf("manifest update: delete: %w", err)
		}
		if _, ok := puts[k]; ok {
			return nil, nil, fmt.Errorf("manifest update: %s is both put and deleted", k)
		}
	}
	store := newWritableStore(m.dserv, w)
	if m.version.Defined() {
		store.have[m.info.Entries] = true // loaded from the DAGService
		store.loaded[m.info.Entries] = m.root
	}
	if len(puts) == 0 && len(deletes) == 0 {
		return m, store, nil
	}
	sh, err := hamt.NewHamtFromDag(store, m.root)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest update: %w", err)
	}
	sh.SetCidBuilder(shardCIDBuilder)

	// Sorted, so that errors (and the order shards load in) do not depend on
	// map iteration; the result does not depend on order.
	var delta int64
	for _, k := range sortedUnique(deletes) {
		_, err := sh.Take(ctx, k)
		if rerr := store.readErr(); rerr != nil {
			return nil, nil, fmt.Errorf("manifest update: delete %s: %w", k, rerr)
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, nil, fmt.Errorf("manifest update: delete %s: %w", k, err)
		case isStorePathKey(k):
			delta--
		}
	}
	for _, k := range sortedKeys(puts) {
		c := puts[k]
		old, err := sh.Find(ctx, k)
		if rerr := store.readErr(); rerr != nil {
			return nil, nil, fmt.Errorf("manifest update: put %s: %w", k, rerr)
		}
		switch {
		case err == nil && old.Cid.Equals(c):
			continue // unchanged: leave the shard as it is
		case errors.Is(err, os.ErrNotExist):
			if isStorePathKey(k) {
				delta++
			}
		case err != nil:
			return nil, nil, fmt.Errorf("manifest update: put %s: %w", k, err)
		}
		if err := sh.SetLink(ctx, k, &ipld.Link{Cid: c}); err != nil {
			return nil, nil, fmt.Errorf("manifest update: put %s: %w", k, err)
		}
		if rerr := store.readErr(); rerr != nil {
			return nil, nil, fmt.Errorf("manifest update: put %s: %w", k, rerr)
		}
	}

	nd, err := sh.Node()
	if err != nil {
		return nil, nil, fmt.Errorf("manifest update: encode HAMT: %w", err)
	}
	if nd.Cid().Equals(m.info.Entries) {
		return m, store, nil
	}
	root, err := decodeRoot(nd)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest update: new root: %w", err)
	}
	next := Version{
		Entries: nd.Cid(),
		Prev:    m.version,
		Seq:     m.info.Seq + 1,
		Count:   m.info.Count + delta,
		Time:    now.UTC().Format(time.RFC3339), // seq orders versions; time is for people
	}
	vnd, err := versionBlock(next)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest update: %w", err)
	}
	if err := store.flush(ctx); err != nil {
		return nil, nil, fmt.Errorf("manifest update: %w", err)
	}
	if err := w.Add(ctx, vnd); err != nil {
		return nil, nil, fmt.Errorf("manifest update: write version %d: %w", next.Seq, err)
	}
	return &Manifest{dserv: m.dserv, version: vnd.Cid(), info: next, root: root}, store, nil
}

// Walk calls fn for every entry, in the order of the keys' hashes (stable for
// a given manifest, not sorted by key). It stops at fn's first error.
func (m *Manifest) Walk(ctx context.Context, fn func(key string, c cid.Cid) error) error {
	_, entries, err := decodeShard(m.root)
	if err != nil {
		return fmt.Errorf("manifest walk: %w", err)
	}
	if err := walkShard(ctx, m.dserv, entries, nil, fn); err != nil {
		return fmt.Errorf("manifest walk: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]cid.Cid) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedUnique(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
