package publish

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// Adopt takes into this node's manifest store paths that another node
// published (a builder's outputs): want maps each expected store path to
// the CID of its PathInfo. Each record is fetched and must be for its store
// path and signed by one of keys; each DAG is fetched and must render to the
// record's NarHash and NarSize. Only when all pass are they pinned and
// recorded, with the extra manifest keys (a build log, say), and the
// manifest published. On any error nothing is recorded.
func Adopt(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, want map[string]cid.Cid, keys []signature.PublicKey, extra map[string]cid.Cid) ([]Result, error) {
	recs := map[cid.Cid]*manifests.PathInfo{}
	var order []cid.Cid
	for storePath, c := range want {
		p, err := manifests.Load(ctx, node.API, c)
		if err != nil {
			return nil, fmt.Errorf("adopt %s: %w", storePath, err)
		}
		if p.StorePath != storePath {
			return nil, fmt.Errorf("adopt %s: record %s is for %s", storePath, c, p.StorePath)
		}
		if !p.Verify(keys) {
			return nil, fmt.Errorf("adopt %s: record %s is not signed by a trusted key", storePath, c)
		}
		recs[c] = p
		order = append(order, c)
	}
	results, err := verifyAndRecord(ctx, node, local, node.API.Dag(), order, recs, extra)
	if err != nil {
		return results, fmt.Errorf("adopt: %w", err)
	}
	return results, nil
}
