package ipldnar

import (
	"context"
	"fmt"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// Empty files.
//
// Between two stock kubo 0.43 nodes the empty raw block (the sha2-256 CID
// bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku, what
// `ipfs add --raw-leaves` makes of an empty file) is never delivered by
// bitswap, so a DAG holding one hangs every fetch from another node. Import
// therefore writes an empty file as the identity CID of an empty raw block
// (bafkqaaa): the CID carries the (empty) data, so every IPFS implementation
// resolves it without asking anyone; `ipfs add --inline --inline-limit 0`
// gives the same CIDs. Render also recognises the sha2-256
// empty block without a fetch, so DAGs made before (and by `ipfs add`) render
// everywhere too.

// EmptyFile is the CID Import gives every empty regular file.
var EmptyFile = cid.NewCidV1(cid.Raw, mustIdentity())

// EmptyRawSHA256 is the CID `ipfs add --raw-leaves` gives an empty file.
var EmptyRawSHA256 = cid.NewCidV1(cid.Raw, mustSum(nil))

func mustIdentity() mh.Multihash {
	h, err := mh.Sum(nil, mh.IDENTITY, -1)
	if err != nil {
		panic(err)
	}
	return h
}

func mustSum(b []byte) mh.Multihash {
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return h
}

// emptyFileNode is the node Import links for an empty file.
var emptyFileNode = func() ipld.Node {
	nd, err := dag.NewRawNodeWPrefix(nil, EmptyFile.Prefix())
	if err != nil {
		panic(err)
	}
	return nd
}()

// KnownNode returns the node of c when it can be had without a fetch: an
// identity CID (raw or dag-pb), or the empty raw block.
func KnownNode(c cid.Cid) (ipld.Node, bool) {
	if c == EmptyRawSHA256 {
		nd, err := dag.NewRawNodeWPrefix(nil, c.Prefix())
		return nd, err == nil
	}
	dm, err := mh.Decode(c.Hash())
	if err != nil || dm.Code != mh.IDENTITY {
		return nil, false
	}
	blk, err := blocks.NewBlockWithCid(dm.Digest, c)
	if err != nil {
		return nil, false
	}
	nd, err := DecodeBlock(blk)
	return nd, err == nil
}

// DecodeBlock makes a node of a block of a codec UnixFS DAGs use: raw or
// dag-pb.
func DecodeBlock(b blocks.Block) (ipld.Node, error) {
	switch codec := b.Cid().Prefix().Codec; codec {
	case cid.Raw:
		return dag.DecodeRawBlock(b)
	case cid.DagProtobuf:
		return dag.DecodeProtobufBlock(b)
	default:
		return nil, fmt.Errorf("block %s: codec 0x%x is not part of a UnixFS DAG", b.Cid(), codec)
	}
}

// QuickGetter is a NodeGetter that can answer from memory, without waiting
// on a disk or a peer. Render's look-ahead asks GetQuick first, on the
// goroutine that walks the DAG, and hands a fetch to its workers only for
// what it does not get: when the blocks are in memory, handing each over
// and back cost more (waking threads) than reading it.
type QuickGetter interface {
	ipld.NodeGetter
	// GetQuick returns the node of c if it has it at hand; false: ask Get.
	GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool)
}

// getQuick asks src.GetQuick if src has it.
func getQuick(ctx context.Context, src ipld.NodeGetter, c cid.Cid) (ipld.Node, bool) {
	if q, ok := src.(QuickGetter); ok {
		return q.GetQuick(ctx, c)
	}
	return nil, false
}

// knownFirst answers KnownNode's CIDs itself and asks src for the rest, so
// that no empty file or inlined block ever waits on the network.
type knownFirst struct{ src ipld.NodeGetter }

func (k knownFirst) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if nd, ok := KnownNode(c); ok {
		return nd, nil
	}
	return k.src.Get(ctx, c)
}

func (k knownFirst) GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool) {
	if nd, ok := KnownNode(c); ok {
		return nd, true
	}
	return getQuick(ctx, k.src, c)
}

func (k knownFirst) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	var known []ipld.Node
	rest := cids[:0:0]
	for _, c := range cids {
		if nd, ok := KnownNode(c); ok {
			known = append(known, nd)
		} else {
			rest = append(rest, c)
		}
	}
	if len(known) == 0 {
		return k.src.GetMany(ctx, cids)
	}
	out := make(chan *ipld.NodeOption, len(cids))
	for _, nd := range known {
		out <- &ipld.NodeOption{Node: nd}
	}
	if len(rest) == 0 {
		close(out)
		return out
	}
	in := k.src.GetMany(ctx, rest)
	go func() {
		defer close(out)
		for n := 0; n < len(rest); n++ {
			select {
			case o, ok := <-in:
				if !ok {
					return
				}
				out <- o
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
