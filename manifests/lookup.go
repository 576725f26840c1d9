package manifests

import (
	"context"

	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Lookup answers "which PathInfo has this store-path hash" from the local
// index, keeping decoded records in a bounded cache (records are immutable:
// a CID names one content forever).
type Lookup struct {
	index *Index
	api   coreiface.CoreAPI
	cache *lru.Cache[cid.Cid, *PathInfo]
}

// NewLookup returns a Lookup over index, loading records through api.
func NewLookup(index *Index, api coreiface.CoreAPI) *Lookup {
	c, _ := lru.New[cid.Cid, *PathInfo](16384) // cannot fail for a positive size
	return &Lookup{index: index, api: api, cache: c}
}

// Lookup returns the PathInfo for hashPart, or an error wrapping ErrNotFound.
func (l *Lookup) Lookup(ctx context.Context, hashPart string) (*PathInfo, error) {
	c, err := l.index.Get(hashPart)
	if err != nil {
		return nil, err
	}
	if p, ok := l.cache.Get(c); ok {
		return p, nil
	}
	p, err := Load(ctx, l.api, c)
	if err != nil {
		return nil, err
	}
	l.cache.Add(c, p)
	return p, nil
}
