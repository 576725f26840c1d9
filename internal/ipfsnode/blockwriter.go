package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/path"
	pin "github.com/ipfs/boxo/pinning/pinner"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/kubo/core/coreiface/options"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"
)

// BlockWriter takes the blocks of one bulk import. It pins nothing: the
// caller pins the root only once the whole DAG is written and verified, so an
// import that fails leaves nothing but unpinned garbage.
type BlockWriter interface {
	Put(ctx context.Context, blk blocks.Block) error
	// Close flushes; after a nil return every block put is in the node.
	Close() error
	// Abort gives up: nothing more is written and Close is not needed.
	Abort()
}

// NewBlockWriter returns a writer suited to the backend: batched writes to the
// blockservice when embedded, one streamed CAR (`dag/import`) when external.
func (n *Node) NewBlockWriter(ctx context.Context) (BlockWriter, error) {
	if n.embedded != nil {
		return &batchWriter{ctx: ctx, n: n}, nil
	}
	return newCARWriter(ctx, n)
}

const (
	batchBlocks = 256
	batchBytes  = 8 << 20
)

type batchWriter struct {
	ctx   context.Context
	n     *Node
	buf   []blocks.Block
	bytes int
}

func (w *batchWriter) Put(_ context.Context, blk blocks.Block) error {
	w.buf = append(w.buf, blk)
	w.bytes += len(blk.RawData())
	if len(w.buf) >= batchBlocks || w.bytes >= batchBytes {
		return w.flush()
	}
	return nil
}

func (w *batchWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.n.embedded.Blocks.AddBlocks(w.ctx, w.buf); err != nil {
		return fmt.Errorf("write %d blocks: %w", len(w.buf), err)
	}
	w.buf, w.bytes = w.buf[:0], 0
	return nil
}

func (w *batchWriter) Close() error { return w.flush() }
func (w *batchWriter) Abort()       { w.buf = nil }

// carWriter streams blocks as a CARv1 into kubo's dag/import while they are
// produced, so a whole store path costs one HTTP request.
type carWriter struct {
	pw   *io.PipeWriter
	car  carstorage.WritableCar
	done chan error
	err  error
}

// placeholderRoot is the CID of the empty raw block. A CARv1 header names its
// roots before the blocks, and the root of an import is known only at the end;
// dag/import runs with pin-roots=false, so the header root is not used.
var placeholderRoot = func() cid.Cid {
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(nil)
	if err != nil {
		panic(err)
	}
	return c
}()

func newCARWriter(ctx context.Context, n *Node) (*carWriter, error) {
	pr, pw := io.Pipe()
	w := &carWriter{pw: pw, done: make(chan error, 1)}
	go func() {
		resp, err := n.rpc.Request("dag/import").
			Option("pin-roots", false).
			Option("allow-big-block", false).
			FileBody(pr).Send(ctx)
		if err == nil {
			if resp.Error != nil {
				err = resp.Error
			} else {
				_, err = io.Copy(io.Discard, resp.Output)
			}
			resp.Close()
		}
		if err != nil {
			err = fmt.Errorf("kubo dag/import: %w", err)
		}
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		w.done <- err
	}()
	car, err := carstorage.NewWritable(pw, []cid.Cid{placeholderRoot}, carv2.WriteAsCarV1(true))
	if err != nil {
		pw.CloseWithError(err)
		<-w.done
		return nil, fmt.Errorf("start CAR stream: %w", err)
	}
	w.car = car
	if err := car.Put(ctx, placeholderRoot.KeyString(), nil); err != nil {
		return nil, w.fail(err)
	}
	return w, nil
}

func (w *carWriter) fail(err error) error {
	if w.err == nil {
		w.pw.CloseWithError(err)
		// The request goroutine's error says more than a broken pipe.
		if rerr := <-w.done; rerr != nil {
			err = rerr
		}
		w.err = fmt.Errorf("stream blocks to kubo: %w", err)
	}
	return w.err
}

func (w *carWriter) Put(ctx context.Context, blk blocks.Block) error {
	if w.err != nil {
		return w.err
	}
	if err := w.car.Put(ctx, blk.Cid().KeyString(), blk.RawData()); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *carWriter) Close() error {
	if w.err != nil {
		return w.err
	}
	if err := w.pw.Close(); err != nil {
		return w.fail(err)
	}
	if err := <-w.done; err != nil {
		w.err = err
		return err
	}
	w.err = errors.New("block writer closed")
	return nil
}

func (w *carWriter) Abort() {
	if w.err == nil {
		w.fail(errors.New("import aborted"))
	}
}

// DAGWriter adapts a BlockWriter to the ipld.DAGService that DAG builders
// write through. It is write-only: Get reports not found, so a builder that
// needs to read back what it wrote must keep those nodes itself.
type DAGWriter struct {
	BlockWriter
}

var _ ipld.DAGService = DAGWriter{}

func (d DAGWriter) Add(ctx context.Context, nd ipld.Node) error { return d.Put(ctx, nd) }

func (d DAGWriter) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := d.Put(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (d DAGWriter) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (d DAGWriter) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

func (d DAGWriter) Remove(context.Context, cid.Cid) error {
	return errors.New("DAGWriter is write-only")
}

func (d DAGWriter) RemoveMany(context.Context, []cid.Cid) error {
	return errors.New("DAGWriter is write-only")
}

// PinLock holds off the embedded node's repo GC until the returned func is
// called, as kubo's own add does for the length of an import. Held from the
// first block written until the root is pinned, it lets PinWritten trust
// that the DAG is whole. An external node's GC is its own: there it does
// nothing.
func (n *Node) PinLock(ctx context.Context) func() {
	if n.embedded == nil {
		return func() {}
	}
	u := n.embedded.Blockstore.PinLock(ctx)
	return func() { u.Unlock(ctx) }
}

// PinWritten pins root recursively. Call it with PinLock held, once every
// block of root's DAG has been written through a BlockWriter that closed
// without error. The embedded node then records the pin without reading the
// DAG back: kubo's pin add re-reads every block to check it is present,
// which costs as much as writing them. An external node pins as usual.
func (n *Node) PinWritten(ctx context.Context, root cid.Cid) error {
	if n.embedded == nil {
		if err := n.API.Pin().Add(ctx, path.FromCid(root), options.Pin.Recursive(true)); err != nil {
			return fmt.Errorf("pin %s: %w", root, err)
		}
		return nil
	}
	if err := n.embedded.Pinning.PinWithMode(ctx, root, pin.Recursive, ""); err != nil {
		return fmt.Errorf("pin %s: %w", root, err)
	}
	if err := n.embedded.Pinning.Flush(ctx); err != nil {
		return fmt.Errorf("pin %s: %w", root, err)
	}
	return nil
}
