package publish

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	bpath "github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/remotepin"
	"github.com/nixipfs/nixipfs/manifests"
)

// GCItem is one published path the manifest no longer holds.
type GCItem struct {
	StorePath string `json:"storePath"`
	PathInfo  string `json:"pathInfo"`
	Root      string `json:"root"`
	NarSize   int64  `json:"narSize"`
	Replicas  int    `json:"replicas"`  // copies elsewhere: the most of Providers and ClusterPins
	Providers int    `json:"providers"` // other providers found for the root
	// RemoteHolders are the remote pinning services' peers (other than
	// this node) that hold the root pinned.
	RemoteHolders int    `json:"remoteHolders"`
	Unpinned      bool   `json:"unpinned"`
	Reason        string `json:"reason"`
}

// GCOptions says how careful GC is.
type GCOptions struct {
	MinReplicas int           // other providers required before unpinning
	Apply       bool          // unpin; otherwise only report
	Timeout     time.Duration // per provider search
	// Remotes, if set, are asked which of their peers hold a path pinned
	// (a cluster's allocations that pinned it): those count as replicas
	// too.
	Remotes []remotepin.Remote
}

// GC finds paths this node pinned that its current manifest no longer holds
// and unpins each only when at least MinReplicas other peers provide its
// DAG or hold it pinned on a remote (a cluster), so dropping a path here never loses its last copies. It unpins only;
// kubo's repo GC frees the blocks. The manifest's own pins hold only its
// HAMT shards, so GC keeps by itself whatever the current manifest still
// reaches: a dropped path that a listed path references, and a DAG that a
// listed record or source file shares.
func GC(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, opts GCOptions) ([]GCItem, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	m, err := local.Current(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	current := map[cid.Cid]bool{}
	if err := m.Walk(ctx, func(_ string, c cid.Cid) error { current[c] = true; return nil }); err != nil {
		return nil, fmt.Errorf("gc: walk manifest: %w", err)
	}
	pins, err := directPins(ctx, node.API)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	self, err := node.API.Key().Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	var items []GCItem
	var reached *reach
	for _, c := range pins {
		if c.Type() != cid.DagCBOR || current[c] {
			continue
		}
		p, err := manifests.Load(ctx, node.API, c)
		if err != nil {
			continue // a manifest version or someone else's pin
		}
		if reached == nil {
			// Only now: it loads every record the manifest lists.
			if reached, err = reachable(ctx, node.API, current); err != nil {
				return items, fmt.Errorf("gc: %w", err)
			}
		}
		if reached.infos[c] {
			continue // still referenced by a listed path: not garbage
		}
		it := GCItem{StorePath: p.StorePath, PathInfo: c.String(), Root: p.Root.String(), NarSize: p.NarSize}
		it.Providers, err = replicas(ctx, node.API, p.Root, self.ID().String(), opts)
		if err != nil {
			slog.Warn("gc: provider search", "path", p.StorePath, "err", err)
		}
		if len(opts.Remotes) > 0 {
			it.RemoteHolders, err = remotepin.Holders(ctx, opts.Remotes, p.Root, self.ID().String())
			if err != nil {
				slog.Warn("gc: remote pin status", "path", p.StorePath, "err", err)
			}
		}
		// The same peers may be both providers and cluster peers: the
		// larger count, not the sum.
		it.Replicas = max(it.Providers, it.RemoteHolders)
		switch {
		case it.Replicas < opts.MinReplicas:
			it.Reason = fmt.Sprintf("kept: %d other copies (%d providers, %d remote pins), %d required", it.Replicas, it.Providers, it.RemoteHolders, opts.MinReplicas)
		case !opts.Apply:
			it.Reason = "would unpin (dry run)"
		default:
			if reached.roots[p.Root] {
				// The same NAR or file is listed under another record.
			} else if err := node.API.Pin().Rm(ctx, bpath.FromCid(p.Root), options.Pin.RmRecursive(true)); err != nil {
				slog.Debug("gc: root pin already gone", "path", p.StorePath, "err", err)
			}
			if err := node.API.Pin().Rm(ctx, bpath.FromCid(c), options.Pin.RmRecursive(false)); err != nil {
				return items, fmt.Errorf("gc: unpin %s: %w", p.StorePath, err)
			}
			it.Unpinned, it.Reason = true, "unpinned"
		}
		items = append(items, it)
	}
	return items, nil
}

// reach is what the current manifest's values reach: PathInfos (the listed
// ones and, through references, those they link) and DAG roots (of those
// records, and source files and logs listed directly).
type reach struct {
	infos, roots map[cid.Cid]bool
}

// Records are read offline: one that is not here (a kept path's reference
// that was never fetched) holds nothing here to keep.
func reachable(ctx context.Context, api coreiface.CoreAPI, values map[cid.Cid]bool) (*reach, error) {
	api, err := api.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil, fmt.Errorf("offline API: %w", err)
	}
	r := &reach{infos: map[cid.Cid]bool{}, roots: map[cid.Cid]bool{}}
	var queue []cid.Cid
	for c := range values {
		if c.Type() == cid.DagCBOR {
			r.infos[c] = true
			queue = append(queue, c)
		} else {
			r.roots[c] = true
		}
	}
	for len(queue) > 0 {
		c := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		p, err := manifests.Load(ctx, api, c)
		if err != nil {
			slog.Debug("gc: record not readable here", "pathInfo", c, "err", err)
			continue
		}
		r.roots[p.Root] = true
		for _, ref := range p.References {
			if ref.Info != nil && !r.infos[*ref.Info] {
				r.infos[*ref.Info] = true
				queue = append(queue, *ref.Info)
			}
		}
	}
	return r, nil
}

func directPins(ctx context.Context, api coreiface.CoreAPI) ([]cid.Cid, error) {
	ch := make(chan coreiface.Pin)
	errc := make(chan error, 1)
	go func() { errc <- api.Pin().Ls(ctx, ch, options.Pin.Ls.Direct()) }()
	var out []cid.Cid
	for p := range ch {
		out = append(out, p.Path().RootCid())
	}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	return out, nil
}

// replicas counts peers other than self that provide root, stopping once
// enough are found.
func replicas(ctx context.Context, api coreiface.CoreAPI, root cid.Cid, self string, opts GCOptions) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ch, err := api.Routing().FindProviders(ctx, bpath.FromCid(root), options.Routing.NumProviders(opts.MinReplicas+1))
	if err != nil {
		return 0, err
	}
	n := 0
	for p := range ch {
		if p.ID.String() != self {
			n++
		}
	}
	return n, nil
}

// Unpublish drops store paths from the manifest (all their keys) and
// re-publishes it. Their pins stay until GC finds enough replicas.
func Unpublish(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, storePaths ...string) ([]string, error) {
	m, err := local.Current(ctx)
	if err != nil {
		return nil, err
	}
	var deletes, removed []string
	for _, sp := range storePaths {
		h := manifests.HashPart(sp)
		if !manifests.ValidHashPart(h) {
			return nil, fmt.Errorf("unpublish: %q is not a store path", sp)
		}
		c, err := m.Get(ctx, manifests.KeyStorePath(h))
		if err != nil {
			return nil, fmt.Errorf("unpublish %s: %w", sp, err)
		}
		p, err := manifests.Load(ctx, node.API, c)
		if err != nil {
			return nil, fmt.Errorf("unpublish %s: %w", sp, err)
		}
		for _, k := range manifests.KeysFor(p) {
			// Another record may share the NarHash or BLAKE3 key (same
			// contents, other name): only drop keys that point here.
			if got, err := m.Get(ctx, k); err == nil && got == c {
				deletes = append(deletes, k)
			}
		}
		removed = append(removed, p.StorePath)
	}
	if _, err := local.Update(ctx, nil, deletes); err != nil {
		return nil, fmt.Errorf("unpublish: %w", err)
	}
	if _, err := local.Publish(ctx); err != nil {
		return removed, fmt.Errorf("unpublish: %w", err)
	}
	return removed, nil
}
