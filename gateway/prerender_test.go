package gateway

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/manifests"
)

// record is a made-up record, root i, NAR size bytes.
func record(i byte, size int64) *manifests.PathInfo {
	h, _ := mh.Sum([]byte{i}, mh.SHA2_256, -1)
	return &manifests.PathInfo{Root: cid.NewCidV1(cid.Raw, h), NarHash: make([]byte, 32), NarSize: size}
}

// TestPrerenderQueue checks the queue's bounds without rendering: a full
// queue drops its oldest NAR, a NAR the cache holds is not queued, nothing starts before a NAR request arms it,
// NARs queued longer than staleAfter are dropped, not rendered, and a
// request takes its own NAR off the queue.
func TestPrerenderQueue(t *testing.T) {
	nc, err := narcache.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pr := newPrerenderer(&Gateway{cfg: Config{NARCache: nc}}, nil, 2, 1<<20)
	for i := range 3 {
		pr.want(record(byte(i), 1))
	}
	if n := len(pr.stack); n != 2 || pr.dropped.Load() != 1 || pr.queued.Load() != 3 {
		t.Fatalf("full queue: %d queued, %d dropped, want 2 and 1", n, pr.dropped.Load())
	}
	cached := record(8, 1)
	cw := nc.Create(cached.Root, cached.NarHash, cached.NarSize)
	if _, err := cw.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	cw.CommitNow()
	pr.want(cached)
	if pr.queued.Load() != 3 {
		t.Fatal("a NAR the cache holds was queued")
	}
	select {
	case <-pr.idle:
	default:
		t.Fatal("a worker started with no NAR asked for")
	}

	old := time.Now().Add(-staleAfter - time.Second)
	for i := range pr.stack {
		pr.stack[i].at = old
	}
	other := record(9, 1)
	pr.requested(other.Root, "some NAR")
	if err := pr.waitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(pr.stack); n != 0 || pr.dropped.Load() != 3 || pr.rendered.Load()+pr.failed.Load() != 0 {
		t.Fatalf("stale queue: %d left, %d dropped, %d rendered, %d failed; want all 3 dropped",
			n, pr.dropped.Load(), pr.rendered.Load(), pr.failed.Load())
	}

	mine := record(7, 1)
	pr.armed = time.Time{} // disarmed again
	pr.want(mine)
	pr.want(other)
	pr.stopped = true // no worker: see what the request leaves queued
	pr.requested(mine.Root, "mine")
	if len(pr.stack) != 1 || pr.stack[0].p != other {
		t.Fatalf("a request left its own NAR queued: %d queued", len(pr.stack))
	}
}

// TestPrerenderBudget checks that the prerenderer keeps at most its budget
// of NARs rendered and not yet asked for: a NAR larger than the budget is
// dropped, one that does not fit waits until a request takes a NAR
// rendered ahead, and NARs rendered ahead that nobody asks for are counted
// unused after staleAfter.
func TestPrerenderBudget(t *testing.T) {
	nc, err := narcache.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	name := func(p *manifests.PathInfo) string { return narcache.Name(p.Root, p.NarHash, p.NarSize) }
	// No block is here: a render fails (and is counted).
	pr := newPrerenderer(&Gateway{cfg: Config{NARCache: nc, Logger: slog.Default()}}, mdtest.Mock(), 8, 100)
	now := time.Now()
	pr.armed = now.Add(armWindow)
	pr.swept = now
	big, fits, waits := record(1, 101), record(2, 60), record(3, 50)
	pr.stack = []queuedNAR{{waits, now}, {fits, now}, {big, now}}

	p, cw, ok := pr.next(now)
	if !ok || p != fits {
		t.Fatalf("next: %v, %v; want the NAR that fits, after dropping the one larger than the budget", p, ok)
	}
	cw.Abort()
	if pr.dropped.Load() != 1 {
		t.Fatalf("%d dropped, want 1", pr.dropped.Load())
	}
	pr.ahead[name(fits)] = queuedNAR{fits, now}
	pr.aheadBytes = fits.NarSize
	if p, _, ok := pr.next(now); ok {
		t.Fatalf("next: %v with 60 of 100 bytes ahead; want to wait", p)
	}
	if len(pr.stack) != 1 {
		t.Fatalf("the NAR that does not fit yet left the queue")
	}

	// The request frees the budget, and a worker takes the waiting NAR.
	pr.requested(fits.Root, name(fits))
	if err := pr.waitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pr.aheadBytes != 0 || pr.used.Load() != 1 || len(pr.stack) != 0 || pr.failed.Load() != 1 {
		t.Fatalf("after a request: %d bytes ahead, %d used, %d queued, %d failed; want 0, 1, 0, 1",
			pr.aheadBytes, pr.used.Load(), len(pr.stack), pr.failed.Load())
	}

	old := now.Add(-staleAfter - time.Second)
	pr.ahead[name(big)] = queuedNAR{big, old}
	pr.aheadBytes, pr.swept = big.NarSize, old
	pr.next(now)
	if pr.aheadBytes != 0 || pr.unused.Load() != 1 || len(pr.ahead) != 0 {
		t.Fatalf("stale NAR ahead: %d bytes ahead, %d unused; want 0 and 1", pr.aheadBytes, pr.unused.Load())
	}
}

// hangingGetter answers no Get until its context ends; started is closed
// at the first.
type hangingGetter struct {
	ipld.NodeGetter
	once    sync.Once
	started chan struct{}
}

func (h *hangingGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	h.once.Do(func() { close(h.started) })
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestPrerenderStop: a render cut short by stop (the daemon shutting down)
// is not counted as failed, and nothing of it enters the NAR cache.
func TestPrerenderStop(t *testing.T) {
	nc, err := narcache.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	h := &hangingGetter{NodeGetter: mdtest.Mock(), started: make(chan struct{})}
	pr := newPrerenderer(&Gateway{cfg: Config{NARCache: nc, Logger: slog.Default()}}, h, 8, 1<<20)
	p := record(1, 10)
	pr.want(p)
	pr.requested(record(2, 1).Root, "another NAR")
	<-h.started
	pr.stop()
	if err := pr.waitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pr.failed.Load() != 0 || pr.rendered.Load() != 0 {
		t.Fatalf("%d failed, %d rendered; want none of either", pr.failed.Load(), pr.rendered.Load())
	}
	if nc.Has(narcache.Name(p.Root, p.NarHash, p.NarSize)) {
		t.Fatal("the cut render entered the NAR cache")
	}
}
