package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	"github.com/ipfs/go-bitfield"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// HAMT shards as the manifest uses them: boxo's UnixFS HAMT with fanout 256
// and murmur3-x64-64, every shard a CIDv1 dag-pb sha2-256 block. A shard's
// links are named by their two-hex-digit slot, followed by the key for a
// value; a bare slot name links a sub-shard. Each level consumes one byte of
// the key's 8-byte hash, so the trie is at most 8 levels deep.
const (
	shardFanout   = 256
	shardMaxDepth = 8
	// maxShardSize bounds a shard read from another node: 256 links with
	// maximal keys are about 80 KiB.
	maxShardSize = 1 << 20
)

var shardCIDBuilder = cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}

// slotPrefix[i] is the link-name prefix of slot i, as boxo writes it.
var slotPrefix = func() (p [shardFanout]string) {
	for i := range p {
		p[i] = fmt.Sprintf("%02X", i)
	}
	return p
}()

// checkShardCID accepts only the CIDs the manifest writes for shards, so a
// hostile link cannot make us fetch (or trust) a block of another kind.
func checkShardCID(c cid.Cid) error {
	p := c.Prefix()
	if p.Version != 1 || p.Codec != cid.DagProtobuf || p.MhType != mh.SHA2_256 {
		return fmt.Errorf("%s is not a CIDv1 dag-pb sha2-256 HAMT shard", c)
	}
	return nil
}

// shardEntry is one occupied slot of a shard.
type shardEntry struct {
	slot int
	key  string  // "" for a sub-shard
	cid  cid.Cid // the value, or the sub-shard
}

// decodeShard checks that nd is a manifest HAMT shard in the form boxo
// writes it and lists its slots. Every shard boxo or our own walkers read goes
// through it, so malformed data becomes an error here and never reaches
// boxo's code (which indexes by the bitfield without checking it).
func decodeShard(nd ipld.Node) (*dag.ProtoNode, []shardEntry, error) {
	if err := checkShardCID(nd.Cid()); err != nil {
		return nil, nil, err
	}
	if n := len(nd.RawData()); n > maxShardSize {
		return nil, nil, fmt.Errorf("shard %s: %d bytes is over the %d limit", nd.Cid(), n, maxShardSize)
	}
	pb, ok := nd.(*dag.ProtoNode)
	if !ok {
		decoded, err := dag.DecodeProtobufBlock(nd)
		if err != nil {
			return nil, nil, fmt.Errorf("shard %s: %w", nd.Cid(), err)
		}
		pb = decoded.(*dag.ProtoNode)
	}
	fsn, err := unixfs.FSNodeFromBytes(pb.Data())
	if err != nil {
		return nil, nil, fmt.Errorf("shard %s: %w", nd.Cid(), err)
	}
	if fsn.Type() != unixfs.THAMTShard {
		return nil, nil, fmt.Errorf("shard %s: UnixFS type %s, not a HAMT shard", nd.Cid(), fsn.Type())
	}
	if fsn.HashType() != hamt.HashMurmur3 || fsn.Fanout() != shardFanout {
		return nil, nil, fmt.Errorf("shard %s: hash %#x fanout %d, want murmur3 and %d", nd.Cid(), fsn.HashType(), fsn.Fanout(), shardFanout)
	}
	bits := fsn.Data()
	if len(bits) > shardFanout/8 || len(bits) > 0 && bits[0] == 0 {
		return nil, nil, fmt.Errorf("shard %s: malformed %d-byte bitfield", nd.Cid(), len(bits))
	}
	// Anything beyond the bitfield, fanout and hash (a mode, an mtime, file
	// sizes) would make the shard differ from the canonical one.
	if canon, err := unixfs.HAMTShardData(bits, shardFanout, hamt.HashMurmur3); err != nil || !bytes.Equal(canon, pb.Data()) {
		return nil, nil, fmt.Errorf("shard %s: UnixFS data is not in canonical form", nd.Cid())
	}
	bf, err := bitfield.FromBytes(shardFanout, bits)
	if err != nil {
		return nil, nil, fmt.Errorf("shard %s: %w", nd.Cid(), err)
	}
	links := pb.Links()
	entries := make([]shardEntry, 0, len(links))
	for slot := range shardFanout {
		if !bf.Bit(slot) {
			continue
		}
		i := len(entries)
		if i >= len(links) {
			return nil, nil, fmt.Errorf("shard %s: bitfield has more slots than the %d links", nd.Cid(), len(links))
		}
		l := links[i]
		if len(l.Name) < 2 || l.Name[:2] != slotPrefix[slot] {
			return nil, nil, fmt.Errorf("shard %s: link %d is named %.16q, want slot %s", nd.Cid(), i, l.Name, slotPrefix[slot])
		}
		e := shardEntry{slot: slot, key: l.Name[2:], cid: l.Cid}
		switch {
		case !e.cid.Defined():
			return nil, nil, fmt.Errorf("shard %s: link %d has no CID", nd.Cid(), i)
		case e.key == "":
			if err := checkShardCID(e.cid); err != nil {
				return nil, nil, fmt.Errorf("shard %s: slot %s: %w", nd.Cid(), slotPrefix[slot], err)
			}
		case len(e.key) > maxKeyLen:
			return nil, nil, fmt.Errorf("shard %s: slot %s: key of %d bytes is over the %d limit", nd.Cid(), slotPrefix[slot], len(e.key), maxKeyLen)
		}
		entries = append(entries, e)
	}
	if len(entries) != len(links) {
		return nil, nil, fmt.Errorf("shard %s: %d links for %d slots", nd.Cid(), len(links), len(entries))
	}
	return pb, entries, nil
}

// checkPlacement verifies that key belongs where it was found: in slot of
// the shard reached through the slots in path, as its hash says. boxo's
// lookups follow the hash and cannot see a misplaced key; walks would list
// one Get cannot find, and a sub-shard linked from several slots would be
// walked once per slot. Refusing misplaced keys means each shard of a walk is
// visited once at most.
func checkPlacement(key string, path []byte, slot int) error {
	h, err := mh.GetHasher(mh.MURMUR3X64_64)
	if err != nil {
		return err
	}
	h.Write([]byte(key))
	sum := h.Sum(nil)
	if len(path) >= len(sum) || !bytes.Equal(sum[:len(path)], path) || int(sum[len(path)]) != slot {
		return fmt.Errorf("key %q is misplaced: found under slots %X, its hash is %X", key, childPath(path, slot), sum)
	}
	return nil
}

// checkSubShard refuses a sub-shard boxo would never leave: an empty one, or
// one holding a single value (which belongs in its parent's slot). So every
// sub-shard has at least two values below it, and a walk meets a value, whose
// placement it checks, in every sub-shard it enters.
func checkSubShard(c cid.Cid, entries []shardEntry) error {
	if len(entries) == 0 || len(entries) == 1 && entries[0].key != "" {
		return fmt.Errorf("HAMT sub-shard %s holds %d entries: not canonical", c, len(entries))
	}
	return nil
}

// hamtStore is the DAGService boxo's HAMT code is given. Reads are checked
// (decodeShard) before boxo sees them. Writes, when enabled, are held back so
// an Update writes only the shards that changed, once, after it succeeded:
// boxo writes every loaded shard on Node(), each of them twice. A writable
// store keeps what it read and wrote, so that the diff of the old and new
// version (which reads just those shards) reads nothing from base.
type hamtStore struct {
	base ipld.DAGService
	out  ipld.DAGService // where flush writes

	mu      sync.Mutex
	err     error                 // the first read error: boxo may wrap it as "not found"
	have    map[cid.Cid]bool      // blocks base already holds
	loaded  map[cid.Cid]ipld.Node // shards read from base, decoded
	pending map[cid.Cid]ipld.Node // nil: read-only
	order   []ipld.Node           // pending in write order, children before parents
}

var _ ipld.DAGService = (*hamtStore)(nil)

// newWritableStore reads from base and flushes to out.
func newWritableStore(base, out ipld.DAGService) *hamtStore {
	return &hamtStore{base: base, out: out, have: map[cid.Cid]bool{},
		loaded: map[cid.Cid]ipld.Node{}, pending: map[cid.Cid]ipld.Node{}}
}

func (s *hamtStore) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	return err
}

// readErr is the first read error, which callers check before believing a
// "not found" from boxo.
func (s *hamtStore) readErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *hamtStore) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	s.mu.Lock()
	nd, ok := s.pending[c]
	if !ok {
		nd, ok = s.loaded[c]
	}
	s.mu.Unlock()
	if ok {
		return nd, nil
	}
	if err := checkShardCID(c); err != nil {
		return nil, s.fail(fmt.Errorf("read HAMT shard: %w", err))
	}
	nd, err := s.base.Get(ctx, c)
	if err != nil {
		return nil, s.fail(fmt.Errorf("read HAMT shard %s: %w", c, err))
	}
	if !nd.Cid().Equals(c) {
		return nil, s.fail(fmt.Errorf("read HAMT shard %s: got block %s", c, nd.Cid()))
	}
	pb, _, err := decodeShard(nd)
	if err != nil {
		return nil, s.fail(fmt.Errorf("read HAMT: %w", err))
	}
	if s.have != nil {
		s.mu.Lock()
		s.have[c] = true
		s.loaded[c] = pb
		s.mu.Unlock()
	}
	return pb, nil
}

func (s *hamtStore) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	for _, c := range cids {
		nd, err := s.Get(ctx, c)
		out <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(out)
	return out
}

func (s *hamtStore) Add(ctx context.Context, nd ipld.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return errors.New("manifest HAMT is read-only here")
	}
	c := nd.Cid()
	if s.have[c] || s.pending[c] != nil {
		return nil
	}
	// What we write must be what we accept on reading it back.
	if _, _, err := decodeShard(nd); err != nil {
		return fmt.Errorf("write HAMT: %w", err)
	}
	s.pending[c] = nd
	s.order = append(s.order, nd)
	return nil
}

func (s *hamtStore) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := s.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (s *hamtStore) Remove(context.Context, cid.Cid) error {
	return errors.New("manifest HAMT: remove is not supported")
}

func (s *hamtStore) RemoveMany(context.Context, []cid.Cid) error {
	return errors.New("manifest HAMT: remove is not supported")
}

// flush writes the pending shards to out, children before parents, so a
// crash never leaves a stored shard whose children are missing.
func (s *hamtStore) flush(ctx context.Context) error {
	s.mu.Lock()
	nodes := s.order
	s.mu.Unlock()
	if len(nodes) == 0 {
		return nil
	}
	if err := s.out.AddMany(ctx, nodes); err != nil {
		return fmt.Errorf("write %d HAMT shards: %w", len(nodes), err)
	}
	return nil
}

// fetchShards reads and decodes the shards cids (deduplicated) in one
// GetMany, which a network-backed DAGService turns into one batched request.
func fetchShards(ctx context.Context, ng ipld.NodeGetter, cids []cid.Cid) (map[cid.Cid][]shardEntry, error) {
	out := make(map[cid.Cid][]shardEntry, len(cids))
	if len(cids) == 0 {
		return out, nil
	}
	want := make([]cid.Cid, 0, len(cids))
	seen := make(map[cid.Cid]bool, len(cids))
	for _, c := range cids {
		if err := checkShardCID(c); err != nil {
			return nil, err
		}
		if !seen[c] {
			seen[c] = true
			want = append(want, c)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One answer per (distinct) CID: stop counting there, as kubo's RPC
	// client never closes the channel.
	ch := ng.GetMany(ctx, want)
	for range want {
		opt, err := nextOption(ctx, ch)
		if err != nil {
			return nil, err
		}
		if opt == nil {
			break // closed early: the check below names what is missing
		}
		if opt.Err != nil {
			return nil, fmt.Errorf("read HAMT shard: %w", opt.Err)
		}
		c := opt.Node.Cid()
		if !seen[c] {
			return nil, fmt.Errorf("read HAMT shards: got unrequested block %s", c)
		}
		_, entries, err := decodeShard(opt.Node)
		if err != nil {
			return nil, fmt.Errorf("read HAMT: %w", err)
		}
		out[c] = entries
	}
	for _, c := range want {
		if _, ok := out[c]; !ok {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("read HAMT shard %s: %w", c, ipld.ErrNotFound{Cid: c})
		}
	}
	return out, nil
}

// nextOption receives one GetMany answer; nil when the channel is closed.
func nextOption(ctx context.Context, ch <-chan *ipld.NodeOption) (*ipld.NodeOption, error) {
	select {
	case opt := <-ch:
		return opt, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// walkShard calls fn for every value under the shard whose entries are
// given, reached through the slots in path, in slot order (the order of the
// keys' hashes), reading each shard's sub-shards in one batch.
func walkShard(ctx context.Context, ng ipld.NodeGetter, entries []shardEntry, path []byte, fn func(key string, c cid.Cid) error) error {
	var subs []cid.Cid
	for _, e := range entries {
		if e.key == "" {
			subs = append(subs, e.cid)
		}
	}
	if len(subs) > 0 && len(path)+1 >= shardMaxDepth {
		return fmt.Errorf("HAMT is deeper than its %d-level hash", shardMaxDepth)
	}
	children, err := fetchShards(ctx, ng, subs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.key != "" {
			if err := checkPlacement(e.key, path, e.slot); err != nil {
				return err
			}
			if err := fn(e.key, e.cid); err != nil {
				return err
			}
			continue
		}
		sub := children[e.cid]
		if err := checkSubShard(e.cid, sub); err != nil {
			return err
		}
		if err := walkShard(ctx, ng, sub, childPath(path, e.slot), fn); err != nil {
			return err
		}
	}
	return nil
}

// childPath is path extended by slot, never sharing path's array.
func childPath(path []byte, slot int) []byte {
	return append(path[:len(path):len(path)], byte(slot))
}
