package ipldnar

import (
	"context"
	"sync"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Look-ahead in Render. A walker goroutine goes through the DAG in the order
// Render will ask for its nodes (the NAR's order: entries sorted by name,
// depth first, across directories) and lists every CID it meets; workers
// fetch the listed nodes ahead of Render, so that reading and decompressing
// blocks runs on other cores than writing and hashing the NAR, and a slow
// NodeGetter sees many requests at once. The walker itself needs only the
// dag-pb nodes (directories, HAMT shards, file nodes with links); raw leaves
// are only listed.
//
// Memory is bounded: at most lookaheadBlocks nodes past Render's position
// are fetched, the walker stops while lookaheadBytes of fetched nodes wait
// for Render or lookaheadNodes CIDs are listed ahead of it, and at most
// lookaheadHints dag-pb children of the directories being walked are
// fetched before the walker reaches them (so that a tree of small
// directories is not walked one round trip at a time).
//
// Render takes nodes from the head of the list; if the CID it asks for is
// not the head (the walker stopped, or the DAG is invalid in a way the
// walker did not check), look-ahead is switched off and Render fetches the
// rest itself, so correctness never depends on the walker.
const (
	lookaheadBlocks = 32       // nodes fetched ahead of Render
	lookaheadBytes  = 32 << 20 // fetched bytes waiting for Render
	lookaheadNodes  = 4096     // CIDs listed ahead of Render
	lookaheadHints  = 16       // dag-pb children fetched before the walker needs them
	prefetchWorkers = 16       // concurrent fetches, at most
	// Fetches start this many at a time, doubled each time Render has to
	// wait for one: blocks in memory or on a local disk cost CPU, not
	// latency, and more workers there only switch between threads; a
	// peer's blocks need all of them.
	initialWorkers = 2
)

type lookahead struct {
	src    ipld.NodeGetter
	ctx    context.Context // of the walker and the workers
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   func() bool // ends the AfterFunc that wakes waiters

	mu         sync.Mutex
	cond       *sync.Cond // the list, bytes or off changed
	work       *sync.Cond // jobs or off changed
	jobs       []*slot    // fetches not yet taken by a worker
	list       []*slot    // listed by the walker, not yet taken by Render
	bytes      int        // of fetched nodes not yet taken
	hints      map[cid.Cid]*slot
	workers    int
	maxWorkers int // workers that may run now
	walkDone   bool
	off        bool // Render diverged or closed: no more look-ahead
}

// slot is one listed CID.
type slot struct {
	c       cid.Cid
	started bool          // a fetch was started (under mu)
	done    chan struct{} // closed when nd and err are set
	nd      ipld.Node
	err     error
}

// newLookahead starts walking the DAG below root.
func newLookahead(ctx context.Context, src ipld.NodeGetter, root cid.Cid) *lookahead {
	l := &lookahead{
		src:        src,
		hints:      make(map[cid.Cid]*slot),
		maxWorkers: initialWorkers,
	}
	l.cond = sync.NewCond(&l.mu)
	l.work = sync.NewCond(&l.mu)
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.stop = context.AfterFunc(l.ctx, func() {
		l.mu.Lock()
		l.off = true
		l.cond.Broadcast()
		l.work.Broadcast()
		l.mu.Unlock()
	})
	l.wg.Go(func() {
		l.walk(root)
		l.mu.Lock()
		l.walkDone = true
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	return l
}

// close stops the walker and the workers and waits for them, so that no
// fetch outlives Render.
func (l *lookahead) close() {
	l.cancel()
	l.mu.Lock()
	l.off = true
	l.cond.Broadcast()
	l.work.Broadcast()
	l.mu.Unlock()
	l.wg.Wait()
	l.stop()
}

// next returns the node of c, which Render needs now.
func (l *lookahead) next(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	l.mu.Lock()
	for !l.off && !l.walkDone && len(l.list) == 0 {
		l.cond.Wait()
	}
	if l.off || len(l.list) == 0 || l.list[0].c != c {
		if !l.off && len(l.list) > 0 {
			l.off = true // diverged; the walker stops at its next step
			l.cancel()
		}
		l.mu.Unlock()
		return l.src.Get(ctx, c)
	}
	s := l.list[0]
	l.list[0] = nil
	l.list = l.list[1:]
	l.dispatch()
	select {
	case <-s.done:
	default:
		l.more()
	}
	l.mu.Unlock()
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	l.mu.Lock()
	if s.nd != nil {
		l.bytes -= len(s.nd.RawData())
	}
	l.cond.Broadcast()
	l.mu.Unlock()
	if s.nd != nil {
		return s.nd, nil
	}
	// Fetch again for Render's own error (the walker's context may have
	// ended, not Render's).
	return l.src.Get(ctx, c)
}

// dispatch starts fetches of the first lookaheadBlocks listed nodes.
// Called with mu held.
func (l *lookahead) dispatch() {
	if l.off {
		return
	}
	for _, s := range l.list[:min(len(l.list), lookaheadBlocks)] {
		if !s.started {
			l.start(s)
		}
	}
}

// start hands s to a worker, starting one if fewer than maxWorkers run.
// Called with mu held and !l.off.
func (l *lookahead) start(s *slot) {
	s.started = true
	if l.workers < l.maxWorkers {
		l.workers++
		l.wg.Go(l.worker)
	}
	l.jobs = append(l.jobs, s)
	l.work.Signal()
}

// more doubles the workers allowed, up to prefetchWorkers, and starts them
// for the fetches waiting: Render is about to wait for one. Called with mu
// held and !l.off.
func (l *lookahead) more() {
	l.maxWorkers = min(2*l.maxWorkers, prefetchWorkers)
	for n := len(l.jobs); n > 0 && l.workers < l.maxWorkers; n-- {
		l.workers++
		l.wg.Go(l.worker)
	}
}

// worker fetches jobs until look-ahead is off; jobs left then are
// dropped, as nobody waits for them (Render's next waits only while on).
func (l *lookahead) worker() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		for !l.off && len(l.jobs) == 0 {
			l.work.Wait()
		}
		if l.off {
			return
		}
		s := l.jobs[0]
		l.jobs[0] = nil
		l.jobs = l.jobs[1:]
		l.mu.Unlock()
		l.fetch(s)
		l.mu.Lock()
	}
}

func (l *lookahead) fetch(s *slot) {
	nd, err := l.src.Get(l.ctx, s.c)
	l.mu.Lock()
	l.finish(s, nd, err)
	l.mu.Unlock()
}

// finish sets the node of s and counts its bytes. Called with mu held.
func (l *lookahead) finish(s *slot, nd ipld.Node, err error) {
	s.nd, s.err = nd, err
	if nd != nil {
		l.bytes += len(nd.RawData())
	}
	close(s.done)
}

// add appends c to the list, waiting while the walker is too far ahead;
// it returns nil once look-ahead is off. It never waits on an empty list:
// Render, waiting for the list, could not free the bytes (hinted nodes).
func (l *lookahead) add(c cid.Cid) *slot {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.off && len(l.list) > 0 && (len(l.list) >= lookaheadNodes || l.bytes >= lookaheadBytes) {
		l.cond.Wait()
	}
	if l.off {
		return nil
	}
	s, ok := l.hints[c]
	if ok {
		delete(l.hints, c)
	} else {
		s = &slot{c: c, done: make(chan struct{})}
		l.mu.Unlock()
		nd, ok := l.quick(c)
		l.mu.Lock()
		if l.off {
			return nil
		}
		if ok {
			s.started = true
			l.finish(s, nd, nil)
		}
	}
	l.list = append(l.list, s)
	l.dispatch()
	l.cond.Broadcast()
	return s
}

// quick returns the node of c if the source has it at hand (KnownNode,
// QuickGetter): the walker takes it itself, no worker is woken.
func (l *lookahead) quick(c cid.Cid) (ipld.Node, bool) {
	if q, ok := l.src.(QuickGetter); ok {
		return q.GetQuick(l.ctx, c)
	}
	return KnownNode(c)
}

// hint starts fetching the dag-pb nodes among cids (the walker will need
// them soon) while fewer than lookaheadHints are pending. It returns how
// many of cids it went through.
func (l *lookahead) hint(cids []cid.Cid) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range cids {
		if l.off || len(l.hints) >= lookaheadHints {
			return i
		}
		if c.Prefix().Codec != cid.DagProtobuf || l.hints[c] != nil {
			continue
		}
		s := &slot{c: c, done: make(chan struct{})}
		l.hints[c] = s
		l.mu.Unlock()
		nd, ok := l.quick(c)
		l.mu.Lock()
		switch {
		case ok:
			s.started = true
			l.finish(s, nd, nil)
		case !l.off:
			l.start(s)
		}
	}
	return len(cids)
}

// need waits for the node of s, fetching it here if no worker has started.
func (l *lookahead) need(s *slot) ipld.Node {
	l.mu.Lock()
	own := !s.started
	s.started = true
	l.mu.Unlock()
	if own {
		l.fetch(s)
	}
	select {
	case <-s.done:
		return s.nd
	case <-l.ctx.Done():
		return nil
	}
}

// The walk mirrors the order of Render's fetches (archive, node, fileData,
// directory, hamtEntries). It checks only what it needs to find the links
// (a HAMT shard as Render does, with hamtLinks); Render checks the rest.
// Each step returns false to end the walk.

func (l *lookahead) walk(root cid.Cid) {
	if s := l.add(root); s != nil {
		if nd := l.need(s); nd != nil {
			l.node(nd, 0)
		}
	}
}

// child lists c and, for a dag-pb node, walks it with f.
func (l *lookahead) child(c cid.Cid, f func(ipld.Node) bool) bool {
	s := l.add(c)
	if s == nil {
		return false
	}
	if c.Prefix().Codec != cid.DagProtobuf {
		return true
	}
	nd := l.need(s)
	return nd != nil && f(nd)
}

func (l *lookahead) node(nd ipld.Node, depth int) bool {
	if nd.Cid().Prefix().Codec != cid.DagProtobuf {
		return true
	}
	pn, fsn, err := decodeUnixFS(nd)
	if err != nil {
		return false
	}
	switch fsn.Type() {
	case ft.TFile, ft.TRaw:
		return l.fileData(pn.Links(), 0)
	case ft.TDirectory:
		return l.directory(linkEntries(pn.Links()), depth)
	case ft.THAMTShard:
		entries, ok := l.hamtEntries(pn, fsn, nil, 0)
		return ok && l.directory(entries, depth)
	}
	return true
}

func (l *lookahead) fileData(links []*ipld.Link, level int) bool {
	if level > maxFileDepth {
		return false
	}
	cids := make([]cid.Cid, len(links))
	for i, lk := range links {
		cids[i] = lk.Cid
	}
	return l.children(cids, func(nd ipld.Node) bool {
		pn, _, err := decodeUnixFS(nd)
		return err == nil && l.fileData(pn.Links(), level+1)
	})
}

// children lists cids in order, walking each dag-pb one with f, and has
// the next lookaheadHints dag-pb ones fetched meanwhile.
func (l *lookahead) children(cids []cid.Cid, f func(ipld.Node) bool) bool {
	hinted := 0
	for i, c := range cids {
		if hinted <= i {
			hinted = i + l.hint(cids[i:min(len(cids), i+lookaheadHints)])
		}
		if !l.child(c, f) {
			return false
		}
	}
	return true
}

func (l *lookahead) directory(entries []dirEntry, depth int) bool {
	if depth+1 > maxDepth {
		return false
	}
	sortEntries(entries)
	cids := make([]cid.Cid, len(entries))
	for i, e := range entries {
		cids[i] = e.cid
	}
	return l.children(cids, func(nd ipld.Node) bool { return l.node(nd, depth+1) })
}

func (l *lookahead) hamtEntries(pn *dag.ProtoNode, fsn *ft.FSNode, out []dirEntry, level int) ([]dirEntry, bool) {
	if level > 64 {
		return nil, false
	}
	out, shards, err := hamtLinks(pn, fsn, out)
	if err != nil {
		return nil, false
	}
	l.hint(shards)
	for _, c := range shards {
		ok := l.child(c, func(nd ipld.Node) bool {
			cpn, cfsn, err := decodeUnixFS(nd)
			if err != nil || cfsn.Type() != ft.THAMTShard {
				return false
			}
			var ok bool
			out, ok = l.hamtEntries(cpn, cfsn, out, level+1)
			return ok
		})
		if !ok {
			return nil, false
		}
	}
	return out, true
}
