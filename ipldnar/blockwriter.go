package ipldnar

import (
	"context"
	"errors"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Batching of writes to the destination: blocks are handed over with AddMany
// once this many are pending or they add up to this many bytes.
const (
	flushNodes = 128
	flushBytes = 8 << 20
)

// blockWriter is the DAGService that boxo's builders see during one Import.
//
// It exists because the destination may be write-only (a CAR stream whose
// Get always fails) while boxo's HAMT code is written against a full
// DAGService, and because boxo adds some nodes more than once (the HAMT adds
// every child it is given, the balanced builder adds the root it returns).
// So it:
//   - writes each block to dst once per import, in batches (AddMany);
//   - serves dag-pb nodes written in this import from memory. They are the
//     metadata of the tree (directories, symlinks, file roots and
//     intermediate nodes: a few dozen bytes per entry and per GiB of file
//     data); raw leaves are not kept, boxo never reads them back.
//
// It is not safe for concurrent use; each Import has its own.
type blockWriter struct {
	ctx     context.Context
	dst     ipld.DAGService
	seen    map[cid.Cid]struct{}
	pb      map[cid.Cid]ipld.Node
	pending []ipld.Node
	pendLen int
}

var _ ipld.DAGService = (*blockWriter)(nil)

func newBlockWriter(ctx context.Context, dst ipld.DAGService) *blockWriter {
	return &blockWriter{
		ctx:  ctx,
		dst:  dst,
		seen: make(map[cid.Cid]struct{}),
		pb:   make(map[cid.Cid]ipld.Node),
	}
}

// Add queues nd for writing unless it was written before. The context of the
// import is used rather than ctx: boxo's builders pass context.TODO().
func (w *blockWriter) Add(_ context.Context, nd ipld.Node) error {
	c := nd.Cid()
	if _, ok := w.seen[c]; ok {
		return nil
	}
	w.seen[c] = struct{}{}
	if _, ok := nd.(*dag.ProtoNode); ok {
		w.pb[c] = nd
	}
	w.pending = append(w.pending, nd)
	w.pendLen += len(nd.RawData())
	if len(w.pending) >= flushNodes || w.pendLen >= flushBytes {
		return w.flush()
	}
	return nil
}

func (w *blockWriter) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := w.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

// flush hands the pending blocks to dst.
func (w *blockWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		return err
	}
	var err error
	if len(w.pending) == 1 {
		err = w.dst.Add(w.ctx, w.pending[0])
	} else {
		err = w.dst.AddMany(w.ctx, w.pending)
	}
	// A fresh slice: dst may keep the one it was given (ipld.Batch does).
	w.pending, w.pendLen = nil, 0
	return err
}

func (w *blockWriter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if nd, ok := w.pb[c]; ok {
		return nd, nil
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	return w.dst.Get(ctx, c)
}

func (w *blockWriter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	var rest []cid.Cid
	for _, c := range cids {
		if nd, ok := w.pb[c]; ok {
			out <- &ipld.NodeOption{Node: nd}
		} else {
			rest = append(rest, c)
		}
	}
	if len(rest) == 0 {
		close(out)
		return out
	}
	if err := w.flush(); err != nil {
		out <- &ipld.NodeOption{Err: err}
		close(out)
		return out
	}
	go func() {
		defer close(out)
		for opt := range w.dst.GetMany(ctx, rest) {
			out <- opt
		}
	}()
	return out
}

var errNoRemove = errors.New("ipldnar: import does not remove blocks")

func (w *blockWriter) Remove(context.Context, cid.Cid) error       { return errNoRemove }
func (w *blockWriter) RemoveMany(context.Context, []cid.Cid) error { return errNoRemove }
