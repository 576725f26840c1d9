package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"golang.org/x/time/rate"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/internal/status"
	"github.com/nixipfs/nixipfs/manifests"
)

// prefetcher fetches the paths that followed manifests add, in the
// background, so that Nix's first request for one is answered from local
// blocks (--prefetch). It asks this daemon's own gateway for each NAR, so a
// prefetch is exactly a first request: blocks come from holders as CARs, the
// NAR is checked against its NarHash, lands in the NAR cache, and with
// --keep-served is pinned and added to our manifest.
type prefetcher struct {
	api      coreiface.CoreAPI
	follower *manifests.Follower
	paths    gateway.Lookup // applies the trust policy
	offline  ipld.NodeGetter
	workers  int
	rate     int64 // bytes per second over all workers; 0: no limit
	client   *http.Client

	gateway string // set once the gateway listens
	seen    map[string]cid.Cid
	queue   chan *manifests.PathInfo
	pending sync.Map // hash part → struct{}: queued or running

	queued, active, done, failed, bytes atomic.Int64
	limiter                             *rate.Limiter

	mu      sync.Mutex
	retries map[string]*retry // hash part → a failed prefetch's next try
}

// retry is a failed prefetch waiting for its next try. A prefetch fails at
// once while no holder or peer is there to ask (the publisher away, a
// network down): it is tried again after retryFirst, then twice as long
// each time, up to retryMax.
type retry struct {
	info  *manifests.PathInfo
	at    time.Time
	delay time.Duration
}

const (
	retryFirst = 5 * time.Second
	retryMax   = 10 * time.Minute
)

func newPrefetcher(api coreiface.CoreAPI, f *manifests.Follower, paths gateway.Lookup, workers int, bytesPerSec int64) *prefetcher {
	return &prefetcher{api: api, follower: f, paths: paths, offline: gateway.LocalBlocks(api), workers: workers, rate: bytesPerSec,
		client: &http.Client{}, seen: map[string]cid.Cid{}, retries: map[string]*retry{},
		queue: make(chan *manifests.PathInfo, 4096), limiter: newLimiter(bytesPerSec)}
}

// run watches the followed versions until ctx ends.
func (p *prefetcher) run(ctx context.Context, gatewayURL string, interval time.Duration) {
	p.gateway = gatewayURL
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() { p.work(ctx) })
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, v := range p.follower.Versions() {
			if p.seen[v.Name] == v.Version {
				continue
			}
			if err := p.scan(ctx, v, p.seen[v.Name]); err != nil {
				if ctx.Err() != nil {
					break
				}
				slog.Warn("prefetch: read followed manifest", "name", v.Name, "err", err)
				continue
			}
			p.seen[v.Name] = v.Version
		}
		p.requeue(ctx)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// scan queues the paths added between two versions of a followed manifest
// (all of them the first time).
func (p *prefetcher) scan(ctx context.Context, v manifests.Followed, prev cid.Cid) error {
	dserv := p.api.Dag()
	next, err := manifests.LoadManifest(ctx, dserv, v.Version)
	if err != nil {
		return err
	}
	old := manifests.EmptyManifest(dserv)
	if prev.Defined() {
		if old, err = manifests.LoadManifest(ctx, dserv, prev); err != nil {
			return err
		}
	}
	changes, err := manifests.DiffManifests(ctx, old, next)
	if err != nil {
		return err
	}
	prefix := manifests.KeyStorePath("")
	for _, c := range changes {
		hash, ok := strings.CutPrefix(c.Key, prefix)
		if !ok || !c.New.Defined() {
			continue
		}
		if _, busy := p.pending.LoadOrStore(hash, struct{}{}); busy {
			continue
		}
		// The lookup applies the trust policy and prefers our own record.
		info, err := p.paths.Lookup(ctx, hash)
		if err != nil || p.local(ctx, info.Root) {
			p.pending.Delete(hash)
			continue // not servable, or here already
		}
		select {
		case p.queue <- info:
			p.queued.Add(1)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// local reports whether root's block is in the local store.
func (p *prefetcher) local(ctx context.Context, root cid.Cid) bool {
	if p.offline == nil {
		return false
	}
	_, err := p.offline.Get(ctx, root)
	return err == nil
}

func (p *prefetcher) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case info := <-p.queue:
			p.queued.Add(-1)
			p.active.Add(1)
			err := p.fetch(ctx, info)
			p.active.Add(-1)
			p.pending.Delete(info.HashPart())
			switch {
			case err == nil:
				p.done.Add(1)
				p.mu.Lock()
				delete(p.retries, info.HashPart())
				p.mu.Unlock()
			case ctx.Err() == nil:
				p.failed.Add(1)
				// Each path's first failure is a warning; its retries, which
				// fail at once while nobody is there to ask, only debug lines.
				level := slog.LevelDebug
				delay, first := p.later(info)
				if first {
					level = slog.LevelWarn
				}
				slog.Log(ctx, level, "prefetch", "path", info.StorePath, "err", err, "retryIn", delay)
			}
		}
	}
}

// later schedules another try of a failed prefetch, says when, and whether
// it was the path's first failure.
func (p *prefetcher) later(info *manifests.PathInfo) (delay time.Duration, first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.retries[info.HashPart()]
	first = r == nil
	if first {
		r = &retry{info: info, delay: retryFirst}
		p.retries[info.HashPart()] = r
	} else {
		r.delay = min(2*r.delay, retryMax)
	}
	r.at = time.Now().Add(r.delay)
	return r.delay, first
}

// requeue queues the failed prefetches that are due again. One whose path
// is no longer served as it was (its manifest unfollowed, the policy
// changed, another record) or that is here by now is dropped.
func (p *prefetcher) requeue(ctx context.Context) {
	now := time.Now()
	var due []*manifests.PathInfo
	p.mu.Lock()
	for _, r := range p.retries {
		if !r.at.After(now) {
			due = append(due, r.info)
		}
	}
	p.mu.Unlock()
	for _, info := range due {
		h := info.HashPart()
		if _, busy := p.pending.LoadOrStore(h, struct{}{}); busy {
			continue
		}
		if cur, err := p.paths.Lookup(ctx, h); err != nil || cur.Root != info.Root || p.local(ctx, info.Root) {
			p.pending.Delete(h)
			p.mu.Lock()
			delete(p.retries, h)
			p.mu.Unlock()
			continue
		}
		select {
		case p.queue <- info:
			p.queued.Add(1)
		default: // full: the next round
			p.pending.Delete(h)
		}
	}
}

// fetch asks our own gateway for the NAR, at the allowed rate.
func (p *prefetcher) fetch(ctx context.Context, info *manifests.PathInfo) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.gateway+"/"+gateway.NarURL(info), nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway answered %s", resp.Status)
	}
	buf := make([]byte, readChunk)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		p.bytes.Add(int64(k))
		if k > 0 {
			if err := p.limiter.WaitN(ctx, k); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != info.NarSize {
		return fmt.Errorf("NAR of %d bytes, want %d", n, info.NarSize)
	}
	return nil
}

// report is the status page's view.
func (p *prefetcher) report() *status.Prefetch {
	p.mu.Lock()
	retrying := len(p.retries)
	p.mu.Unlock()
	return &status.Prefetch{Workers: p.workers, RateBytes: p.rate, Queued: p.queued.Load(), Active: p.active.Load(),
		Done: p.done.Load(), Failed: p.failed.Load(), Retrying: int64(retrying), Bytes: p.bytes.Load()}
}

// readChunk is the most a prefetch reads at once, and so the limiter's burst.
const readChunk = 256 << 10

// newLimiter bounds all prefetches to bytesPerSec (0: no bound).
func newLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return rate.NewLimiter(rate.Inf, readChunk)
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), readChunk)
}
