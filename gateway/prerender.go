package gateway

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/nixipfs/nixipfs/gateway/narcache"
	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// prerenderer renders the NARs of narinfos just served into the NAR cache,
// one at a time, while the client is busy elsewhere: Nix asks for a
// closure's narinfos first, then downloads one NAR at a time and spends
// about a quarter of a cold copy between NARs, with the gateway idle.
// Newest first: Nix asks for a path's narinfo before its references' and
// downloads references first. Only NARs whose blocks are all here are
// rendered (no network), and a request for a NAR being rendered waits for
// it and is then served from the cache.
//
// Work nobody asked for is bounded three ways. It renders only within
// armWindow of a NAR request, so a client that reads narinfos and no NARs
// (a crawler, nix path-info, a dry run) makes it render nothing. NARs
// queued longer than staleAfter are dropped. And it keeps at most budget
// bytes of rendered NARs not yet asked for, so a closure larger than the
// NAR cache does not churn it; each NAR asked for makes room for the next.
type prerenderer struct {
	g      *Gateway
	local  ipld.NodeGetter // local blocks only: no fetches from peers
	max    int             // NARs waiting; older ones are dropped
	budget int64           // bytes of prerendered NARs not yet asked for
	ctx    context.Context
	cancel context.CancelFunc // by stop

	mu      sync.Mutex
	stack   []queuedNAR
	armed   time.Time     // render until then (arm)
	idle    chan struct{} // closed while no worker runs
	stopped bool          // Drain: nothing more
	current string        // NAR cache name being rendered
	asked   bool          // current was asked for while being rendered
	done    chan struct{} // closed when current is done
	// ahead are the NARs rendered and not yet asked for, by NAR cache
	// name, with aheadBytes their size; swept at most once a staleAfter.
	ahead      map[string]queuedNAR
	aheadBytes int64
	swept      time.Time

	// Counted in /metrics (register).
	queued, dropped, rendered, failed, used, unused atomic.Int64
}

// The prerenderer renders only until armWindow after the last NAR request,
// and drops what has waited longer than staleAfter. Nix starts downloading
// NARs as soon as it has read a closure's narinfos, and asks for the next
// NAR milliseconds after the last one ends.
const (
	armWindow  = 30 * time.Second
	staleAfter = 10 * time.Minute
)

type queuedNAR struct {
	p  *manifests.PathInfo
	at time.Time // queued, or rendered
}

// register counts pr in m's registry.
func (pr *prerenderer) register(m *metrics.Metrics) {
	m.Atomics(
		metrics.Atomic{Name: "nixipfs_prerender_queued_total", Help: "NARs queued by --prerender (narinfos served to a GET).", V: &pr.queued},
		metrics.Atomic{Name: "nixipfs_prerender_dropped_total", Help: "NARs dropped from the --prerender queue: the oldest of a full queue, larger than its budget, or queued 10 min ago and not rendered.", V: &pr.dropped},
		metrics.Atomic{Name: "nixipfs_prerender_rendered_total", Help: "NARs --prerender rendered into the NAR cache.", V: &pr.rendered},
		metrics.Atomic{Name: "nixipfs_prerender_failed_total", Help: "NARs --prerender could not render: blocks not here, or a NAR that does not match its record.", V: &pr.failed},
		metrics.Atomic{Name: "nixipfs_prerender_used_total", Help: "NARs --prerender rendered that were then asked for.", V: &pr.used},
		metrics.Atomic{Name: "nixipfs_prerender_unused_total", Help: "NARs --prerender rendered that were not asked for within 10 min.", V: &pr.unused},
	)
}

// newPrerenderer keeps at most max NARs queued and budget bytes rendered
// ahead of the requests.
func newPrerenderer(g *Gateway, local ipld.NodeGetter, max int, budget int64) *prerenderer {
	idle := make(chan struct{})
	close(idle)
	ctx, cancel := context.WithCancel(context.Background())
	return &prerenderer{g: g, local: local, max: max, budget: budget, ctx: ctx, cancel: cancel, idle: idle,
		ahead: map[string]queuedNAR{}}
}

// want queues p's NAR, unless the NAR cache has it (narinfos are asked
// for much more often than NARs are rendered).
func (pr *prerenderer) want(p *manifests.PathInfo) {
	if pr.g.cfg.NARCache.Has(narcache.Name(p.Root, p.NarHash, p.NarSize)) {
		return
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.stopped {
		return
	}
	if len(pr.stack) == pr.max {
		// Not copied down: narinfos come by the thousand, and append
		// moves the queue to a new array only now and then.
		pr.stack = pr.stack[1:]
		pr.dropped.Add(1)
	}
	now := time.Now()
	pr.stack = append(pr.stack, queuedNAR{p, now})
	pr.queued.Add(1)
	pr.startLocked(now)
}

// requested notes a request for the NAR of root with this NAR cache name:
// it arms the prerenderer for armWindow, and a NAR rendered ahead was used.
func (pr *prerenderer) requested(root cid.Cid, name string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if e, ok := pr.ahead[name]; ok {
		delete(pr.ahead, name)
		pr.aheadBytes -= e.p.NarSize
		pr.used.Add(1)
	} else if name == pr.current {
		pr.asked = true
	} else {
		// The request renders its NAR itself: take it off the top of the
		// queue, where Nix's first NAR usually is, so that the worker
		// does not render it too (and the request wait for that).
		for i := len(pr.stack) - 1; i >= 0 && i >= len(pr.stack)-4; i-- {
			if pr.stack[i].p.Root.Equals(root) {
				pr.stack = append(pr.stack[:i], pr.stack[i+1:]...)
				break
			}
		}
	}
	now := time.Now()
	pr.armed = now.Add(armWindow)
	pr.startLocked(now)
}

// startLocked starts a worker if there is work now and none runs.
func (pr *prerenderer) startLocked(now time.Time) {
	if pr.stopped || len(pr.stack) == 0 || !now.Before(pr.armed) {
		return
	}
	select {
	case <-pr.idle:
		pr.idle = make(chan struct{})
		go pr.run(pr.idle)
	default:
	}
}

// stop drops what is queued, ends the render under way and takes nothing
// more.
func (pr *prerenderer) stop() {
	pr.cancel()
	pr.mu.Lock()
	pr.stopped = true
	pr.stack = nil
	pr.mu.Unlock()
}

// waitIdle returns once no worker runs (nothing is queued, or no NAR was
// asked for within armWindow, or the budget is spent), or ctx ends.
func (pr *prerenderer) waitIdle(ctx context.Context) error {
	pr.mu.Lock()
	idle := pr.idle
	pr.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openCached opens the NAR in the cache (nil if it is not there). If the
// prerenderer is writing it, it waits for that first: a prerender is not
// throttled by any client, so waiting is quicker than rendering again.
// Every NAR request passes here, so here the prerenderer learns of it.
func (g *Gateway) openCached(ctx context.Context, root cid.Cid, narHash []byte, size int64) *os.File {
	if g.cfg.Denied != nil && g.cfg.Denied(root) {
		return nil // rendered, which refuses it
	}
	nc := g.cfg.NARCache
	if g.prerender == nil {
		return nc.Open(root, narHash, size)
	}
	name := narcache.Name(root, narHash, size)
	g.prerender.requested(root, name)
	f := nc.Open(root, narHash, size)
	if f == nil {
		g.prerender.wait(ctx, name)
		f = nc.Open(root, narHash, size)
	}
	return f
}

// wait returns once the NAR named name is no longer being prerendered, or
// ctx ends.
func (pr *prerenderer) wait(ctx context.Context, name string) {
	pr.mu.Lock()
	if pr.current != name {
		pr.mu.Unlock()
		return
	}
	done := pr.done
	pr.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// next takes the NAR to render now off the queue, and its cache writer; ok
// is false when there is none (nothing queued, not armed, or no budget
// left).
func (pr *prerenderer) next(now time.Time) (p *manifests.PathInfo, cw *narcache.Writer, ok bool) {
	stale := 0
	for stale < len(pr.stack) && now.Sub(pr.stack[stale].at) > staleAfter {
		stale++
	}
	if stale > 0 {
		pr.stack = pr.stack[stale:]
		pr.dropped.Add(int64(stale))
	}
	if now.Sub(pr.swept) > staleAfter {
		pr.swept = now
		for name, e := range pr.ahead {
			if now.Sub(e.at) > staleAfter {
				delete(pr.ahead, name)
				pr.aheadBytes -= e.p.NarSize
				pr.unused.Add(1)
			}
		}
	}
	for len(pr.stack) > 0 && now.Before(pr.armed) {
		p = pr.stack[len(pr.stack)-1].p
		if p.NarSize > pr.budget {
			pr.dropped.Add(1)
		} else if pr.aheadBytes+p.NarSize > pr.budget {
			return nil, nil, false // until a request takes one
		} else if cw = pr.g.cfg.NARCache.Create(p.Root, p.NarHash, p.NarSize); cw != nil {
			pr.stack = pr.stack[:len(pr.stack)-1]
			return p, cw, true
		}
		// else cached, being written by a request, or too large
		pr.stack = pr.stack[:len(pr.stack)-1]
	}
	return nil, nil, false
}

// run renders queued NARs, newest first, until next has none; then it
// closes idle.
func (pr *prerenderer) run(idle chan struct{}) {
	for {
		pr.mu.Lock()
		p, cw, ok := pr.next(time.Now())
		if !ok {
			close(idle)
			pr.mu.Unlock()
			return
		}
		pr.current = narcache.Name(p.Root, p.NarHash, p.NarSize)
		pr.asked = false
		pr.done = make(chan struct{})
		pr.mu.Unlock()

		ok = pr.render(p, cw)

		pr.mu.Lock()
		switch {
		case ok && pr.asked:
			pr.used.Add(1)
		case ok:
			pr.ahead[pr.current] = queuedNAR{p, time.Now()}
			pr.aheadBytes += p.NarSize
		}
		close(pr.done)
		pr.current = ""
		pr.mu.Unlock()
	}
}

// render writes p's NAR into the cache; it reports whether it did.
func (pr *prerenderer) render(p *manifests.PathInfo, cw *narcache.Writer) bool {
	vw := pr.g.newVerifier(pr.ctx, io.Discard, p.Root, p.NarSize, p.NarHash, 0, p.NarSize)
	_, err := ipldnar.Render(pr.ctx, io.MultiWriter(vw, cw), p.Root, pr.local)
	if err == nil {
		err = vw.finish()
	}
	if err != nil {
		cw.Abort()
		if pr.ctx.Err() != nil {
			return false // stopped (the daemon is shutting down): no failure
		}
		pr.g.cfg.Logger.Debug("prerender", "path", p.StorePath, "err", err)
		pr.failed.Add(1)
		return false
	}
	cw.CommitNow() // visible when a request waiting for it looks
	pr.rendered.Add(1)
	return true
}
