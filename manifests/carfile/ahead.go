package carfile

import (
	"context"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
)

// Look-ahead for Export. walk loads blocks one at a time, in the order of
// its stack, and a block read from a compressed local store costs its
// decompression: a peer's CAR export of a path ran on one core, and a
// follower's first request waited on it. ahead loads the next blocks on
// the walk's stack on other goroutines while the walk writes the current
// one. It holds at most aheadBlocks blocks that the walk has not taken.
const (
	aheadBlocks  = 16
	aheadWorkers = 2
)

type ahead struct {
	get    getFunc
	ctx    context.Context // of the workers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	work   *sync.Cond             // jobs or closed changed
	jobs   []*aheadSlot           // not yet taken by a worker, in walk order
	slots  map[cid.Cid]*aheadSlot // started or queued, not yet taken by walk
	add    []*aheadSlot           // want's scratch
	closed bool
}

type aheadSlot struct {
	c       cid.Cid
	started bool          // a worker took it (under mu)
	done    chan struct{} // closed when data and err are set
	data    []byte
	err     error
}

func newAhead(ctx context.Context, get getFunc) *ahead {
	a := &ahead{get: get, slots: make(map[cid.Cid]*aheadSlot)}
	a.work = sync.NewCond(&a.mu)
	a.ctx, a.cancel = context.WithCancel(ctx)
	for range aheadWorkers {
		a.wg.Go(a.worker)
	}
	return a
}

// want queues those of cs, the next blocks of the walk in its order, that
// are not queued yet, ahead of the queued ones: they come first in the walk
// (the entries of a directory it just met). When aheadBlocks are queued or
// loaded, the last queued ones give up their place.
func (a *ahead) want(cs []cid.Cid) {
	a.mu.Lock()
	defer a.mu.Unlock()
	add := a.add[:0]
	for _, c := range cs {
		if _, ok := a.slots[c]; ok {
			continue
		}
		if len(a.slots) >= aheadBlocks {
			n := len(a.jobs)
			if n == 0 {
				break
			}
			delete(a.slots, a.jobs[n-1].c)
			a.jobs = a.jobs[:n-1]
		}
		s := &aheadSlot{c: c, done: make(chan struct{})}
		a.slots[c] = s
		add = append(add, s)
	}
	a.add = add
	if len(add) > 0 {
		a.jobs = slices.Insert(a.jobs, 0, add...)
		a.work.Broadcast()
	}
}

// load returns the data of block c: what a worker loaded, or loads it now
// if no worker has started on it.
func (a *ahead) load(ctx context.Context, c cid.Cid) ([]byte, error) {
	a.mu.Lock()
	s := a.slots[c]
	delete(a.slots, c)
	if s != nil && !s.started {
		a.jobs = slices.DeleteFunc(a.jobs, func(j *aheadSlot) bool { return j == s })
		s = nil
	}
	a.mu.Unlock()
	if s == nil {
		return load(ctx, a.get, c)
	}
	select {
	case <-s.done:
		return s.data, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (a *ahead) worker() {
	for {
		a.mu.Lock()
		for !a.closed && len(a.jobs) == 0 {
			a.work.Wait()
		}
		if a.closed {
			a.mu.Unlock()
			return
		}
		s := a.jobs[0]
		a.jobs = a.jobs[1:]
		s.started = true
		a.mu.Unlock()
		s.data, s.err = load(a.ctx, a.get, s.c)
		close(s.done)
	}
}

// close stops the workers and waits for them: no load outlives the walk.
func (a *ahead) close() {
	a.mu.Lock()
	a.closed = true
	a.work.Broadcast()
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
}
