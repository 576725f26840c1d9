package ipldnar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/nix-community/go-nix/pkg/wire"
	"lukechampine.com/blake3"
)

// A small test-only NAR encoder. It writes whatever tree it is given,
// unsorted or invalid names included, so hostile NARs can be built with it.

type tnode struct {
	typ     string // "regular", "symlink", "directory"
	exec    bool
	data    []byte
	target  string
	entries []tentry
}

type tentry struct {
	name string
	node tnode
}

func file(data []byte) tnode          { return tnode{typ: "regular", data: data} }
func exe(data []byte) tnode           { return tnode{typ: "regular", exec: true, data: data} }
func link(target string) tnode        { return tnode{typ: "symlink", target: target} }
func ent(name string, n tnode) tentry { return tentry{name, n} }

// dir sorts its entries by name bytes, as a valid NAR requires.
func dir(entries ...tentry) tnode {
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b tentry) int { return strings.Compare(a.name, b.name) })
	return tnode{typ: "directory", entries: entries}
}

// rawDir keeps its entries in the given order.
func rawDir(entries ...tentry) tnode { return tnode{typ: "directory", entries: entries} }

func encodeNAR(n tnode) []byte {
	var b bytes.Buffer
	wire.WriteString(&b, narMagic)
	encodeNode(&b, n)
	return b.Bytes()
}

func encodeNode(b *bytes.Buffer, n tnode) {
	ws := func(ss ...string) {
		for _, s := range ss {
			wire.WriteString(b, s)
		}
	}
	ws("(", "type", n.typ)
	switch n.typ {
	case "regular":
		if n.exec {
			ws("executable", "")
		}
		ws("contents")
		wire.WriteBytes(b, n.data)
	case "symlink":
		ws("target", n.target)
	case "directory":
		for _, e := range n.entries {
			ws("entry", "(", "name", e.name, "node")
			encodeNode(b, e.node)
			ws(")")
		}
	}
	ws(")")
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 42})
	b := make([]byte, n)
	r.Read(b)
	return b
}

func mustImport(t testing.TB, nar []byte, dst ipld.DAGService) Result {
	t.Helper()
	res, err := Import(context.Background(), bytes.NewReader(nar), dst)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return res
}

func mustRender(t testing.TB, root cid.Cid, src ipld.NodeGetter) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := Render(context.Background(), &b, root, src)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("Render returned %d, wrote %d bytes", n, b.Len())
	}
	return b.Bytes()
}

// checkResult compares the hashes of res with an independent computation.
func checkResult(t testing.TB, res Result, nar []byte) {
	t.Helper()
	if res.NarSize != uint64(len(nar)) {
		t.Errorf("NarSize = %d, want %d", res.NarSize, len(nar))
	}
	if want := sha256.Sum256(nar); res.NarHash != want {
		t.Errorf("NarHash = %x, want %x", res.NarHash, want)
	}
	if want := blake3.Sum256(nar); res.Blake3 != want {
		t.Errorf("Blake3 = %x, want %x", res.Blake3, want)
	}
}

// roundTrip imports nar, renders it back and checks both directions.
func roundTrip(t testing.TB, nar []byte) (Result, ipld.DAGService) {
	t.Helper()
	ds := mdtest.Mock()
	res := mustImport(t, nar, ds)
	checkResult(t, res, nar)
	if got := mustRender(t, res.Root, ds); !bytes.Equal(got, nar) {
		t.Fatalf("rendered NAR differs from the original (%d vs %d bytes)", len(got), len(nar))
	}
	return res, ds
}

// writeOnly is a destination whose reads always fail, like a CAR stream.
type writeOnly struct{ ipld.DAGService }

var errWriteOnly = errors.New("write-only DAGService")

func (writeOnly) Get(context.Context, cid.Cid) (ipld.Node, error) { return nil, errWriteOnly }

func (writeOnly) GetMany(_ context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, 1)
	ch <- &ipld.NodeOption{Err: errWriteOnly}
	close(ch)
	return ch
}

// countingDAG counts the blocks written to it.
type countingDAG struct {
	ipld.DAGService
	adds int
}

func (c *countingDAG) Add(ctx context.Context, nd ipld.Node) error {
	c.adds++
	return c.DAGService.Add(ctx, nd)
}

func (c *countingDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	c.adds += len(nds)
	return c.DAGService.AddMany(ctx, nds)
}

// errContains fails unless err is an *Error whose message contains every
// one of wants.
func errContains(t testing.TB, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", wants)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("error %q (%T) is not an *Error", err, err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

var _ io.Reader = (*hashingReader)(nil)
