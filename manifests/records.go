package manifests

// Reading and writing PathInfo blocks through the IPFS node.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
)

// ErrNotFound means a manifest has no entry for the key.
var ErrNotFound = errors.New("not in the manifest")

// ValidHashPart reports whether s is a store-path hash (32 nix32 characters).
// Keys come from URLs: nothing else may reach a lookup.
func ValidHashPart(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := nixbase32.DecodeString(s)
	return err == nil
}

// Load fetches and decodes the PathInfo block c.
func Load(ctx context.Context, api coreiface.CoreAPI, c cid.Cid) (*PathInfo, error) {
	if c.Type() != cid.DagCBOR {
		return nil, fmt.Errorf("load PathInfo %s: not a dag-cbor CID", c)
	}
	r, err := api.Block().Get(ctx, path.FromCid(c))
	if err != nil {
		return nil, fmt.Errorf("load PathInfo %s: %w", c, err)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPathInfoSize+1))
	if err != nil {
		return nil, fmt.Errorf("load PathInfo %s: %w", c, err)
	}
	p, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("load PathInfo %s: %w", c, err)
	}
	return p, nil
}

// Store writes p's block to IPFS and pins it directly (its DAG root and
// references are pinned on their own). It returns the block's CID.
func Store(ctx context.Context, api coreiface.CoreAPI, p *PathInfo) (cid.Cid, error) {
	blk, err := p.Block()
	if err != nil {
		return cid.Undef, err
	}
	// A record is read on its own, for a narinfo (ipfsnode.WithSmallReads).
	st, err := api.Block().Put(ipfsnode.WithSmallReads(ctx), bytes.NewReader(blk.RawData()), options.Block.CidCodec("dag-cbor"))
	if err != nil {
		return cid.Undef, fmt.Errorf("store PathInfo %s: %w", p.StorePath, err)
	}
	if !st.Path().RootCid().Equals(blk.Cid()) {
		return cid.Undef, fmt.Errorf("store PathInfo %s: node returned %s, want %s", p.StorePath, st.Path().RootCid(), blk.Cid())
	}
	if err := api.Pin().Add(ctx, path.FromCid(blk.Cid()), options.Pin.Recursive(false)); err != nil {
		return cid.Undef, fmt.Errorf("pin PathInfo %s: %w", p.StorePath, err)
	}
	return blk.Cid(), nil
}
