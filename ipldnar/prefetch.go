package ipldnar

import (
	"context"
	"sync"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Prefetching in Render. Every list of links Render walks in order (the
// children of a directory or HAMT shard, the children of a file node) gets a
// queue that fetches the next few nodes in the background, so that fetching
// overlaps writing and a slow or remote NodeGetter sees several requests at
// once.
//
// Memory is bounded by a per-Render budget of tokens, one per node fetched
// ahead of use: at most prefetchBudget blocks (1 MiB each for leaves of this
// profile) beyond those on the path being written. Queues only take tokens
// that are free, never wait for one, and a node that was not prefetched is
// fetched synchronously when it is needed; so the queues of outer directories
// cannot stall inner ones. Directory queues leave fileWindow tokens free, so
// the leaves of the file being written are always prefetched.
//
// Tokens are only taken and given back by the rendering goroutine; the
// fetches run on a few long-lived workers per Render rather than a goroutine
// per batch: a fresh goroutine's stack has to grow through the blockstore and
// decoder on every batch, which costs more than the fetch itself for the
// small blocks of a local store.
const (
	prefetchBudget  = 64 // nodes held ahead of use per Render
	dirWindow       = 16 // lookahead of a directory's children
	fileWindow      = 16 // lookahead of a file node's children
	prefetchWorkers = 16 // concurrent fetches
	minGetMany      = 4  // smaller batches are fetched with Get
)

type prefetcher struct {
	src  ipld.NodeGetter
	free int // tokens
	// jobs feeds the workers, started with the first job. Jobs are queued
	// for at most prefetchBudget tokens, so sending only blocks if the
	// jobs of closed queues are slow to notice their cancellation.
	jobs    chan fetchJob
	workers sync.WaitGroup
}

type fetchJob struct {
	ctx   context.Context
	cids  []cid.Cid
	slots []*slot
}

func newPrefetcher(src ipld.NodeGetter) *prefetcher {
	return &prefetcher{src: src, free: prefetchBudget}
}

func (p *prefetcher) submit(j fetchJob) {
	if p.jobs == nil {
		p.jobs = make(chan fetchJob, prefetchBudget)
		for range prefetchWorkers {
			p.workers.Go(func() {
				for j := range p.jobs {
					fetch(j.ctx, p.src, j.cids, j.slots)
				}
			})
		}
	}
	p.jobs <- j
}

// close stops the workers and waits for them, so that no fetch outlives
// Render. Jobs of closed queues see a cancelled context and end at once.
func (p *prefetcher) close() {
	if p.jobs != nil {
		close(p.jobs)
		p.workers.Wait()
	}
}

// take takes up to n tokens, leaving at least reserve free, and says how
// many it got.
func (p *prefetcher) take(n, reserve int) int {
	n = max(0, min(n, p.free-reserve))
	p.free -= n
	return n
}

func (p *prefetcher) give(n int) { p.free += n }

// slot receives one prefetched node; nd stays nil if prefetching failed (the
// consumer then fetches it itself, which gives a precise error).
type slot struct {
	done chan struct{}
	nd   ipld.Node
}

// queue yields the nodes of cids in order.
type queue struct {
	p       *prefetcher
	ctx     context.Context
	bgCtx   context.Context // for background fetches; nil until the first
	cancel  context.CancelFunc
	cids    []cid.Cid
	slots   []*slot // slots[i] is set for next <= i < issued if prefetched
	window  int
	reserve int // tokens to leave free
	next    int // index of the next node to yield
	issued  int // nodes before this index are prefetched or being yielded
}

// queue returns a queue over cids that looks window nodes ahead, leaving
// reserve tokens for others.
func (p *prefetcher) queue(ctx context.Context, cids []cid.Cid, window, reserve int) *queue {
	return &queue{p: p, ctx: ctx, cids: cids, window: window, reserve: reserve}
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
// so that fetches go out in batches rather than one job per node.
func (q *queue) refill() {
	end := min(len(q.cids), q.next+q.window)
	want := end - q.issued
	if want <= 0 || (want < q.window/2 && end < len(q.cids) && q.issued > q.next) {
		return
	}
	got := q.p.take(want, q.reserve)
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
	q.p.submit(fetchJob{q.bgCtx, q.cids[q.issued : q.issued+got], batch})
	q.issued += got
}

// fetch fills slots[i] with the node of cids[i]. Small batches use Get:
// boxo's GetMany starts two goroutines per call, which costs more than the
// fetch itself for the small blocks of a local store.
func fetch(ctx context.Context, src ipld.NodeGetter, cids []cid.Cid, slots []*slot) {
	if len(cids) < minGetMany {
		for i, c := range cids {
			if nd, err := src.Get(ctx, c); err == nil {
				slots[i].nd = nd
			}
			close(slots[i].done)
		}
		return
	}
	// GetMany answers in any order, an error without saying for which CID,
	// and not always once per distinct CID or with a close: kubo's RPC
	// client answers once per CID given and never closes the channel. So
	// stop once every distinct CID is answered, one way or the other, or
	// when ctx ends; CIDs left unfilled are fetched again by the consumer.
	waiting := make(map[cid.Cid][]*slot, len(cids))
	for i, c := range cids {
		waiting[c] = append(waiting[c], slots[i])
	}
	ch := src.GetMany(ctx, cids)
	for answers, distinct := 0, len(waiting); answers < distinct; answers++ {
		var opt *ipld.NodeOption
		var ok bool
		select {
		case opt, ok = <-ch:
		case <-ctx.Done():
		}
		if !ok {
			break
		}
		if opt.Err != nil || opt.Node == nil {
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
