package carfile

import (
	"bytes"
	"context"
	"fmt"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/multiformats/go-multicodec"
)

// appendLinks appends the links of block c, in the order they appear in it,
// to links. Only the codecs nixipfs writes are known: a block of any other
// codec could hide links, so it is an error rather than a leaf.
func appendLinks(links []cid.Cid, c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Type() {
	case cid.Raw:
		return links, nil
	case cid.DagProtobuf:
		nb := dagpb.Type.PBNode.NewBuilder()
		if err := dagpb.DecodeBytes(nb, data); err != nil {
			return links, fmt.Errorf("decode dag-pb: %w", err)
		}
		it := nb.Build().(dagpb.PBNode).FieldLinks().Iterator()
		for !it.Done() {
			_, l := it.Next()
			lc, err := toCID(l.FieldHash().Link())
			if err != nil {
				return links, err
			}
			links = append(links, lc)
		}
		return links, nil
	case cid.DagCBOR:
		nb := basicnode.Prototype.Any.NewBuilder()
		// dagcbor bounds nesting depth (1024) and allocations, so the
		// recursive walk below cannot be driven arbitrarily deep.
		if err := dagcbor.Decode(nb, bytes.NewReader(data)); err != nil {
			return links, fmt.Errorf("decode dag-cbor: %w", err)
		}
		return appendNodeLinks(links, nb.Build())
	default:
		return links, fmt.Errorf("unsupported codec %s", multicodec.Code(c.Type()))
	}
}

// appendNodeLinks walks n depth-first, map entries and list items in order.
func appendNodeLinks(links []cid.Cid, n datamodel.Node) ([]cid.Cid, error) {
	switch n.Kind() {
	case datamodel.Kind_Link:
		l, err := n.AsLink()
		if err != nil {
			return links, err
		}
		c, err := toCID(l)
		if err != nil {
			return links, err
		}
		return append(links, c), nil
	case datamodel.Kind_Map:
		it := n.MapIterator()
		for !it.Done() {
			_, v, err := it.Next()
			if err != nil {
				return links, err
			}
			if links, err = appendNodeLinks(links, v); err != nil {
				return links, err
			}
		}
	case datamodel.Kind_List:
		it := n.ListIterator()
		for !it.Done() {
			_, v, err := it.Next()
			if err != nil {
				return links, err
			}
			if links, err = appendNodeLinks(links, v); err != nil {
				return links, err
			}
		}
	}
	return links, nil
}

func toCID(l datamodel.Link) (cid.Cid, error) {
	cl, ok := l.(cidlink.Link)
	if !ok || !cl.Cid.Defined() {
		return cid.Undef, fmt.Errorf("link %v is not a CID", l)
	}
	return cl.Cid, nil
}

// getFunc fetches one block, as a blockstore or blockservice does.
type getFunc = func(ctx context.Context, c cid.Cid) (blocks.Block, error)

// walk visits every block reachable from roots once, depth-first with links
// in block order, so the visiting order depends only on the DAG. A block is
// visited once its links are known, so a block walk cannot follow is never
// visited. It keeps an explicit stack: a Nix closure can chain references
// deeper than is comfortable for recursion. With lookAhead it loads the
// next blocks on other goroutines (ahead); none runs once it returns.
func walk(ctx context.Context, get getFunc, roots []cid.Cid, visit func(c cid.Cid, data []byte) error, lookAhead bool) error {
	var a *ahead
	if lookAhead {
		a = newAhead(ctx, get)
		defer a.close()
	}
	type item struct{ c, parent cid.Cid }
	seen := make(map[cid.Cid]struct{})
	stack := make([]item, 0, len(roots))
	for i := len(roots) - 1; i >= 0; i-- {
		stack = append(stack, item{c: roots[i]})
	}
	var links, next []cid.Cid
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[it.c]; ok {
			continue
		}
		seen[it.c] = struct{}{}
		if err := ctx.Err(); err != nil {
			return err
		}
		wrap := func(err error) error {
			if it.parent.Defined() {
				return fmt.Errorf("block %s (linked from %s): %w", it.c, it.parent, err)
			}
			return fmt.Errorf("root %s: %w", it.c, err)
		}
		var data []byte
		var err error
		if a != nil {
			data, err = a.load(ctx, it.c)
		} else {
			data, err = load(ctx, get, it.c)
		}
		if err != nil {
			return wrap(err)
		}
		if links, err = appendLinks(links[:0], it.c, data); err != nil {
			return wrap(err)
		}
		if visit != nil {
			if err := visit(it.c, data); err != nil {
				return wrap(err)
			}
		}
		for i := len(links) - 1; i >= 0; i-- {
			if _, ok := seen[links[i]]; !ok {
				stack = append(stack, item{c: links[i], parent: it.c})
			}
		}
		if a != nil {
			// The top of the stack is what the walk loads next; want
			// skips what it already has.
			next = next[:0]
			for i := len(stack) - 1; i >= 0 && len(next) < aheadBlocks; i-- {
				c := stack[i].c
				if _, ok := seen[c]; !ok && !isIdentity(c) {
					next = append(next, c)
				}
			}
			a.want(next)
		}
	}
	return nil
}

// load returns the bytes of block c. Identity blocks come from the CID
// itself, as go-car and boxo's idstore treat them, so get need not know them.
func load(ctx context.Context, get getFunc, c cid.Cid) ([]byte, error) {
	if err := checkCID(c); err != nil {
		return nil, err
	}
	if isIdentity(c) {
		return identityData(c)
	}
	b, err := get(ctx, c)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("get returned no block")
	}
	// A multihash-keyed blockstore may answer with another CID version of
	// the same bytes; only the hash has to agree.
	if !bytes.Equal(b.Cid().Hash(), c.Hash()) {
		return nil, fmt.Errorf("get returned block %s", b.Cid())
	}
	data := b.RawData()
	if len(data) > maxBlockSize {
		return nil, fmt.Errorf("%d bytes, over the %d-byte block limit", len(data), maxBlockSize)
	}
	return data, nil
}

// Complete checks that every block reachable from roots can be fetched
// through get and decoded. Import cannot see a CAR that leaves out part of
// the closure (a CARv1 cut at a block boundary is still a valid CAR), so
// callers run Complete before pinning. The error names the first missing
// block and the block that links it, and wraps get's error.
func Complete(ctx context.Context, get func(ctx context.Context, c cid.Cid) (blocks.Block, error), roots []cid.Cid) error {
	if err := walk(ctx, get, roots, nil, false); err != nil {
		return fmt.Errorf("check closure: %w", err)
	}
	return nil
}
