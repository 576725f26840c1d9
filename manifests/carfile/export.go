package carfile

import (
	"bufio"
	"context"
	"fmt"
	"io"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
)

// Export writes a CARv1 to w whose header names roots and whose body holds
// every block reachable from them once, depth-first with links in block
// order, fetched through get. The output is a pure function of the DAG, so
// two exports of the same roots are byte-identical.
//
// Identity blocks are not written, as go-car does by default: they are in
// their CIDs. Links are found for dag-pb, raw and dag-cbor blocks; any other
// codec is an error. The header is written before the first block is
// fetched, so on error w holds a partial CAR the caller must discard.
func Export(ctx context.Context, w io.Writer, get func(ctx context.Context, c cid.Cid) (blocks.Block, error), roots []cid.Cid) (Stats, error) {
	var st Stats
	if err := checkRoots(roots); err != nil {
		return st, fmt.Errorf("export CAR: %w", err)
	}
	// go-car writes each section as three small writes; buffer them so a
	// network writer sees fewer, larger ones.
	bw := bufio.NewWriterSize(w, 64<<10)
	car, err := carstorage.NewWritable(bw, roots,
		carv2.WriteAsCarV1(true),
		// walk already deduplicates by whole CID. go-car's own check would
		// repeat the lookup, and by default it keys on the multihash, which
		// would drop the second of two CIDs (say raw and dag-pb) sharing
		// bytes, leaving a hole for an importer keyed by CID.
		carv2.AllowDuplicatePuts(true),
	)
	if err != nil {
		return st, fmt.Errorf("export CAR: write header: %w", err)
	}
	err = walk(ctx, get, roots, func(c cid.Cid, data []byte) error {
		if isIdentity(c) {
			return nil
		}
		if err := car.Put(ctx, c.KeyString(), data); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		st.Blocks++
		st.Bytes += int64(len(data))
		return nil
	}, true)
	if err != nil {
		return st, fmt.Errorf("export CAR: %w", err)
	}
	if err := car.Finalize(); err != nil {
		return st, fmt.Errorf("export CAR: finalize: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("export CAR: %w", err)
	}
	return st, nil
}
