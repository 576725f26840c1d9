package gateway

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"

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
type prerenderer struct {
	g      *Gateway
	local  ipld.NodeGetter // local blocks only: no fetches from peers
	max    int             // NARs waiting; older ones are dropped
	ctx    context.Context
	cancel context.CancelFunc // by stop

	mu      sync.Mutex
	stack   []*manifests.PathInfo
	idle    chan struct{} // closed while no worker runs
	stopped bool          // Drain: nothing more
	current string        // NAR cache name being rendered
	done    chan struct{} // closed when current is done

	// Counted in /metrics: NARs queued, dropped from a full queue,
	// rendered into the cache, and failed (blocks not here, or a NAR that
	// does not match its record).
	queued, dropped, rendered, failed atomic.Int64
}

// register counts pr in m's registry.
func (pr *prerenderer) register(m *metrics.Metrics) {
	for _, c := range []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"nixipfs_prerender_queued_total", "NARs queued by --prerender (narinfos served to a GET).", &pr.queued},
		{"nixipfs_prerender_dropped_total", "NARs dropped from a full --prerender queue, the oldest first.", &pr.dropped},
		{"nixipfs_prerender_rendered_total", "NARs --prerender rendered into the NAR cache.", &pr.rendered},
		{"nixipfs_prerender_failed_total", "NARs --prerender could not render: blocks not here, or a NAR that does not match its record.", &pr.failed},
	} {
		m.CounterFunc(c.name, c.help, func() float64 { return float64(c.v.Load()) })
	}
}

func newPrerenderer(g *Gateway, local ipld.NodeGetter, max int) *prerenderer {
	idle := make(chan struct{})
	close(idle)
	ctx, cancel := context.WithCancel(context.Background())
	return &prerenderer{g: g, local: local, max: max, ctx: ctx, cancel: cancel, idle: idle}
}

// want queues p's NAR.
func (pr *prerenderer) want(p *manifests.PathInfo) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.stopped {
		return
	}
	if len(pr.stack) == pr.max {
		copy(pr.stack, pr.stack[1:])
		pr.stack = pr.stack[:len(pr.stack)-1]
		pr.dropped.Add(1)
	}
	pr.stack = append(pr.stack, p)
	pr.queued.Add(1)
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

// waitIdle returns once no NAR is queued or being rendered, or ctx ends.
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
func (g *Gateway) openCached(ctx context.Context, root cid.Cid, narHash []byte, size int64) *os.File {
	nc := g.cfg.NARCache
	f := nc.Open(root, narHash, size)
	if f == nil && g.prerender != nil {
		g.prerender.wait(ctx, narcache.Name(root, narHash, size))
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

// run renders queued NARs, newest first, until none is left; then it
// closes idle.
func (pr *prerenderer) run(idle chan struct{}) {
	nc := pr.g.cfg.NARCache
	for {
		pr.mu.Lock()
		if len(pr.stack) == 0 {
			close(idle)
			pr.mu.Unlock()
			return
		}
		p := pr.stack[len(pr.stack)-1]
		pr.stack = pr.stack[:len(pr.stack)-1]
		cw := nc.Create(p.Root, p.NarHash, p.NarSize)
		if cw == nil {
			pr.mu.Unlock()
			continue // cached, being written by a request, or too large
		}
		pr.current = narcache.Name(p.Root, p.NarHash, p.NarSize)
		pr.done = make(chan struct{})
		pr.mu.Unlock()

		pr.render(p, cw)

		pr.mu.Lock()
		close(pr.done)
		pr.current = ""
		pr.mu.Unlock()
	}
}

func (pr *prerenderer) render(p *manifests.PathInfo, cw *narcache.Writer) {
	vw := newVerifier(io.Discard, p.NarSize, p.NarHash, 0, p.NarSize)
	_, err := ipldnar.Render(pr.ctx, io.MultiWriter(vw, cw), p.Root, pr.local)
	if err == nil {
		err = vw.finish()
	}
	if err != nil {
		pr.g.cfg.Logger.Debug("prerender", "path", p.StorePath, "err", err)
		pr.failed.Add(1)
		cw.Abort()
		return
	}
	cw.CommitNow() // visible when a request waiting for it looks
	pr.rendered.Add(1)
}
