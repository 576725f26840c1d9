package ipfsnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// A DAG's root CID fixes the NAR it renders to, so once that NAR's size and
// SHA-256 are known from bytes actually hashed (the NAR an import chunked,
// or the render a CAR import checked), the gateway need not hash it again to
// trust it (gateway.Config.Rendered). Only imports write records: written by
// a follower's gateway while the blocks it fetched were not yet stored, they
// doubled its CPU (docs/performance.md). The records live in the embedded
// repo's datastore, beside the blocks; an external node keeps none.

// renderedPrefix holds one record per root: its NAR's size (8 bytes, big
// endian) and SHA-256.
const renderedPrefix = "/nixipfs-rendered/"

func renderedKey(root cid.Cid) ds.Key { return ds.NewKey(renderedPrefix + root.String()) }

func renderedValue(size int64, narHash []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(size)), narHash...)
}

// SetRendered records that the DAG under root renders to a NAR of size bytes
// whose SHA-256 is narHash. Call it only with a size and hash computed from
// those very bytes. An external node records nothing.
func (n *Node) SetRendered(ctx context.Context, root cid.Cid, size int64, narHash []byte) error {
	if n.embedded == nil {
		return nil
	}
	if err := n.embedded.Repo.Datastore().Put(ctx, renderedKey(root), renderedValue(size, narHash)); err != nil {
		return fmt.Errorf("record the NAR of %s: %w", root, err)
	}
	return nil
}

// Rendered reports whether SetRendered recorded that root renders to a NAR
// of size bytes with SHA-256 narHash. Anything else (no record, another
// size or hash, an external node, an error reading) is false.
func (n *Node) Rendered(ctx context.Context, root cid.Cid, size int64, narHash []byte) bool {
	if n.embedded == nil {
		return false
	}
	v, err := n.embedded.Repo.Datastore().Get(ctx, renderedKey(root))
	return err == nil && bytes.Equal(v, renderedValue(size, narHash))
}
