package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs-shipyard/nopfs"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/kubo/core/coreiface/options"
	mh "github.com/multiformats/go-multihash"
)

// LocalBlocks reads the node's local blocks only, never the network (nil
// if the API cannot go offline). An embedded node with the ordered store
// reads it directly: kubo's blockservice and blockstore layers (the
// exchange, ARC and bloom caches, CID checks, datastore metrics, key
// transforms) cost a sixth of a render's CPU, block by block. What of them
// matters here is kept: identity CIDs, the hash allowlist, and
// Datastore.HashOnRead; and a node with kubo's content blocking on (a
// denylist) reads through kubo, which applies it.
func (n *Node) LocalBlocks() ipld.NodeGetter {
	if d := n.directBlocks(); d != nil {
		return d
	}
	off, err := n.API.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil
	}
	return off.Dag()
}

// directBlocks reads the ordered store directly, or is nil if the node
// has none or must read through kubo.
func (n *Node) directBlocks() ipld.NodeGetter {
	if n.store == nil || n.store.ord == nil || n.blocking {
		return nil
	}
	return storeDag{s: n.store, hashOnRead: n.hashOnRead}
}

// contentBlocking reports whether kubo's content blocking (its nopfs
// plugin) has a denylist to apply to the repo at repoPath: one in the
// repo's denylists directory, $XDG_CONFIG_HOME/ipfs/denylists or
// /etc/ipfs/denylists, unless IPFS_CONTENT_BLOCKING_DISABLE is set. kubo
// reads the list of files when a node starts, and so does this.
func contentBlocking(repoPath string) bool {
	if os.Getenv("IPFS_CONTENT_BLOCKING_DISABLE") != "" {
		return false
	}
	files, err := nopfs.GetDenylistFiles()
	if err != nil {
		return true // what kubo applies is unknown: leave it to kubo
	}
	repoFiles, err := nopfs.GetDenylistFilesInDir(filepath.Join(repoPath, "denylists"))
	return err != nil || len(files)+len(repoFiles) > 0
}

type storeDag struct {
	s          *pebbleStore
	hashOnRead bool
}

// blocksNS is where kubo keeps blocks in its datastore.
var blocksNS = ds.NewKey("/blocks")

func (d storeDag) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
		return nil, fmt.Errorf("block %s: %w", c, err)
	}
	var data []byte
	if c.Prefix().MhType == mh.IDENTITY {
		dmh, err := mh.Decode(c.Hash())
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", c, err)
		}
		data = dmh.Digest
	} else {
		var err error
		data, err = d.s.Get(ctx, blocksNS.Child(dshelp.MultihashToDsKey(c.Hash())))
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
	}
	b, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	switch c.Type() {
	case cid.Raw:
		return merkledag.DecodeRawBlock(b)
	case cid.DagProtobuf:
		return merkledag.DecodeProtobufBlock(b)
	}
	return nil, fmt.Errorf("block %s: codec %#x is neither dag-pb nor raw", c, c.Type())
}

func (d storeDag) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	go func() {
		defer close(out)
		for _, c := range cs {
			nd, err := d.Get(ctx, c)
			select {
			case out <- &ipld.NodeOption{Node: nd, Err: err}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
