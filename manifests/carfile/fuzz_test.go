package carfile

import (
	"bytes"
	"context"
	"testing"

	"github.com/ipfs/go-cid"
)

// FuzzImport feeds Import arbitrary bytes (seeds in testdata/fuzz/FuzzImport:
// valid CARv1 and CARv2 files and broken ones). Import must not panic, must
// hand put only blocks that hash to their CIDs (strictPut checks), and on
// success must return a non-empty set of distinct roots. What it accepted is
// then walked by Complete, so the link decoders meet hostile blocks too.
func FuzzImport(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		s := newMemStore()
		roots, st, err := Import(ctx, bytes.NewReader(data), strictPut(t, s))
		if err != nil {
			if roots != nil {
				t.Fatalf("roots %v returned with error %v", roots, err)
			}
			return
		}
		if st.Blocks != len(s.order) {
			t.Fatalf("stats say %d blocks, put saw %d", st.Blocks, len(s.order))
		}
		if len(roots) == 0 {
			t.Fatal("no roots")
		}
		seen := map[cid.Cid]bool{}
		for _, r := range roots {
			if seen[r] {
				t.Fatalf("duplicate root %s", r)
			}
			seen[r] = true
		}
		_ = Complete(ctx, s.get, roots)
	})
}

// FuzzLinks decodes arbitrary bytes as each supported codec: the walker of
// Export and Complete runs on blocks from untrusted CARs and must not panic.
func FuzzLinks(f *testing.F) {
	fx := newFixture(f)
	for _, c := range fx.closure {
		f.Add(c.Type(), fx.src.blocks[c].RawData())
	}
	f.Add(uint64(cid.DagCBOR), []byte{0x9f}) // indefinite list
	f.Add(uint64(cid.DagCBOR), bytes.Repeat([]byte{0x81}, 5000))
	f.Fuzz(func(t *testing.T, codec uint64, data []byte) {
		c, err := cid.V1Builder{Codec: codec, MhType: 0x12}.Sum(data)
		if err != nil {
			return
		}
		_, _ = appendLinks(nil, c, data)
	})
}
