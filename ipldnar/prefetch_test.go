package ipldnar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// rpcLikeGetter answers GetMany as kubo's RPC client does: one goroutine
// and one answer per CID given (duplicates included), errors without the
// CID, and a channel that is never closed.
type rpcLikeGetter struct {
	ng    ipld.NodeGetter
	fails atomic.Bool // after it is set, every fetch fails
}

var errGone = errors.New("connection refused")

func (g *rpcLikeGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if g.fails.Load() {
		return nil, errGone
	}
	return g.ng.Get(ctx, c)
}

func (g *rpcLikeGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption)
	for _, c := range cids {
		go func() {
			n, err := g.Get(ctx, c)
			select {
			case out <- &ipld.NodeOption{Node: n, Err: err}:
			case <-ctx.Done():
			}
		}()
	}
	return out
}

// A NodeGetter whose GetMany never closes its channel (kubo's RPC client)
// must neither hang rendering nor leave it waiting when fetches fail.
func TestRenderGetManyNeverCloses(t *testing.T) {
	data := randBytes(7, 40<<20+123) // 41 leaves: many prefetch batches
	nar := encodeNAR(dir(ent("a", file(data)), ent("b", file(data[:3<<20]))))
	ds := mdtest.Mock()
	res := mustImport(t, nar, ds)
	g := &rpcLikeGetter{ng: ds}

	done := make(chan []byte)
	go func() { done <- mustRender(t, res.Root, g) }()
	select {
	case got := <-done:
		if !bytes.Equal(got, nar) {
			t.Fatal("rendered NAR differs")
		}
	case <-time.After(time.Minute):
		t.Fatal("Render hangs on a GetMany that never closes")
	}

	// Fetches start failing mid-render (the node went away): Render ends
	// with the error.
	w := &failAfter{n: 2 << 20, g: g} // well before the last lookaheadBlocks leaves
	errc := make(chan error)
	go func() {
		_, err := Render(context.Background(), w, res.Root, g)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, errGone) {
			t.Fatalf("Render with the node gone: %v, want %v", err, errGone)
		}
	case <-time.After(time.Minute):
		t.Fatal("Render hangs when fetches fail")
	}
}

// failAfter makes g fail once n bytes were written.
type failAfter struct {
	n       int
	written int
	g       *rpcLikeGetter
}

func (f *failAfter) Write(p []byte) (int, error) {
	f.written += len(p)
	if f.written >= f.n {
		f.g.fails.Store(true)
	}
	return len(p), nil
}

// Hinted nodes count against the look-ahead's bytes; when they alone fill
// them, the walker must still list the next node, or Render waits forever.
func TestRenderLargeHintedNodes(t *testing.T) {
	ctx := context.Background()
	ds := mdtest.Mock()
	var names []string
	var children []ipld.Node
	var entries []tentry
	for i := range lookaheadHints + 4 {
		data := bytes.Repeat([]byte{byte(i)}, 3<<20) // inline in a dag-pb file node
		nd := pbNode(t, pb.Data_File, data)
		must(t, ds.Add(ctx, nd))
		names = append(names, fmt.Sprintf("f%02d", i))
		children = append(children, nd)
		entries = append(entries, ent(names[i], file(data)))
	}
	root := dirNode(t, names, children)
	must(t, ds.Add(ctx, root))
	done := make(chan []byte)
	go func() { done <- mustRender(t, root.Cid(), ds) }()
	select {
	case got := <-done:
		if !bytes.Equal(got, encodeNAR(dir(entries...))) {
			t.Fatal("rendered NAR differs")
		}
	case <-time.After(time.Minute):
		t.Fatal("Render hangs when hinted nodes fill the look-ahead")
	}
}

// latencyGetter answers each Get after a delay, as a peer does, and
// records how many ran at once.
type latencyGetter struct {
	ng            ipld.NodeGetter
	delay         time.Duration
	inflight, max atomic.Int32
}

func (g *latencyGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
	}
	time.Sleep(g.delay) // the latency being modelled, not a wait for another goroutine
	return g.ng.Get(ctx, c)
}

func (g *latencyGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	return (slowGetter{g, 0}).GetMany(ctx, cids)
}

// Look-ahead starts few fetches at a time, but when Render keeps waiting
// for them (blocks from a peer) all prefetchWorkers run at once.
func TestLookaheadWorkersGrow(t *testing.T) {
	data := randBytes(8, 40<<20+5) // 41 leaves
	nar := encodeNAR(dir(ent("a", file(data))))
	ds := mdtest.Mock()
	res := mustImport(t, nar, ds)
	g := &latencyGetter{ng: ds, delay: 2 * time.Millisecond}
	if got := mustRender(t, res.Root, g); !bytes.Equal(got, nar) {
		t.Fatal("rendered NAR differs")
	}
	if m := g.max.Load(); m != prefetchWorkers {
		t.Fatalf("at most %d fetches ran at once, want %d", m, prefetchWorkers)
	}
}

// quickGetter answers GetQuick from ng for the CIDs in quick and counts
// the Gets it is asked.
type quickGetter struct {
	ng    ipld.NodeGetter
	quick func(cid.Cid) bool
	gets  atomic.Int64
}

func (g *quickGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	g.gets.Add(1)
	return g.ng.Get(ctx, c)
}

func (g *quickGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	return g.ng.GetMany(ctx, cids)
}

func (g *quickGetter) GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool) {
	if !g.quick(c) {
		return nil, false
	}
	nd, err := g.ng.Get(ctx, c)
	return nd, err == nil
}

// Render takes what a QuickGetter has at hand from GetQuick and fetches
// only the rest, also through a Recycler, and the NAR is the same.
func TestRenderQuickGetter(t *testing.T) {
	data := randBytes(8, 5<<20+77)
	nar := encodeNAR(dir(ent("a", file(data)), ent("b", dir(ent("c", file([]byte("small"))), ent("d", link("a")))), ent("e", file(data[:3<<20]))))
	ds := mdtest.Mock()
	res := mustImport(t, nar, ds)
	for _, c := range []struct {
		name     string
		quick    func(cid.Cid) bool
		wantGets func(int64) bool
	}{
		{"all at hand", func(cid.Cid) bool { return true }, func(n int64) bool { return n == 0 }},
		{"raw leaves at hand", func(c cid.Cid) bool { return c.Prefix().Codec == cid.Raw }, func(n int64) bool { return n > 0 && n < 6 }},
		{"none at hand", func(cid.Cid) bool { return false }, func(n int64) bool { return n >= 6 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := &quickGetter{ng: ds, quick: c.quick}
			var recycled int
			got := mustRender(t, res.Root, WithRecycle(g, func([]byte) { recycled++ }))
			if !bytes.Equal(got, nar) {
				t.Fatal("rendered NAR differs")
			}
			if n := g.gets.Load(); !c.wantGets(n) {
				t.Errorf("%d Gets", n)
			}
			if recycled == 0 {
				t.Error("no block was given back")
			}
		})
	}
}
