package publish

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	bpath "github.com/ipfs/boxo/path"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
	"github.com/nixipfs/nixipfs/manifests/carfile"
)

// ExportCAR writes the closures of the given store paths (their PathInfo
// records, whose links reach the references' records and every DAG) to w
// as a CAR whose roots are the paths' PathInfos.
func ExportCAR(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, w io.Writer, storePaths ...string) (carfile.Stats, error) {
	m, err := local.Current(ctx)
	if err != nil {
		return carfile.Stats{}, err
	}
	var roots []cid.Cid
	seen := map[cid.Cid]bool{}
	for _, sp := range storePaths {
		h := manifests.HashPart(sp)
		if !manifests.ValidHashPart(h) {
			return carfile.Stats{}, fmt.Errorf("export: %q is not a store path", sp)
		}
		c, err := m.Get(ctx, manifests.KeyStorePath(h))
		if err != nil {
			return carfile.Stats{}, fmt.Errorf("export %s: %w (publish it first)", sp, err)
		}
		if !seen[c] {
			seen[c] = true
			roots = append(roots, c)
		}
	}
	st, err := carfile.Export(ctx, w, blockGetter(node.API), roots)
	if err != nil {
		return st, fmt.Errorf("export: %w", err)
	}
	return st, nil
}

// ImportCAR loads a CAR written by ExportCAR: every block is checked
// against its CID as it arrives, the closure must be complete, and every
// path's DAG must render to its recorded NarHash and NarSize. Only then are
// the records pinned and added to the manifest. It returns the records.
func ImportCAR(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, r io.Reader) ([]Result, error) {
	bw, err := node.NewBlockWriter(ctx)
	if err != nil {
		return nil, err
	}
	roots, _, err := carfile.Import(ctx, r, bw.Put)
	if err != nil {
		bw.Abort()
		return nil, err // carfile's errors say "import CAR: …"
	}
	if err := bw.Close(); err != nil {
		return nil, fmt.Errorf("import CAR: %w", err)
	}
	offline, err := node.API.WithOptions(options.Api.Offline(true))
	if err != nil {
		return nil, err
	}
	// A CAR cut between two blocks is a valid shorter CAR: only a walk of
	// the closure over local blocks shows it is whole.
	if err := carfile.Complete(ctx, blockGetter(offline), roots); err != nil {
		return nil, fmt.Errorf("import CAR: incomplete closure: %w", err)
	}
	// Walk the records: the roots and, through their reference links, the
	// records of their closures.
	recs := map[cid.Cid]*manifests.PathInfo{}
	var order []cid.Cid
	var visit func(c cid.Cid) error
	visit = func(c cid.Cid) error {
		if _, ok := recs[c]; ok {
			return nil
		}
		p, err := manifests.Load(ctx, node.API, c)
		if err != nil {
			return fmt.Errorf("import CAR: %w", err)
		}
		recs[c] = p
		for _, ref := range p.References {
			if ref.Info != nil {
				if err := visit(*ref.Info); err != nil {
					return err
				}
			}
		}
		order = append(order, c) // dependencies first
		return nil
	}
	for _, c := range roots {
		if err := visit(c); err != nil {
			return nil, err
		}
	}
	if len(order) == 0 {
		return nil, errors.New("import CAR: no PathInfo roots")
	}
	results, err := verifyAndRecord(ctx, node, local, offline.Dag(), order, recs, nil)
	if err != nil {
		return results, fmt.Errorf("import CAR: %w", err)
	}
	return results, nil
}

// verifyAndRecord renders each record's DAG through dag and checks it
// against the record's NarHash and NarSize; only when all match does it pin
// the DAGs and records, add them (and extra keys) to the manifest and
// publish it.
func verifyAndRecord(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, dag ipld.NodeGetter, order []cid.Cid, recs map[cid.Cid]*manifests.PathInfo, extra map[string]cid.Cid) ([]Result, error) {
	var results []Result
	puts := map[string]cid.Cid{}
	for _, c := range order {
		p := recs[c]
		h := sha256.New()
		n, err := ipldnar.Render(ctx, h, p.Root, dag)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.StorePath, err)
		}
		if n != p.NarSize || string(h.Sum(nil)) != string(p.NarHash) {
			return nil, fmt.Errorf("%s: DAG renders to %d bytes with another hash than its record says; nothing recorded", p.StorePath, n)
		}
		results = append(results, Result{StorePath: p.StorePath, Root: p.Root, PathInfo: c, NarSize: p.NarSize, Status: Published})
		for _, k := range manifests.KeysFor(p) {
			puts[k] = c
		}
	}
	for _, res := range results {
		if err := node.API.Pin().Add(ctx, bpath.FromCid(res.Root), options.Pin.Recursive(true)); err != nil {
			return nil, fmt.Errorf("pin %s: %w", res.StorePath, err)
		}
		if err := node.API.Pin().Add(ctx, bpath.FromCid(res.PathInfo), options.Pin.Recursive(false)); err != nil {
			return nil, fmt.Errorf("pin %s: %w", res.StorePath, err)
		}
		p := recs[res.PathInfo] // rendered and hashed above
		recordRendered(ctx, node, p.Root, p.NarSize, p.NarHash)
	}
	for k, c := range extra {
		puts[k] = c
	}
	if len(puts) == 0 {
		return nil, nil
	}
	if _, err := local.Update(ctx, puts, nil); err != nil {
		return nil, err
	}
	if _, err := local.Publish(ctx); err != nil {
		return results, err
	}
	return results, nil
}

// blockGetter reads raw blocks through api.
func blockGetter(api coreiface.CoreAPI) func(context.Context, cid.Cid) (blocks.Block, error) {
	return func(ctx context.Context, c cid.Cid) (blocks.Block, error) {
		r, err := api.Block().Get(ctx, bpath.FromCid(c))
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		return blocks.NewBlockWithCid(data, c)
	}
}
