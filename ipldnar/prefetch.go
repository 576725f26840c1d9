package ipldnar

import (
	"context"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Prefetching in Render. Every list of links Render walks in order (the
// children of a directory, the children of a file node) gets a queue that
// fetches the next few nodes in the background with GetMany, so that
// fetching overlaps writing and a remote NodeGetter sees several wants at
// once.
//
// Memory is bounded by a per-Render budget of tokens, one per node fetched
// ahead of use. Queues only take tokens that are free (never wait for one),
// and a node that was not prefetched is fetched synchronously when it is
// needed, so queues of outer directories holding tokens cannot stall the
// inner ones.
const (
	prefetchBudget = 32 // nodes held ahead of use per Render (~32 MiB of leaves)
	dirWindow      = 4  // lookahead of a directory's children
	fileWindow     = 16 // lookahead of a file node's children (1 MiB leaves)
)

type prefetcher struct {
	src    ipld.NodeGetter
	tokens chan struct{} // a send takes a token, a receive gives it back
}

func newPrefetcher(src ipld.NodeGetter) *prefetcher {
	return &prefetcher{src: src, tokens: make(chan struct{}, prefetchBudget)}
}

// take takes up to n free tokens without waiting and says how many it got.
func (p *prefetcher) take(n int) int {
	for i := 0; i < n; i++ {
		select {
		case p.tokens <- struct{}{}:
		default:
			return i
		}
	}
	return n
}

func (p *prefetcher) give(n int) {
	for ; n > 0; n-- {
		<-p.tokens
	}
}

// slot receives one prefetched node; nd stays nil if prefetching failed (the
// consumer then fetches it itself, which gives a precise error).
type slot struct {
	done chan struct{}
	nd   ipld.Node
}

// queue yields the nodes of cids in order.
type queue struct {
	p      *prefetcher
	ctx    context.Context
	bgCtx  context.Context // for background fetches; nil until the first
	cancel context.CancelFunc
	cids   []cid.Cid
	slots  []*slot // slots[i] is set for next <= i < issued if prefetched
	window int
	next   int // index of the next node to yield
	issued int // nodes before this index are prefetched or being yielded
}

func (p *prefetcher) queue(ctx context.Context, cids []cid.Cid, window int) *queue {
	return &queue{p: p, ctx: ctx, cids: cids, window: window}
}

// Next returns the next node. It must not be called more than len(cids)
// times.
func (q *queue) Next() (ipld.Node, error) {
	i := q.next
	q.next++
	var s *slot
	if i < q.issued {
		s, q.slots[i] = q.slots[i], nil
	} else {
		q.issued = i + 1
	}
	q.refill()
	if s != nil {
		select {
		case <-s.done:
		case <-q.ctx.Done():
			q.p.give(1)
			return nil, q.ctx.Err()
		}
		q.p.give(1)
		if s.nd != nil {
			return s.nd, nil
		}
	}
	return q.p.src.Get(q.ctx, q.cids[i])
}

// refill starts fetching the nodes after the current one, as far as the
// window and the free tokens allow. It waits until half the window is free
// so that fetches go out in batches rather than one goroutine per node.
func (q *queue) refill() {
	end := min(len(q.cids), q.next+q.window)
	want := end - q.issued
	if want <= 0 || (want < q.window/2 && end < len(q.cids) && q.issued > q.next) {
		return
	}
	got := q.p.take(want)
	if got == 0 {
		return
	}
	if q.slots == nil {
		q.slots = make([]*slot, len(q.cids))
		q.bgCtx, q.cancel = context.WithCancel(q.ctx)
	}
	batch := make([]*slot, got)
	for j := range batch {
		batch[j] = &slot{done: make(chan struct{})}
		q.slots[q.issued+j] = batch[j]
	}
	go fetch(q.bgCtx, q.p.src, q.cids[q.issued:q.issued+got], batch)
	q.issued += got
}

// fetch fills slots[i] with the node of cids[i].
func fetch(ctx context.Context, src ipld.NodeGetter, cids []cid.Cid, slots []*slot) {
	if len(cids) == 1 {
		if nd, err := src.Get(ctx, cids[0]); err == nil {
			slots[0].nd = nd
		}
		close(slots[0].done)
		return
	}
	// GetMany answers in any order and once per distinct CID.
	waiting := make(map[cid.Cid][]*slot, len(cids))
	for i, c := range cids {
		waiting[c] = append(waiting[c], slots[i])
	}
	for opt := range src.GetMany(ctx, cids) {
		if opt.Err != nil {
			continue
		}
		c := opt.Node.Cid()
		for _, s := range waiting[c] {
			s.nd = opt.Node
			close(s.done)
		}
		delete(waiting, c)
	}
	for _, ss := range waiting {
		for _, s := range ss {
			close(s.done)
		}
	}
}

// Close stops background fetches and returns the tokens of nodes that were
// prefetched but not used.
func (q *queue) Close() {
	if q.cancel == nil {
		return
	}
	q.cancel()
	n := 0
	for i := q.next; i < q.issued; i++ {
		if q.slots[i] != nil {
			q.slots[i] = nil
			n++
		}
	}
	q.p.give(n)
}
