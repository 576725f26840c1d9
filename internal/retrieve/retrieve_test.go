package retrieve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nix-community/go-nix/pkg/wire"

	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests/carfile"
)

// A NAR built by hand: a directory with an empty file, a file of bigSize
// bytes, the
// same small contents twice (a block that repeats in the DAG), a symlink and
// a subdirectory.
func testNAR(t testing.TB, bigSize int) []byte {
	t.Helper()
	var b bytes.Buffer
	s := func(ss ...string) {
		for _, x := range ss {
			if err := wire.WriteString(&b, x); err != nil {
				t.Fatal(err)
			}
		}
	}
	file := func(data []byte) {
		s("(", "type", "regular", "contents")
		if err := wire.WriteBytes(&b, data); err != nil {
			t.Fatal(err)
		}
		s(")")
	}
	big := make([]byte, bigSize)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	s("nix-archive-1", "(", "type", "directory")
	s("entry", "(", "name", "a-empty", "node")
	file(nil)
	s(")", "entry", "(", "name", "b-big", "node")
	file(big)
	s(")", "entry", "(", "name", "c-same", "node")
	file([]byte("same contents\n"))
	s(")", "entry", "(", "name", "d-link", "node", "(", "type", "symlink", "target", "b-big", ")", ")")
	s("entry", "(", "name", "e-dir", "node", "(", "type", "directory")
	s("entry", "(", "name", "same", "node")
	file([]byte("same contents\n"))
	s(")", ")", ")")
	s(")")
	return b.Bytes()
}

// dagBlocks lists the blocks of the DAG under root in depth-first link
// order, each once, without identity blocks: what a holder sends.
func dagBlocks(t testing.TB, ds ipld.DAGService, root cid.Cid) []blocks.Block {
	t.Helper()
	out, err := walkDAG(ds, root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func walkDAG(ds ipld.DAGService, root cid.Cid) ([]blocks.Block, error) {
	var out []blocks.Block
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid) error
	walk = func(c cid.Cid) error {
		if seen[c] {
			return nil
		}
		seen[c] = true
		if _, ok := ipldnar.KnownNode(c); ok {
			return nil
		}
		nd, err := ds.Get(context.Background(), c)
		if err != nil {
			return err
		}
		out = append(out, nd)
		for _, l := range nd.Links() {
			if err := walk(l.Cid); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(root)
}

func carOf(t testing.TB, root cid.Cid, blks []blocks.Block) []byte {
	t.Helper()
	b, err := carBytes(root, blks)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func carBytes(root cid.Cid, blks []blocks.Block) ([]byte, error) {
	var b bytes.Buffer
	w, err := carstorage.NewWritable(&b, []cid.Cid{root}, carv2.WriteAsCarV1(true))
	if err != nil {
		return nil, err
	}
	for _, blk := range blks {
		if err := w.Put(context.Background(), blk.Cid().KeyString(), blk.RawData()); err != nil {
			return nil, err
		}
	}
	if err := w.Finalize(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// holder serves CARs of the DAG in ds: body turns the CAR of the asked
// CID into what is sent (nil: as is). It counts requests.
type holder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []string
}

func newHolder(t testing.TB, ds ipld.DAGService, body func(car []byte, w http.ResponseWriter, r *http.Request) bool) *holder {
	h := &holder{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.reqs = append(h.reqs, r.URL.String())
		h.mu.Unlock()
		c, err := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
		if err != nil || r.URL.Query().Get("format") != "car" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		// The CAR a nixipfs holder sends: the exporter its gateway uses.
		var b bytes.Buffer
		get := func(ctx context.Context, c cid.Cid) (blocks.Block, error) { return ds.Get(ctx, c) }
		if _, err := carfile.Export(r.Context(), &b, get, []cid.Cid{c}); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		car := b.Bytes()
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		if body != nil && body(car, w, r) {
			return
		}
		w.Write(car)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *holder) requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// memWriter is a BlockWriter into a map.
type memWriter struct {
	mu     *sync.Mutex
	stored map[cid.Cid][]byte
	buf    []blocks.Block
}

func (w *memWriter) Put(_ context.Context, b blocks.Block) error {
	w.buf = append(w.buf, b)
	return nil
}

func (w *memWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.buf {
		w.stored[b.Cid()] = b.RawData()
	}
	return nil
}

func (w *memWriter) Abort() {}

// noNetwork is a Network getter that has nothing and waits until asked to
// give up, as bitswap does for a block no peer has.
type noNetwork struct{ asked int }

func (n *noNetwork) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	n.asked++
	<-ctx.Done()
	return nil, ctx.Err()
}

func (n *noNetwork) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption)
	go func() { <-ctx.Done(); close(out) }()
	return out
}

type fixture struct {
	nar    []byte
	root   cid.Cid
	src    ipld.DAGService // the holders' DAG
	local  ipld.DAGService // the follower's store: empty
	mu     sync.Mutex
	stored map[cid.Cid][]byte
	net    *noNetwork
}

func newFixture(t testing.TB) *fixture { return newFixtureSize(t, 3<<20+512<<10) }

func newFixtureSize(t testing.TB, bigSize int) *fixture {
	f := &fixture{nar: testNAR(t, bigSize), src: mdtest.Mock(), local: mdtest.Mock(), stored: map[cid.Cid][]byte{}, net: &noNetwork{}}
	res, err := ipldnar.Import(context.Background(), bytes.NewReader(f.nar), f.src)
	if err != nil {
		t.Fatal(err)
	}
	f.root = res.Root
	return f
}

func (f *fixture) retriever(holders []string, mutate func(*Config)) *Retriever {
	cfg := Config{
		Local:   f.local,
		Network: f.net,
		NewWriter: func(context.Context) (BlockWriter, error) {
			return &memWriter{mu: &f.mu, stored: f.stored}, nil
		},
		Holders: func(context.Context) []Holder {
			var hs []Holder
			for _, u := range holders {
				hs = append(hs, Holder{URL: u})
			}
			return hs
		},
		Stall: 2 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return New(cfg)
}

// render renders the fixture's NAR through a session.
func (f *fixture) render(t testing.TB, r *Retriever) ([]byte, error) {
	t.Helper()
	s := r.Session(context.Background(), f.root, int64(len(f.nar)))
	var b bytes.Buffer
	_, err := ipldnar.Render(context.Background(), &b, f.root, s)
	s.Close()
	return b.Bytes(), err
}

func (f *fixture) checkStored(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	want := dagBlocks(t, f.src, f.root)
	if len(f.stored) != len(want) {
		t.Errorf("stored %d blocks, the DAG has %d", len(f.stored), len(want))
	}
	for _, b := range want {
		if !bytes.Equal(f.stored[b.Cid()], b.RawData()) {
			t.Errorf("block %s not stored as it is", b.Cid())
		}
	}
}

// The whole DAG comes as one CAR; the render gets it all from there, the
// network is never asked, and every block used is stored once: after the
// render, or during it once the deferred budget is spent.
func TestOneCAR(t *testing.T) {
	for _, deferred := range []int{0, 1} {
		t.Run(fmt.Sprintf("deferred=%d", deferred), func(t *testing.T) { oneCAR(t, deferred) })
	}
}

func oneCAR(t *testing.T, deferred int) {
	f := newFixture(t)
	h := newHolder(t, f.src, nil)
	r := f.retriever([]string{h.srv.URL}, func(c *Config) { c.DeferredBytes = deferred })
	got, err := f.render(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.nar) {
		t.Fatal("rendered NAR differs")
	}
	if n := h.requests(); n != 1 {
		t.Errorf("%d CAR requests, want 1", n)
	}
	if c := r.Counters(); c.NetworkGets.Load() != 0 || c.CARStreams.Load() != 1 || c.Stalls.Load() != 0 {
		t.Errorf("counters: network %d, streams %d, stalls %d", c.NetworkGets.Load(), c.CARStreams.Load(), c.Stalls.Load())
	}
	if f.net.asked != 0 {
		t.Errorf("the network was asked %d times", f.net.asked)
	}
	f.checkStored(t)
	if d := r.deferred.Load(); d != 0 {
		t.Errorf("%d bytes of the deferred budget still taken after Close", d)
	}
}

// TestDenied renders from a holder's CAR stream with one of the DAG's
// blocks denied: the render fails at it, and the network is not asked for
// it either.
func TestDenied(t *testing.T) {
	f := newFixture(t)
	h := newHolder(t, f.src, nil)
	var leaf cid.Cid
	nd, err := f.src.Get(context.Background(), f.root)
	if err != nil {
		t.Fatal(err)
	}
	for len(nd.Links()) > 0 {
		leaf = nd.Links()[len(nd.Links())-1].Cid
		if nd, err = f.src.Get(context.Background(), leaf); err != nil {
			t.Fatal(err)
		}
	}
	r := f.retriever([]string{h.srv.URL}, func(c *Config) { c.Denied = func(c cid.Cid) bool { return c.Equals(leaf) } })
	if _, err := f.render(t, r); err == nil || !strings.Contains(err.Error(), "denylist") {
		t.Fatalf("render with a denied block: %v, want a denylist error", err)
	}
	if f.net.asked != 0 {
		t.Errorf("the network was asked %d times", f.net.asked)
	}
}

// A holder that fails in any way is followed by the next one, which is
// asked for what is still missing; nothing it sent wrongly is stored.
func TestFailingHolders(t *testing.T) {
	cut := func(car []byte, w http.ResponseWriter, _ *http.Request) bool {
		w.Write(car[:len(car)/2])
		panic(http.ErrAbortHandler)
	}
	corrupt := func(car []byte, w http.ResponseWriter, _ *http.Request) bool {
		bad := slices.Clone(car)
		bad[len(bad)/2] ^= 1
		w.Write(bad)
		return true
	}
	// A CAR of the right root with unrelated (valid) blocks: the holder
	// does not have the DAG.
	unrelated := func(_ []byte, w http.ResponseWriter, r *http.Request) bool {
		blk := blocks.NewBlock([]byte("not part of the DAG"))
		root, _ := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
		car, _ := carBytes(root, []blocks.Block{blk})
		w.Write(car)
		return true
	}
	notFound := func(_ []byte, w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "not found", http.StatusNotFound)
		return true
	}
	garbage := func(_ []byte, w http.ResponseWriter, _ *http.Request) bool {
		w.Write([]byte("this is not a CAR at all"))
		return true
	}
	// Unrelated blocks, one at a time, for ever: the stream makes
	// progress, never with the block awaited.
	trickle := func(_ []byte, w http.ResponseWriter, r *http.Request) bool {
		root, _ := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
		cw, err := carstorage.NewWritable(w, []cid.Cid{root}, carv2.WriteAsCarV1(true))
		if err != nil {
			return true
		}
		for i := 0; r.Context().Err() == nil; i++ {
			blk := blocks.NewBlock(fmt.Appendf(nil, "unrelated %d", i))
			if cw.Put(r.Context(), blk.Cid().KeyString(), blk.RawData()) != nil {
				return true
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		return true
	}
	for name, bad := range map[string]func([]byte, http.ResponseWriter, *http.Request) bool{
		"cut": cut, "corrupt": corrupt, "unrelated": unrelated, "404": notFound, "garbage": garbage, "trickle": trickle,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			hb := newHolder(t, f.src, bad)
			hg := newHolder(t, f.src, nil)
			r := f.retriever([]string{hb.srv.URL, hg.srv.URL}, func(c *Config) { c.Stall = 300 * time.Millisecond })
			got, err := f.render(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.nar) {
				t.Fatal("rendered NAR differs")
			}
			c := r.Counters()
			if name != "unrelated" && name != "trickle" && c.CARFailures.Load() < 1 {
				t.Errorf("no failed stream counted")
			}
			if name == "corrupt" && c.RejectedCARs.Load() != 1 {
				t.Errorf("rejected %d, want 1", c.RejectedCARs.Load())
			}
			if hg.requests() < 1 {
				t.Errorf("the good holder was not asked")
			}
			f.checkStored(t) // the unrelated block is not among them
		})
	}
}

// A holder that sends more than the DAG can hold is cut off.
func TestExcess(t *testing.T) {
	f := newFixture(t)
	flood := func(_ []byte, w http.ResponseWriter, r *http.Request) bool {
		root, _ := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
		cw, err := carstorage.NewWritable(w, []cid.Cid{root}, carv2.WriteAsCarV1(true))
		if err != nil {
			return true
		}
		for i := 0; i < 200; i++ {
			blk := blocks.NewBlock(fmt.Appendf(bytes.Repeat([]byte{'x'}, 1<<20), "%d", i))
			if cw.Put(r.Context(), blk.Cid().KeyString(), blk.RawData()) != nil {
				return true
			}
		}
		return true
	}
	h := newHolder(t, f.src, flood)
	r := f.retriever([]string{h.srv.URL}, func(c *Config) { c.Stall = 300 * time.Millisecond })
	s := r.Session(context.Background(), f.root, int64(len(f.nar)))
	s.limit = 8 << 20 // well below the 200 MiB sent
	_, err := ipldnar.Render(context.Background(), io.Discard, f.root, s)
	s.Close()
	if err == nil {
		t.Fatal("render succeeded from a holder that sent no block of the DAG")
	}
	if r.Counters().RejectedCARs.Load() != 1 {
		t.Errorf("rejected %d streams, want 1", r.Counters().RejectedCARs.Load())
	}
	if got := r.Counters().CARBytes.Load(); got > 10<<20 {
		t.Errorf("took %d bytes from the flooding holder", got)
	}
}

// With no holder and nothing on the network, a Get ends within the stall
// bound with a StallError naming the block and who was asked.
func TestStall(t *testing.T) {
	f := newFixture(t)
	hang := func(car []byte, w http.ResponseWriter, r *http.Request) bool {
		w.Write(car[:200])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	}
	h := newHolder(t, f.src, hang)
	r := f.retriever([]string{h.srv.URL}, func(c *Config) { c.Stall = 300 * time.Millisecond })
	start := time.Now()
	_, err := f.render(t, r)
	took := time.Since(start)
	var se *StallError
	if !errors.As(err, &se) {
		t.Fatalf("render error %v, want a StallError", err)
	}
	if !slices.Contains(se.Asked, h.srv.URL) {
		t.Errorf("stall names %v as asked, not the holder %s", se.Asked, h.srv.URL)
	}
	var ne *ipldnar.Error
	if !errors.As(err, &ne) || ne.Path == "" {
		t.Errorf("render error %v names no NAR entry", err)
	}
	if took > 5*time.Second {
		t.Errorf("stalled render ended after %s (bound 300 ms per wait)", took)
	}
	if r.Counters().Stalls.Load() < 1 {
		t.Errorf("no stall counted")
	}
}

// Blocks arriving in another order than the render wants (here reversed)
// overflow the memory bound; they are spilled to the store and read back.
func TestSpill(t *testing.T) {
	f := newFixture(t)
	reversed := func(_ []byte, w http.ResponseWriter, r *http.Request) bool {
		root, _ := cid.Decode(strings.TrimPrefix(r.URL.Path, "/ipfs/"))
		blks, _ := walkDAG(f.src, root)
		slices.Reverse(blks)
		car, _ := carBytes(root, blks)
		w.Write(car)
		return true
	}
	h := newHolder(t, f.src, reversed)
	// The follower's store is where spilled blocks go and come back from.
	local := mdtest.Mock()
	r := f.retriever([]string{h.srv.URL}, func(c *Config) {
		c.MemoryBytes = 256 << 10
		c.Local = local
		c.NewWriter = func(ctx context.Context) (BlockWriter, error) { return &dagWriter{ds: local}, nil }
	})
	got, err := f.render(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.nar) {
		t.Fatal("rendered NAR differs")
	}
	if f.net.asked != 0 {
		t.Errorf("the network was asked %d times", f.net.asked)
	}
}

type dagWriter struct {
	ds  ipld.DAGService
	buf []blocks.Block
}

func (w *dagWriter) Put(_ context.Context, b blocks.Block) error {
	w.buf = append(w.buf, b)
	return nil
}

func (w *dagWriter) Close() error {
	for _, b := range w.buf {
		nd, err := ipldnar.DecodeBlock(b)
		if err != nil {
			return err
		}
		if err := w.ds.Add(context.Background(), nd); err != nil {
			return err
		}
	}
	return nil
}

func (w *dagWriter) Abort() {}

// quickLocal is a local store with every block at hand.
type quickLocal struct{ ipld.NodeGetter }

func (q quickLocal) GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool) {
	nd, err := q.Get(ctx, c)
	return nd, err == nil
}

// A session answers GetQuick from a local store that has the block at
// hand, except for a denied block and while it streams from a holder
// (whose bookkeeping only Get does).
func TestSessionGetQuick(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	nd, err := f.src.Get(ctx, f.root)
	if err != nil {
		t.Fatal(err)
	}
	var child cid.Cid
	for _, l := range nd.Links() {
		if _, known := ipldnar.KnownNode(l.Cid); !known {
			child = l.Cid
		}
	}
	r := f.retriever(nil, func(c *Config) {
		c.Local = quickLocal{f.src}
		c.Denied = func(c cid.Cid) bool { return c.Equals(child) }
	})
	s := r.Session(ctx, f.root, int64(len(f.nar)))
	defer s.Close()
	if got, ok := s.GetQuick(ctx, f.root); !ok || !got.Cid().Equals(f.root) {
		t.Fatalf("root not at hand (%v)", ok)
	}
	if _, ok := s.GetQuick(ctx, child); ok {
		t.Error("a denied block is at hand")
	}
	s.mu.Lock()
	s.streaming = true
	s.mu.Unlock()
	if _, ok := s.GetQuick(ctx, f.root); ok {
		t.Error("at hand while streaming")
	}
	s.mu.Lock()
	s.streaming = false
	s.mu.Unlock()
	if _, ok := f.retriever(nil, nil).Session(ctx, f.root, 1).GetQuick(ctx, f.root); ok {
		t.Error("at hand from a store that has no GetQuick")
	}
}

// With no holder and no IPFS peer connected, a block that is not local
// fails at once with a NoSourceError (bitswap is not asked: nobody could
// answer), and Available says so before anyone asks. A peer, a holder, a
// local root or peers not known (an external node) make it available, and
// then bitswap is asked as before.
func TestNoSource(t *testing.T) {
	f := newFixture(t)
	var peers []peer.ID
	r := f.retriever(nil, func(c *Config) {
		c.Stall = time.Minute // a wait would show as a hang
		c.Peers = func() []peer.ID { return peers }
	})
	ctx := context.Background()
	if r.Available(ctx, f.root) {
		t.Errorf("a root not here is available with no holder and no peer")
	}
	_, err := f.render(t, r)
	var ns *NoSourceError
	if !errors.As(err, &ns) || ns.Cid != f.root || !strings.Contains(err.Error(), f.root.String()) {
		t.Errorf("render error %v, want a NoSourceError naming the root", err)
	}
	if f.net.asked != 0 {
		t.Errorf("bitswap asked %d times with no peer to ask", f.net.asked)
	}

	peers = []peer.ID{"12D3KooWPeer"}
	if !r.Available(ctx, f.root) {
		t.Errorf("not available with a peer connected")
	}
	withHolder := f.retriever([]string{"http://127.0.0.1:1"}, func(c *Config) { c.Peers = func() []peer.ID { return nil } })
	if !withHolder.Available(ctx, f.root) {
		t.Errorf("not available with a holder listed")
	}
	unknown := f.retriever(nil, nil)
	if !unknown.Available(ctx, f.root) {
		t.Errorf("not available with the peers not known")
	}
	nd, err := f.src.Get(ctx, f.root)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.local.Add(ctx, nd); err != nil {
		t.Fatal(err)
	}
	peers = nil
	if !r.Available(ctx, f.root) {
		t.Errorf("a local root is not available")
	}
}

// Connected peers whose gateways answered 404 for a block are not asked
// for it again over bitswap: with no other peer connected the render fails
// at once, naming the holders asked; one more peer, and bitswap is asked.
func TestNoSourceHoldersLack(t *testing.T) {
	f := newFixture(t)
	lacking := newHolder(t, mdtest.Mock(), nil) // has nothing: 404
	var peers []peer.ID
	r := f.retriever(nil, func(c *Config) {
		c.Stall = time.Minute // a wait would show as a hang
		c.Holders = func(context.Context) []Holder { return []Holder{{URL: lacking.srv.URL, Peer: "holder-peer"}} }
		c.Peers = func() []peer.ID { return peers }
	})
	peers = []peer.ID{"holder-peer"}
	_, err := f.render(t, r)
	var ns *NoSourceError
	if !errors.As(err, &ns) || ns.Cid != f.root || !slices.Equal(ns.Asked, []string{lacking.srv.URL}) {
		t.Errorf("render error %v, want a NoSourceError naming the root and the holder asked", err)
	}
	if f.net.asked != 0 || lacking.requests() != 1 {
		t.Errorf("bitswap asked %d times, the holder %d times; want 0 and 1", f.net.asked, lacking.requests())
	}

	peers = []peer.ID{"holder-peer", "another-peer"}
	r = f.retriever(nil, func(c *Config) {
		c.Stall = 100 * time.Millisecond
		c.Holders = func(context.Context) []Holder { return []Holder{{URL: lacking.srv.URL, Peer: "holder-peer"}} }
		c.Peers = func() []peer.ID { return peers }
	})
	_, err = f.render(t, r)
	var se *StallError
	if !errors.As(err, &se) || f.net.asked != 1 {
		t.Errorf("with another peer: render error %v, bitswap asked %d times; want a stall after asking it once", err, f.net.asked)
	}
}
