package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
)

// Index maps store-path hashes to PathInfo CIDs: one small file per path
// under dir, written atomically, so a crash never leaves a half entry and a
// publisher and a running gateway can share it without locks.
type Index struct {
	dir string
}

// OpenIndex opens (creating) the index in dir.
func OpenIndex(dir string) (*Index, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return &Index{dir: dir}, nil
}

// ErrNotFound means the index has no entry for the key.
var ErrNotFound = errors.New("not in the manifest")

// ValidHashPart reports whether s is a store-path hash (32 nix32 characters).
// Keys come from URLs: nothing else may reach the file system.
func ValidHashPart(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := nixbase32.DecodeString(s)
	return err == nil
}

// Get returns the PathInfo CID recorded for a store-path hash.
func (x *Index) Get(hashPart string) (cid.Cid, error) {
	if !ValidHashPart(hashPart) {
		return cid.Undef, fmt.Errorf("index lookup %q: %w", hashPart, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(x.dir, hashPart))
	if errors.Is(err, fs.ErrNotExist) {
		return cid.Undef, fmt.Errorf("index lookup %s: %w", hashPart, ErrNotFound)
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("index lookup %s: %w", hashPart, err)
	}
	c, err := cid.Decode(strings.TrimSpace(string(b)))
	if err != nil {
		return cid.Undef, fmt.Errorf("index entry %s: %w", hashPart, err)
	}
	return c, nil
}

// Put records c as the PathInfo for hashPart.
func (x *Index) Put(hashPart string, c cid.Cid) error {
	if !ValidHashPart(hashPart) {
		return fmt.Errorf("index put: %q is not a store-path hash", hashPart)
	}
	return atomicfile.WriteFile(filepath.Join(x.dir, hashPart), []byte(c.String()+"\n"), 0o600)
}

// Len counts the entries.
func (x *Index) Len() (int, error) {
	ents, err := os.ReadDir(x.dir)
	if err != nil {
		return 0, fmt.Errorf("read index: %w", err)
	}
	n := 0
	for _, e := range ents {
		if ValidHashPart(e.Name()) {
			n++
		}
	}
	return n, nil
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
	st, err := api.Block().Put(ctx, bytes.NewReader(blk.RawData()), options.Block.CidCodec("dag-cbor"))
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
