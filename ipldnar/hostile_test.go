package ipldnar

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/wire"
)

var fixedTime = time.Unix(1700000000, 0)

// narBuilder writes raw NAR tokens, for inputs the tree encoder cannot
// express.
type narBuilder struct{ bytes.Buffer }

func (b *narBuilder) s(ss ...string) *narBuilder {
	for _, s := range ss {
		wire.WriteString(b, s)
	}
	return b
}

func (b *narBuilder) u(n uint64) *narBuilder {
	wire.WriteUint64(b, n)
	return b
}

func (b *narBuilder) raw(p ...byte) *narBuilder {
	b.Write(p)
	return b
}

func nb() *narBuilder { return new(narBuilder).s(narMagic) }

// dirNAR wraps the node written by b (without its magic) as entry "f" of a
// root directory.
func dirNAR(b *narBuilder) []byte {
	node := b.Bytes()[len(nb().Bytes()):]
	out := nb().s("(", "type", "directory", "entry", "(", "name", "f", "node")
	out.Write(node)
	return out.s(")", ")").Bytes()
}

// setByte returns a copy of nar with nar[i] = c.
func setByte(nar []byte, i int, c byte) []byte {
	nar = bytes.Clone(nar)
	nar[i] = c
	return nar
}

func TestHostileNARs(t *testing.T) {
	f := file([]byte("x"))
	valid := encodeNAR(dir(ent("a", file([]byte("abc")))))
	// Offsets into valid: magic(8+16) ( type directory entry ( name a node
	// ( type regular contents 3 abc ) ) ).
	nameOff := bytes.Index(valid, []byte("a\x00\x00\x00\x00\x00\x00\x00"))
	contentOff := bytes.Index(valid, []byte("abc"))
	tokenOff := bytes.Index(valid, []byte("entry"))

	cases := []struct {
		name  string
		nar   []byte
		wants []string
	}{
		{"dot dot", encodeNAR(rawDir(ent("..", f))), []string{`nar entry "/.."`, `name ".." is not allowed`}},
		{"nested dot dot", encodeNAR(dir(ent("foo", dir(ent("bar", rawDir(ent("..", f))))))), []string{`nar entry "/foo/bar/.."`, `name ".." is not allowed`}},
		{"dot", encodeNAR(rawDir(ent(".", f))), []string{`"/."`, `name "." is not allowed`}},
		{"empty name", encodeNAR(dir(ent("foo", rawDir(ent("", f))))), []string{`nar entry "/foo/"`, "empty name"}},
		{"slash", encodeNAR(rawDir(ent("a/b", f))), []string{`"/a/b"`, `name "a/b" contains '/'`}},
		{"NUL", encodeNAR(rawDir(ent("a\x00b", f))), []string{`"/a\x00b"`, "NUL"}},
		{"long name", encodeNAR(dir(ent("d", rawDir(ent(strings.Repeat("n", 256), f))))), []string{`nar entry "/d"`, "name of 256 bytes exceeds 255"}},
		{"unsorted", encodeNAR(rawDir(ent("a", f), ent("c", f), ent("b", f))), []string{`nar entry "/b"`, `"b" is not sorted after "c"`}},
		{"unsorted case", encodeNAR(rawDir(ent("a", f), ent("B", f))), []string{`nar entry "/B"`, "not sorted"}},
		{"unsorted bytes", encodeNAR(rawDir(ent("\xff", f), ent("z", f))), []string{`nar entry "/z"`, "not sorted"}},
		{"duplicate", encodeNAR(dir(ent("sub", rawDir(ent("a", f), ent("a", f))))), []string{`nar entry "/sub/a"`, `duplicate entry "a"`}},
		{"duplicate dir", encodeNAR(rawDir(ent("a", dir()), ent("a", f))), []string{`nar entry "/a"`, "duplicate"}},
		{"bad magic", new(narBuilder).s("nix-archive-2").s("(", "type", "regular", "contents").u(0).s(")").Bytes(), []string{"bad magic"}},
		{"not a NAR", []byte("hello world, this is not a NAR at all"), []string{"not a NAR"}},
		{"empty input", nil, []string{"not a NAR", "unexpected end"}},
		{"huge magic length", new(narBuilder).u(1 << 62).Bytes(), []string{"exceeds"}},
		{"trailing garbage", append(bytes.Clone(valid), 'x'), []string{`nar entry "/"`, "trailing data"}},
		{"trailing zeros", append(bytes.Clone(valid), make([]byte, 8)...), []string{"trailing data"}},
		{"trailing NAR", append(bytes.Clone(valid), valid...), []string{"trailing data"}},
		{"nonzero name padding", setByte(valid, nameOff+7, 1), []string{`nar entry "/"`, "nonzero padding after name"}},
		{"nonzero token padding", setByte(valid, tokenOff+6, 'x'), []string{"nonzero padding after token"}},
		{"nonzero contents padding", setByte(valid, contentOff+3, 1), []string{`nar entry "/a"`, "nonzero padding after contents"}},
		{"lying length, longer", nb().s("(", "type", "regular", "contents").u(100).raw([]byte("short")...).Bytes(), []string{`nar entry "/"`, "unexpected end of NAR"}},
		{"lying length, shorter", nb().s("(", "type", "regular", "contents").u(2).raw([]byte("abcdefgh")...).s(")").Bytes(), []string{"nonzero padding after contents"}},
		{"lying length, shorter by 8", dirNAR(nb().s("(", "type", "regular", "contents").u(0).s("abcdefgh").s(")")), []string{`nar entry "/f"`, `expected ")", got "abcdefgh"`}},
		{"huge content length", nb().s("(", "type", "regular", "contents").u(1 << 63).Bytes(), []string{"too large"}},
		{"huge name length", nb().s("(", "type", "directory", "entry", "(", "name").u(1 << 62).Bytes(), []string{"name of 4611686018427387904 bytes exceeds 255"}},
		{"huge token length", nb().s("(", "type").u(1 << 40).Bytes(), []string{"token of 1099511627776 bytes exceeds 16"}},
		{"empty target", encodeNAR(dir(ent("l", link("")))), []string{`nar entry "/l"`, "empty symlink target"}},
		{"NUL target", encodeNAR(dir(ent("l", link("a\x00b")))), []string{`nar entry "/l"`, "NUL"}},
		{"long target", encodeNAR(dir(ent("l", link(strings.Repeat("t", 4096))))), []string{`nar entry "/l"`, "symlink target of 4096 bytes exceeds 4095"}},
		{"unknown type", nb().s("(", "type", "fifo", ")").Bytes(), []string{`nar entry "/"`, `unknown node type "fifo"`}},
		{"missing paren", nb().s("type", "regular").Bytes(), []string{`expected "(", got "type"`}},
		{"executable flag value", nb().s("(", "type", "regular", "executable", "yes", "contents").u(0).s(")").Bytes(), []string{`expected "", got "yes"`}},
		{"bad entry keyword", nb().s("(", "type", "directory", "entyr").Bytes(), []string{`expected "entry" or ")"`}},
		{"missing node keyword", nb().s("(", "type", "directory", "entry", "(", "name", "a", "(").Bytes(), []string{`nar entry "/a"`, `expected "node"`}},
		{"unclosed entry", nb().s("(", "type", "directory", "entry", "(", "name", "a", "node", "(", "type", "symlink", "target", "x", ")", "entry").Bytes(), []string{`nar entry "/a"`, `expected ")"`}},
		{"symlink extra token", nb().s("(", "type", "symlink", "target", "x", "y", ")").Bytes(), []string{`expected ")", got "y"`}},
		{"regular without contents", nb().s("(", "type", "regular", ")").Bytes(), []string{`expected "contents"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Import(context.Background(), bytes.NewReader(tc.nar), mdtest.Mock())
			errContains(t, err, tc.wants...)
		})
	}
}

// Cutting a NAR anywhere must be an error, reported as truncation of the
// entry being read.
func TestTruncated(t *testing.T) {
	valid := encodeNAR(dir(
		ent("bin", dir(ent("x", exe([]byte("exe-contents"))), ent("y", link("x")))),
		ent("big", file(data3_5MiB[:MiB+5])),
		ent("empty", dir()),
		ent("f", file([]byte("0123456789"))),
	))
	roundTrip(t, valid)
	bigStart := bytes.Index(valid, data3_5MiB[:64])
	valid = valid[:len(valid):len(valid)]
	for i := 0; i < len(valid); i++ {
		if i > bigStart+64 && i < bigStart+MiB-4096 { // inside the big file: sample
			i += 4093
		}
		_, err := Import(context.Background(), bytes.NewReader(valid[:i]), mdtest.Mock())
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d: got %v, want ErrTruncated", i, err)
		}
		if i >= 24 && !strings.HasPrefix(err.Error(), `nar entry "/`) {
			t.Fatalf("cut at %d: error %q does not name an entry", i, err)
		}
	}
}

type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		err = e.err
	}
	return n, err
}

func TestImportReadError(t *testing.T) {
	boom := errors.New("boom")
	nar := encodeNAR(dir(ent("a", file(data3_5MiB))))
	_, err := Import(context.Background(), &errReader{bytes.NewReader(nar[:MiB]), boom}, mdtest.Mock())
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	errContains(t, err, `nar entry "/a"`)
}

// cancelReader cancels a context once n bytes have been read.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestImportCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Import(ctx, bytes.NewReader(encodeNAR(file(nil))), mdtest.Mock()); err != context.Canceled {
		t.Errorf("cancelled before: got %v", err)
	}

	nar := encodeNAR(dir(ent("a", file(data3_5MiB)), ent("b", bigDir(3000))))
	for _, at := range []int{100, 2 * MiB, len(nar) - 1000} {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Import(ctx, &cancelReader{bytes.NewReader(nar), at, cancel}, mdtest.Mock())
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled after %d bytes: got %v", at, err)
		}
	}
}

func TestRenderCancel(t *testing.T) {
	res, ds := roundTrip(t, encodeNAR(dir(ent("a", file(data3_5MiB)), ent("b", bigDir(300)))))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Render(ctx, io.Discard, res.Root, ds); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestRenderWriteError(t *testing.T) {
	res, ds := roundTrip(t, encodeNAR(dir(ent("a", file(data3_5MiB)))))
	if _, err := Render(context.Background(), &failWriter{MiB}, res.Root, ds); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("got %v, want disk full", err)
	}
}

// Hand-built DAGs.

func fileNode(t testing.TB, fsn *ft.FSNode, children ...ipld.Node) *dag.ProtoNode {
	t.Helper()
	data, err := fsn.GetBytes()
	must(t, err)
	nd := dag.NodeWithData(data)
	must(t, nd.SetCidBuilder(cidBuilder))
	for _, c := range children {
		must(t, nd.AddNodeLink("", c))
	}
	return nd
}

// dirNode builds a basic directory with the given links, duplicates and
// invalid names included.
func dirNode(t testing.TB, names []string, children []ipld.Node) *dag.ProtoNode {
	t.Helper()
	nd := dag.NodeWithData(ft.FolderPBData())
	must(t, nd.SetCidBuilder(cidBuilder))
	for i, name := range names {
		l, err := ipld.MakeLink(children[i])
		must(t, err)
		must(t, nd.AddRawLink(name, l))
	}
	return nd
}

func pbNode(t testing.TB, typ pb.Data_DataType, data []byte) *dag.ProtoNode {
	t.Helper()
	fsn := ft.NewFSNode(typ)
	fsn.SetData(data)
	return fileNode(t, fsn)
}

func TestHostileDAGs(t *testing.T) {
	ctx := context.Background()
	ds := mdtest.Mock()
	add := func(nds ...ipld.Node) {
		t.Helper()
		must(t, ds.AddMany(ctx, nds))
	}
	leaf := boxoFile(t, []byte("data"), ds) // raw leaf, 4 bytes
	add(leaf)

	dirWith := func(names ...string) ipld.Node {
		children := make([]ipld.Node, len(names))
		for i := range children {
			children[i] = leaf
		}
		d := dirNode(t, names, children)
		add(d)
		return d
	}

	lyingSize := ft.NewFSNode(ft.TFile)
	lyingSize.AddBlockSize(4)
	lyingSize.UpdateFilesize(1)
	lyingSizeNd := fileNode(t, lyingSize, leaf)

	wrongBlock := ft.NewFSNode(ft.TFile)
	wrongBlock.AddBlockSize(3)
	wrongBlockNd := fileNode(t, wrongBlock, leaf)

	missingBlock := ft.NewFSNode(ft.TFile)
	missingBlock.AddBlockSize(4)
	missingBlockNd := fileNode(t, missingBlock)
	must(t, missingBlockNd.AddNodeLink("", dag.NewRawNode([]byte("not stored"))))

	inner := ft.NewFSNode(ft.TFile)
	inner.AddBlockSize(4)
	innerNd := fileNode(t, inner, leaf)
	innerLie := ft.NewFSNode(ft.TFile)
	innerLie.AddBlockSize(5)
	innerLieNd := fileNode(t, innerLie, innerNd) // inner node holds 4, parent says 5

	extraSizes := ft.NewFSNode(ft.TFile)
	extraSizes.AddBlockSize(4)
	extraSizes.AddBlockSize(0)
	extraSizesNd := fileNode(t, extraSizes, leaf)

	dirAsBlock := ft.NewFSNode(ft.TFile)
	emptyDir := dirNode(t, nil, nil)
	dirAsBlock.AddBlockSize(0)
	dirAsBlockNd := fileNode(t, dirAsBlock, emptyDir)

	add(lyingSizeNd, wrongBlockNd, missingBlockNd, innerNd, innerLieNd, extraSizesNd, emptyDir, dirAsBlockNd)

	metadata := pbNode(t, ft.TMetadata, nil)
	emptyTarget := pbNode(t, ft.TSymlink, nil)
	nulTarget := pbNode(t, ft.TSymlink, []byte("a\x00b"))
	add(metadata, emptyTarget, nulTarget)

	cborBlock, err := blocks.NewBlockWithCid([]byte{0xa0}, mustCid(t, cid.DagCBOR, []byte{0xa0}))
	must(t, err)
	cborNode := &dag.RawNode{Block: cborBlock}
	nested := dirNode(t, []string{"ok", "sub"}, []ipld.Node{leaf, dirWith("fine", "..")})
	add(nested)

	cases := []struct {
		name  string
		root  ipld.Node
		src   ipld.NodeGetter
		wants []string
	}{
		{"dot dot", dirWith("a", ".."), ds, []string{`nar entry "/.."`, `name ".." is not allowed`}},
		{"nested dot dot", nested, ds, []string{`nar entry "/sub/.."`, "not allowed"}},
		{"dot", dirWith("."), ds, []string{`"/."`, "not allowed"}},
		{"slash", dirWith("a/b"), ds, []string{`"/a/b"`, "contains '/'"}},
		{"NUL", dirWith("a\x00"), ds, []string{"NUL"}},
		{"empty name", dirWith(""), ds, []string{`nar entry "/"`, "empty name"}},
		{"long name", dirWith(strings.Repeat("x", 256)), ds, []string{"exceeds 255"}},
		{"duplicate", dirWith("a", "b", "b"), ds, []string{`nar entry "/b"`, `duplicate entry "b"`}},
		{"lying filesize", lyingSizeNd, ds, []string{`nar entry "/"`, "declares 5 bytes but its data and blocks hold 4"}},
		{"lying block size", wrongBlockNd, ds, []string{"holds 4 bytes, its parent declares 3"}},
		{"lying inner node", innerLieNd, ds, []string{"holds 4 bytes, its parent declares 5"}},
		{"more sizes than links", extraSizesNd, ds, []string{"1 links but 2 block sizes"}},
		{"directory inside file", dirAsBlockNd, ds, []string{"UnixFS type Directory"}},
		{"missing block", missingBlockNd, ds, []string{`nar entry "/"`, "not found"}},
		{"metadata node", metadata, ds, []string{"UnixFS node type Metadata has no NAR equivalent"}},
		{"empty symlink target", emptyTarget, ds, []string{"empty symlink target"}},
		{"NUL symlink target", nulTarget, ds, []string{"NUL"}},
		{"unsupported codec", cborNode, memGetter{cborNode.Cid(): cborNode}, []string{"unsupported codec 0x71"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			_, err := Render(ctx, &b, tc.root.Cid(), tc.src)
			errContains(t, err, tc.wants...)
		})
	}
}

func mustCid(t testing.TB, codec uint64, data []byte) cid.Cid {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	must(t, err)
	return cid.NewCidV1(codec, h)
}

type memGetter map[cid.Cid]ipld.Node

func (m memGetter) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	if nd, ok := m[c]; ok {
		return nd, nil
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

func (m memGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cids))
	for _, c := range cids {
		nd, err := m.Get(ctx, c)
		ch <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(ch)
	return ch
}

// hamtNode builds a HAMT shard node (fanout 256) with the given bucket bits
// and links (names with their prefix).
func hamtNode(t testing.TB, bits []int, names []string, children ...ipld.Node) *dag.ProtoNode {
	t.Helper()
	bf := make([]byte, 32)
	for _, b := range bits {
		bf[31-b/8] |= 1 << (b % 8)
	}
	data, err := ft.HAMTShardData(bytes.TrimLeft(bf, "\x00"), 256, hamt.HashMurmur3)
	must(t, err)
	nd := dag.NodeWithData(data)
	must(t, nd.SetCidBuilder(cidBuilder))
	for i, name := range names {
		l, err := ipld.MakeLink(children[i])
		must(t, err)
		must(t, nd.AddRawLink(name, l))
	}
	return nd
}

func TestHostileHAMT(t *testing.T) {
	ctx := context.Background()
	ds := mdtest.Mock()
	leaf := boxoFile(t, []byte("data"), ds)
	must(t, ds.Add(ctx, leaf))

	sub := hamtNode(t, []int{5}, []string{"05x"}, leaf)
	valid := hamtNode(t, []int{0, 2}, []string{"00y", "02"}, leaf, sub)
	dup := hamtNode(t, []int{0, 1}, []string{"00x", "01x"}, leaf, leaf)
	dupAcross := hamtNode(t, []int{0, 2}, []string{"00x", "02"}, leaf, sub)
	badPrefix := hamtNode(t, []int{0}, []string{"zzx"}, leaf)
	lowerHex := hamtNode(t, []int{10}, []string{"0ax"}, leaf)
	bitMismatch := hamtNode(t, []int{0}, []string{"01x"}, leaf)
	countMismatch := hamtNode(t, []int{0, 1}, []string{"00x"}, leaf)
	dotdot := hamtNode(t, []int{3}, []string{"03.."}, leaf)
	subIsFile := hamtNode(t, []int{2}, []string{"02"}, leaf)
	for _, nd := range []ipld.Node{sub, valid, dup, dupAcross, badPrefix, lowerHex, bitMismatch, countMismatch, dotdot, subIsFile} {
		must(t, ds.Add(ctx, nd))
	}

	want := encodeNAR(dir(ent("x", file([]byte("data"))), ent("y", file([]byte("data")))))
	if got := mustRender(t, valid.Cid(), ds); !bytes.Equal(got, want) {
		t.Fatal("hand-built HAMT rendered wrong")
	}
	for _, tc := range []struct {
		name  string
		root  ipld.Node
		wants []string
	}{
		{"duplicate in shard", dup, []string{`nar entry "/x"`, `duplicate entry "x"`}},
		{"duplicate across shards", dupAcross, []string{`nar entry "/x"`, `duplicate entry "x"`}},
		{"bad prefix", badPrefix, []string{`nar entry "/"`, `invalid HAMT link name "zzx"`}},
		{"lower-case prefix", lowerHex, []string{`invalid HAMT link name "0ax"`}},
		{"bit not set", bitMismatch, []string{`invalid HAMT link name "01x"`}},
		{"link count", countMismatch, []string{"1 links but 2 bitfield entries"}},
		{"dot dot", dotdot, []string{`nar entry "/.."`, "not allowed"}},
		{"sub-shard is a file", subIsFile, []string{"is not dag-pb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ctx, io.Discard, tc.root.Cid(), ds)
			errContains(t, err, tc.wants...)
		})
	}
}

func TestRenderMaxDepth(t *testing.T) {
	ctx := context.Background()
	ds := mdtest.Mock()
	var nd ipld.Node = dag.NewRawNode([]byte("bottom"))
	must(t, ds.Add(ctx, nd))
	for i := 0; i < maxDepth+1; i++ {
		nd = dirNode(t, []string{"d"}, []ipld.Node{nd})
		must(t, ds.Add(ctx, nd))
	}
	_, err := Render(ctx, io.Discard, nd.Cid(), ds)
	errContains(t, err, "nested deeper than 1024")
}
