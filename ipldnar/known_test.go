package ipldnar

import (
	"bytes"
	"context"
	"testing"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Empty files never need a fetch: neither the identity CID Import writes nor
// the sha2-256 empty block older imports and `ipfs add` wrote is looked up in
// the store (the mock holds neither).
func TestEmptyFilesNeedNoFetch(t *testing.T) {
	for _, leaf := range []cid.Cid{EmptyFile, EmptyRawSHA256} {
		t.Run(leaf.String(), func(t *testing.T) {
			ds := mdtest.Mock()
			ctx := context.Background()
			// An executable wrapper over the leaf, and a directory holding
			// both the plain and the executable file.
			fsn := ft.NewFSNode(ft.TFile)
			fsn.AddBlockSize(0)
			fsn.SetMode(execMode)
			data, err := fsn.GetBytes()
			must(t, err)
			x := dag.NodeWithData(data)
			must(t, x.SetCidBuilder(cidBuilder))
			must(t, x.AddRawLink("", &ipld.Link{Cid: leaf}))
			must(t, ds.Add(ctx, x))
			d, err := newDirectory(ds)
			must(t, err)
			leafNode, ok := KnownNode(leaf)
			if !ok {
				t.Fatalf("KnownNode(%s) = false", leaf)
			}
			must(t, d.AddChild(ctx, "empty", leafNode))
			must(t, d.AddChild(ctx, "run", x))
			root, err := d.GetNode()
			must(t, err)
			must(t, ds.Add(ctx, root))
			if _, err := ds.Get(ctx, leaf); err == nil {
				t.Fatalf("the mock holds %s; the test needs it absent", leaf)
			}
			got := mustRender(t, root.Cid(), ds)
			want := encodeNAR(dir(ent("empty", file(nil)), ent("run", exe(nil))))
			if !bytes.Equal(got, want) {
				t.Fatalf("rendered NAR differs from the expected one")
			}
		})
	}
}
