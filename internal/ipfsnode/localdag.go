package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/ipfs-shipyard/nopfs"
	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/kubo/core/coreiface/options"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/ipldnar"
)

// LocalBlocks reads the node's local blocks only, never the network (nil
// if the API cannot go offline). An embedded node with the ordered store
// reads it directly: kubo's blockservice and blockstore layers (the
// exchange, ARC and bloom caches, CID checks, datastore metrics, key
// transforms) cost a sixth of a render's CPU, block by block. What of them
// matters here is kept: identity CIDs, the hash allowlist,
// Datastore.HashOnRead, and kubo's denylists (content blocking), which
// kubo's own offline API does not apply.
func (n *Node) LocalBlocks() ipld.NodeGetter {
	if n.store != nil && n.store.ord != nil {
		return storeDag{s: n.store, hashOnRead: n.hashOnRead, blocker: n.blocker}
	}
	off, err := n.API.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil
	}
	return off.Dag()
}

// HashOnRead reports whether the embedded repo checks every block against
// its CID when it is read (Datastore.HashOnRead): those who set it want
// every render's NarHash checked too (gateway.Config.Reverify).
func (n *Node) HashOnRead() bool { return n.hashOnRead }

// Denied reports whether kubo's denylists (content blocking) name c, for
// what does not come through LocalBlocks: NARs in a NAR cache, blocks in
// peers' CAR streams.
func (n *Node) Denied(c cid.Cid) bool { return blocked(n.blocker, c) != nil }

// blocked returns b's refusal of c: nil if b is nil (no denylist) or lets
// c through.
func blocked(b *nopfs.Blocker, c cid.Cid) error {
	if b == nil {
		return nil
	}
	// ToError returns a *StatusError: returned as it is, a nil one would
	// be a non-nil error.
	if err := b.IsCidBlocked(c).ToError(); err != nil {
		return err
	}
	return nil
}

// denylists returns the denylist files kubo's content blocking (its nopfs
// plugin) applies: the .deny files in $XDG_CONFIG_HOME/ipfs/denylists,
// /etc/ipfs/denylists and ./denylists (the plugin's repo directory: nixipfs
// loads kubo's plugins once per process, for no repo in particular), and
// those in repo/denylists, where kubo with that repo would look; none if
// IPFS_CONTENT_BLOCKING_DISABLE is set.
func denylists(repo string) ([]string, error) {
	if os.Getenv("IPFS_CONTENT_BLOCKING_DISABLE") != "" {
		return nil, nil
	}
	files, err := nopfs.GetDenylistFiles()
	if err != nil {
		return nil, err
	}
	dirs := []string{"denylists"}
	if repo != "" {
		dirs = append(dirs, filepath.Join(repo, "denylists"))
	}
	for _, d := range dirs {
		more, err := nopfs.GetDenylistFilesInDir(d)
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	slices.Sort(files)
	return slices.Compact(files), nil
}

// newBlocker loads the denylists when a node starts; nil if there are
// none. Unlike kubo's, it reads each file whole before the node serves
// (kubo reads them in the background, and so could serve a block its list
// names in the first moments) and does not follow appends: a restart
// takes changes.
func newBlocker(repo string) (*nopfs.Blocker, error) {
	files, err := denylists(repo)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	b := &nopfs.Blocker{Denylists: map[string]*nopfs.Denylist{}}
	for _, f := range files {
		dl, err := nopfs.NewDenylist(f, false)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("load denylist %s: %w", f, err)
		}
		b.Denylists[f] = dl
	}
	return b, nil
}

type storeDag struct {
	s          *pebbleStore
	hashOnRead bool
	blocker    *nopfs.Blocker // nil: no denylist
}

// blockKey is the datastore key kubo keeps the block of c under.
func blockKey(c cid.Cid) ds.Key {
	return ds.NewKey(blocksPrefix).Child(dshelp.MultihashToDsKey(c.Hash()))
}

func (d storeDag) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if c.Prefix().MhType != mh.IDENTITY {
		b, err := d.block(ctx, c)
		if err != nil {
			return nil, err
		}
		return ipldnar.DecodeBlock(b)
	}
	if err := d.refused(c); err != nil {
		return nil, err
	}
	if nd, ok := ipldnar.KnownNode(c); ok {
		return nd, nil
	}
	return nil, fmt.Errorf("block %s: an identity CID whose data is no raw or dag-pb node", c)
}

// block reads the stored block of c with Get's checks, not decoded (CAR
// exports write it as it is).
func (d storeDag) block(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if err := d.refused(c); err != nil {
		return nil, err
	}
	if c.Prefix().MhType == mh.IDENTITY {
		return nil, fmt.Errorf("block %s: an identity CID has no stored block", c)
	}
	data, err := d.s.Get(ctx, blockKey(c))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return nil, fmt.Errorf("read block %s: %w", c, err)
	}
	if d.hashOnRead {
		if got, err := c.Prefix().Sum(data); err != nil || !got.Equals(c) {
			return nil, fmt.Errorf("block %s: its data does not match its CID (Datastore.HashOnRead)", c)
		}
	}
	return blocks.NewBlockWithCid(data, c)
}

// refused is why Get does not read c: a hash kubo does not allow, or a
// denylist naming it; nil if it may.
func (d storeDag) refused(c cid.Cid) error {
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
		return fmt.Errorf("block %s: %w", c, err)
	}
	return blocked(d.blocker, c)
}

// decode makes the node of c from its block's data.
func decode(c cid.Cid, data []byte) (ipld.Node, error) {
	b, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	return ipldnar.DecodeBlock(b)
}

// GetQuick returns the node of c if the store keeps its block in memory
// (hot blocks), with Get's checks; never with Datastore.HashOnRead, which
// Get applies.
func (d storeDag) GetQuick(_ context.Context, c cid.Cid) (ipld.Node, bool) {
	if d.s.ord.hot.Load() == nil || d.hashOnRead || c.Prefix().MhType == mh.IDENTITY || d.refused(c) != nil {
		return nil, false
	}
	data, ok := d.s.ord.getHot(blockKey(c))
	if !ok {
		return nil, false
	}
	nd, err := decode(c, data)
	return nd, err == nil
}

// GetMany reads each block in turn: they are local, so the channel holds
// them all.
func (d storeDag) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		nd, err := d.Get(ctx, c)
		out <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(out)
	return out
}
