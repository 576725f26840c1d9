package ipldnar

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	chunker "github.com/ipfs/boxo/chunker"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/nix-community/go-nix/pkg/nar"
)

const MiB = 1 << 20

var (
	data3_5MiB = randBytes(1, 3*MiB+MiB/2)
	data1MiB   = randBytes(2, MiB)
)

// bigDir returns a directory of n small files; big enough n makes boxo shard it.
func bigDir(n int) tnode {
	entries := make([]tentry, n)
	for i := range entries {
		name := fmt.Sprintf("file-%05d", i)
		entries[i] = ent(name, file([]byte(name)))
	}
	return dir(entries...)
}

func sampleTree() tnode {
	return dir(
		ent("bin", dir(
			ent("hello", exe([]byte("#!/bin/sh\necho hello\n"))),
			ent("hello-link", link("hello")),
			ent("empty-exe", exe(nil)),
		)),
		ent("lib", dir(
			ent("libfoo.so.1", file(randBytes(3, 5000))),
			ent("libfoo.so", link("libfoo.so.1")),
			ent("dangling", link("/nix/store/does-not-exist")),
			ent("empty", file(nil)),
			ent("nested", dir(ent("deeper", dir(ent("deepest", dir(ent("x", file([]byte("x"))))))))),
		)),
		ent("share", dir(
			ent("empty-dir", dir()),
			ent("ünïcødé-名前-😀", file([]byte("unicode name"))),
			ent("latin1-\xe9\xff", file([]byte("not UTF-8"))),
			ent(strings.Repeat("n", 255), file([]byte("longest name"))),
			ent("with space & 'quotes'", link("../bin/hello")),
			ent("A", file([]byte("upper sorts before lower"))),
			ent("a", file([]byte("lower"))),
		)),
		ent("same-as-lib", file(randBytes(3, 5000))), // duplicate contents: dedup
	)
}

var roundTripCases = []struct {
	name string
	tree tnode
}{
	{"tree", sampleTree()},
	{"empty dir root", dir()},
	{"file root", file([]byte("hello world\n"))},
	{"exec file root", exe([]byte("#!/bin/sh\n"))},
	{"empty file root", file(nil)},
	{"empty exec root", exe(nil)},
	{"symlink root", link("/nix/store/abc-foo/bin/foo")},
	{"dangling symlink root", link("nowhere")},
	{"max length target", link(strings.Repeat("t", maxTargetLen))},
	{"padding boundaries", dir(
		ent("f1", file([]byte("1"))), ent("f7", file([]byte("1234567"))),
		ent("f8", file([]byte("12345678"))), ent("f9", file([]byte("123456789"))))},
	{"one chunk", file(data1MiB)},
	{"one chunk exec", exe(data1MiB)},
	{"one chunk and a byte exec", exe(data3_5MiB[:MiB+1])},
	{"multi-chunk", file(data3_5MiB)},
	{"multi-chunk exec", exe(data3_5MiB)},
	{"multi-chunk in dir", dir(ent("a", file(data3_5MiB)), ent("b", exe(data3_5MiB)))},
	{"10k dir", dir(ent("big", bigDir(10000)))},
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, encodeNAR(tc.tree))
		})
	}
}

// The test encoder must agree with go-nix's writer, or the round trips above
// would only show that two of our own codecs agree.
func TestEncoderMatchesGoNix(t *testing.T) {
	var b bytes.Buffer
	nw, err := nar.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(p string, n tnode)
	walk = func(p string, n tnode) {
		switch n.typ {
		case "regular":
			must(t, nw.WriteHeader(&nar.Header{Path: p, Type: nar.TypeRegular, Size: int64(len(n.data)), Executable: n.exec}))
			if _, err := nw.Write(n.data); err != nil {
				t.Fatal(err)
			}
		case "symlink":
			must(t, nw.WriteHeader(&nar.Header{Path: p, Type: nar.TypeSymlink, LinkTarget: n.target}))
		case "directory":
			must(t, nw.WriteHeader(&nar.Header{Path: p, Type: nar.TypeDirectory}))
			for _, e := range n.entries {
				walk(strings.TrimSuffix(p, "/")+"/"+e.name, e.node)
			}
		}
	}
	tree := dir(
		ent("bin", dir(ent("x", exe([]byte("exe"))), ent("y", link("x")))),
		ent("e", file(nil)),
		ent("f", file(randBytes(9, 1234))),
		ent("ünï", dir()),
	)
	walk("/", tree)
	must(t, nw.Close())
	if !bytes.Equal(b.Bytes(), encodeNAR(tree)) {
		t.Fatal("test encoder and go-nix disagree")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func getFSNode(t testing.TB, ds ipld.NodeGetter, c cid.Cid) (*dag.ProtoNode, *ft.FSNode) {
	t.Helper()
	nd, err := ds.Get(context.Background(), c)
	must(t, err)
	pn, ok := nd.(*dag.ProtoNode)
	if !ok {
		t.Fatalf("%s is not dag-pb", c)
	}
	fsn, err := ft.FSNodeFromBytes(pn.Data())
	must(t, err)
	return pn, fsn
}

func childCid(t testing.TB, ds ipld.DAGService, dirCid cid.Cid, name string) cid.Cid {
	t.Helper()
	nd, err := ds.Get(context.Background(), dirCid)
	must(t, err)
	d, err := uio.NewDirectoryFromNode(ds, nd)
	must(t, err)
	// The link, not the child node: an empty file's identity CID is in no
	// mock blockstore.
	var found cid.Cid
	must(t, d.ForEachLink(context.Background(), func(l *ipld.Link) error {
		if l.Name == name {
			found = l.Cid
		}
		return nil
	}))
	if !found.Defined() {
		t.Fatalf("no entry %q in %s", name, dirCid)
	}
	return found
}

func TestLargeDirectoryIsHAMT(t *testing.T) {
	res, ds := roundTrip(t, encodeNAR(dir(ent("big", bigDir(10000)), ent("small", bigDir(10)))))
	_, fsn := getFSNode(t, ds, childCid(t, ds, res.Root, "big"))
	if fsn.Type() != ft.THAMTShard {
		t.Errorf("10k-entry directory has type %s, want HAMTShard", fsn.Type())
	}
	if fsn.Fanout() != 256 {
		t.Errorf("HAMT fanout %d, want 256", fsn.Fanout())
	}
	_, fsn = getFSNode(t, ds, childCid(t, ds, res.Root, "small"))
	if fsn.Type() != ft.TDirectory {
		t.Errorf("10-entry directory has type %s, want Directory", fsn.Type())
	}
}

func TestWriteOnlyDestination(t *testing.T) {
	nar := encodeNAR(dir(ent("big", bigDir(10000)), ent("x", exe(data3_5MiB))))
	ds := mdtest.Mock()
	res, err := Import(context.Background(), bytes.NewReader(nar), writeOnly{ds})
	must(t, err)
	checkResult(t, res, nar)
	if got := mustRender(t, res.Root, ds); !bytes.Equal(got, nar) {
		t.Fatal("round trip through a write-only destination differs")
	}
	if want := mustImport(t, nar, mdtest.Mock()); want != res {
		t.Errorf("write-only destination gave %v, want %v", res, want)
	}
}

func TestEachBlockWrittenOnce(t *testing.T) {
	// Identical files and boxo's HAMT code both re-add blocks; dst must
	// see each block once (a CAR stream would otherwise repeat them).
	same := randBytes(5, 2*MiB)
	nar := encodeNAR(dir(ent("big", bigDir(10000)), ent("x", file(same)), ent("y", file(same))))
	cd := &countingDAG{DAGService: mdtest.Mock()}
	mustImport(t, nar, cd)
	seen := map[cid.Cid]bool{}
	var count func(c cid.Cid)
	count = func(c cid.Cid) {
		if seen[c] {
			return
		}
		seen[c] = true
		nd, err := cd.Get(context.Background(), c)
		must(t, err)
		for _, l := range nd.Links() {
			count(l.Cid)
		}
	}
	count(mustImport(t, nar, mdtest.Mock()).Root)
	if cd.adds != len(seen) {
		t.Errorf("dst got %d blocks, the DAG has %d", cd.adds, len(seen))
	}
}

// Settings are duplicated as constants so that nobody can change them at run
// time; they must stay those of boxo's profile.
func TestProfileSettings(t *testing.T) {
	p := uio.UnixFS_v1_2025
	if p.CIDVersion != 1 || p.MhType != cidBuilder.MhType || !p.RawLeaves ||
		p.ChunkSize != chunkSize || p.FileDAGWidth != fileDAGWidth ||
		p.HAMTShardingSize != hamtShardingSize || p.HAMTShardWidth != hamtFanout ||
		p.HAMTSizeEstimation != hamtEstimation {
		t.Fatalf("boxo's UnixFS_v1_2025 %+v differs from ours", p)
	}
	if p.CidBuilder() != cid.Builder(cidBuilder) {
		t.Fatalf("CID builder %v, boxo's profile says %v", cidBuilder, p.CidBuilder())
	}
}

// boxoFile imports data as `ipfs add` does with the v1-2025 profile.
func boxoFile(t testing.TB, data []byte, ds ipld.DAGService) ipld.Node {
	t.Helper()
	p := uio.UnixFS_v1_2025
	params := helpers.DagBuilderParams{
		Maxlinks:   p.FileDAGWidth,
		RawLeaves:  p.RawLeaves,
		CidBuilder: p.CidBuilder(),
		Dagserv:    ds,
	}
	db, err := params.New(chunker.NewSizeSplitter(bytes.NewReader(data), p.ChunkSize))
	must(t, err)
	nd, err := balanced.Layout(db)
	must(t, err)
	return nd
}

func TestFileCIDs(t *testing.T) {
	sizes := []int{0, 1, 100, MiB - 1, MiB, MiB + 1, 3*MiB + MiB/2}
	for _, size := range sizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := data3_5MiB[:size]
			ds := mdtest.Mock()
			want := boxoFile(t, data, ds).Cid()
			if size == 0 {
				// The one departure from ipfs add: see EmptyFile.
				if want != EmptyRawSHA256 {
					t.Fatalf("ipfs add makes an empty file %s, want %s", want, EmptyRawSHA256)
				}
				want = EmptyFile
			}

			// As a root and inside a directory, the plain file is
			// exactly what ipfs add gives.
			root := mustImport(t, encodeNAR(file(data)), ds).Root
			if root != want {
				t.Errorf("file root %s, ipfs add gives %s", root, want)
			}
			d1 := mustImport(t, encodeNAR(dir(ent("f", file(data)))), ds).Root
			d2 := mustImport(t, encodeNAR(dir(ent("other", dir(ent("g", file(data)))), ent("z", link("x")))), ds).Root
			if c := childCid(t, ds, d1, "f"); c != want {
				t.Errorf("file in directory %s, want %s", c, want)
			}
			if c := childCid(t, ds, childCid(t, ds, d2, "other"), "g"); c != want {
				t.Errorf("same file in another tree %s, want %s (no dedup)", c, want)
			}
			if size == 0 && want.String() != "bafkqaaa" {
				t.Errorf("empty file is %s, want the identity CID bafkqaaa", want)
			}

			// The executable version is a dag-pb file with mode 0555
			// over the same leaves.
			xroot := mustImport(t, encodeNAR(exe(data)), ds).Root
			pn, fsn := getFSNode(t, ds, xroot)
			if fsn.Type() != ft.TFile || fsn.Mode().Perm() != 0o555 || !fsn.ModTime().IsZero() {
				t.Errorf("exec root: type %s mode %v mtime %v", fsn.Type(), fsn.Mode(), fsn.ModTime())
			}
			if fsn.FileSize() != uint64(size) {
				t.Errorf("exec root filesize %d, want %d", fsn.FileSize(), size)
			}
			var leaves []cid.Cid
			if want.Prefix().Codec == cid.Raw {
				leaves = []cid.Cid{want}
				if bs := fsn.BlockSizes(); len(bs) != 1 || bs[0] != uint64(size) {
					t.Errorf("exec wrapper blocksizes %v, want [%d]", bs, size)
				}
			} else {
				wpn, wfsn := getFSNode(t, ds, want)
				for _, l := range wpn.Links() {
					leaves = append(leaves, l.Cid)
				}
				if fmt.Sprint(wfsn.BlockSizes()) != fmt.Sprint(fsn.BlockSizes()) {
					t.Errorf("exec blocksizes %v, plain %v", fsn.BlockSizes(), wfsn.BlockSizes())
				}
			}
			var got []cid.Cid
			for _, l := range pn.Links() {
				got = append(got, l.Cid)
			}
			if fmt.Sprint(got) != fmt.Sprint(leaves) {
				t.Errorf("exec file links %v, plain file leaves %v", got, leaves)
			}
		})
	}
}

// A regular file is executable iff its UnixFS mode has any x bit, and other
// bits or an mtime do not matter.
func TestRenderModes(t *testing.T) {
	ds := mdtest.Mock()
	leaf := boxoFile(t, []byte("data"), ds)
	for _, tc := range []struct {
		mode os.FileMode
		exec bool
	}{{0, false}, {0o644, false}, {0o444, false}, {0o100, true}, {0o010, true}, {0o001, true}, {0o755, true}, {0o4755, true}} {
		fsn := ft.NewFSNode(ft.TFile)
		fsn.AddBlockSize(4)
		fsn.SetMode(tc.mode)
		fsn.SetModTime(fixedTime)
		nd := fileNode(t, fsn, leaf)
		must(t, ds.Add(context.Background(), nd))
		want := encodeNAR(tnode{typ: "regular", exec: tc.exec, data: []byte("data")})
		if got := mustRender(t, nd.Cid(), ds); !bytes.Equal(got, want) {
			t.Errorf("mode %v: wrong NAR", tc.mode)
		}
	}
}

func TestImportPath(t *testing.T) {
	root := t.TempDir()
	mk := func(p string, data []byte, mode os.FileMode) {
		p = filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, data, mode))
		must(t, os.Chmod(p, mode)) // umask
	}
	mk("bin/hello", []byte("#!/bin/sh\n"), 0o755)
	mk("bin/owner-only-x", []byte("x"), 0o700)
	mk("bin/group-x-only", []byte("not executable for nix"), 0o654)
	mk("lib/big", data3_5MiB, 0o644)
	mk("lib/big-exe", data3_5MiB, 0o555)
	mk("lib/empty", nil, 0o644)
	mk("share/ünïcødé-😀", []byte("u"), 0o444)
	mk("share/B", []byte("B"), 0o444)
	mk("share/a", []byte("a"), 0o444)
	must(t, os.MkdirAll(filepath.Join(root, "empty-dir"), 0o755))
	must(t, os.Symlink("hello", filepath.Join(root, "bin/link")))
	must(t, os.Symlink("/does/not/exist", filepath.Join(root, "dangling")))
	for i := 0; i < 3000; i++ {
		mk(fmt.Sprintf("many/%04d", i), []byte{byte(i)}, 0o644)
	}

	for _, p := range []string{root, filepath.Join(root, "bin/hello"), filepath.Join(root, "lib/big"), filepath.Join(root, "bin/link"), filepath.Join(root, "empty-dir")} {
		t.Run(strings.TrimPrefix(p, root), func(t *testing.T) {
			var b bytes.Buffer
			must(t, nar.DumpPath(&b, p))
			want := mustImport(t, b.Bytes(), mdtest.Mock())
			ds := mdtest.Mock()
			got, err := ImportPath(context.Background(), p, ds)
			must(t, err)
			if got != want {
				t.Errorf("ImportPath = %+v, Import(DumpPath) = %+v", got, want)
			}
			if r := mustRender(t, got.Root, ds); !bytes.Equal(r, b.Bytes()) {
				t.Error("rendered NAR differs from go-nix's dump")
			}
		})
	}
}

func TestImportPathRefusesSpecialFiles(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	if err := syscall.Mkfifo(filepath.Join(root, "sub", "fifo"), 0o644); err != nil {
		t.Fatal("mkfifo:", err)
	}
	_, err := ImportPath(context.Background(), root, mdtest.Mock())
	errContains(t, err, `"/sub/fifo"`, "unsupported file type")

	_, err = ImportPath(context.Background(), filepath.Join(root, "missing"), mdtest.Mock())
	errContains(t, err, "no such file")
}

func TestImportPathCancel(t *testing.T) {
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, "f"), data3_5MiB, 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ImportPath(ctx, root, mdtest.Mock()); err != context.Canceled {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func TestConcurrentImports(t *testing.T) {
	nars := [][]byte{encodeNAR(sampleTree()), encodeNAR(exe(data3_5MiB)), encodeNAR(bigDir(3000))}
	want := make([]Result, len(nars))
	for i, n := range nars {
		want[i] = mustImport(t, n, mdtest.Mock())
	}
	ds := mdtest.Mock()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			n := nars[i%len(nars)]
			res, err := Import(context.Background(), bytes.NewReader(n), ds)
			if err != nil {
				t.Error(err)
				return
			}
			if res != want[i%len(nars)] {
				t.Errorf("concurrent import %d: %+v, want %+v", i, res, want[i%len(nars)])
			}
			var b bytes.Buffer
			if _, err := Render(context.Background(), &b, res.Root, ds); err != nil {
				t.Error(err)
			} else if !bytes.Equal(b.Bytes(), n) {
				t.Errorf("concurrent render %d differs", i)
			}
		})
	}
	wg.Wait()
}

func TestMaxDepth(t *testing.T) {
	nest := func(levels int) tnode {
		n := file([]byte("bottom"))
		for i := 0; i < levels; i++ {
			n = dir(ent("d", n))
		}
		return n
	}
	// The file sits maxDepth levels below the root.
	roundTrip(t, encodeNAR(nest(maxDepth)))
	_, err := Import(context.Background(), bytes.NewReader(encodeNAR(nest(maxDepth+1))), mdtest.Mock())
	errContains(t, err, "nested deeper than 1024", "/d/d/d/")
}

// TestKuboCompatibility checks that a tree without executables gets the root
// CID kubo gives it with the same profile (`ipfs add -r --inline
// --inline-limit 0`: empty files are identity CIDs), HAMT directory included. It needs kubo's ipfs built into .bin/ (scripts/install-deps).
func TestKuboCompatibility(t *testing.T) {
	ipfs, err := filepath.Abs(filepath.Join("..", ".bin", "ipfs"))
	must(t, err)
	if _, err := os.Stat(ipfs); err != nil {
		t.Fatalf("kubo's ipfs is not built (run scripts/install-deps): %v", err)
	}
	root := filepath.Join(t.TempDir(), "tree")
	mk := func(p string, data []byte) {
		p = filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, data, 0o644))
	}
	mk("a/f", []byte("hello\n"))
	mk("a/empty", nil)
	mk("a/b/big", data3_5MiB)
	mk("one-chunk", data1MiB)
	mk("ünïcødé", []byte("u"))
	for i := 0; i < 10000; i++ {
		mk(fmt.Sprintf("big/file-%05d", i), []byte(fmt.Sprint(i)))
	}
	must(t, os.MkdirAll(filepath.Join(root, "empty-dir"), 0o755))
	must(t, os.Symlink("../f", filepath.Join(root, "a/b/link")))
	must(t, os.Symlink("/nowhere", filepath.Join(root, "dangling")))

	env := append(os.Environ(), "IPFS_PATH="+filepath.Join(t.TempDir(), "repo"))
	run := func(args ...string) string {
		cmd := exec.Command(ipfs, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ipfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "--profile=test,unixfs-v1-2025")
	// --inline --inline-limit 0 turns exactly the empty blocks into
	// identity CIDs, as Import does (see EmptyFile).
	want := run("add", "-r", "-Q", "--offline", "--only-hash", "--inline", "--inline-limit", "0", root)

	res, err := ImportPath(context.Background(), root, mdtest.Mock())
	must(t, err)
	if res.Root.String() != want {
		t.Errorf("root %s, kubo gives %s", res.Root, want)
	}
}

// copying hands out a fresh copy of every raw block, as a datastore does,
// and remembers which it handed out.
type copying struct {
	ipld.NodeGetter
	mu   sync.Mutex
	lent map[*byte]bool // true once given back
	err  error          // the first misuse seen
}

func (c *copying) Get(ctx context.Context, k cid.Cid) (ipld.Node, error) {
	nd, err := c.NodeGetter.Get(ctx, k)
	if err != nil || k.Prefix().Codec != cid.Raw {
		return nd, err
	}
	data := bytes.Clone(nd.RawData())
	blk, err := blocks.NewBlockWithCid(data, k)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(data) > 0 {
		c.lent[unsafe.SliceData(data)] = false
	}
	return dag.NewRawNodeWPrefix(blk.RawData(), k.Prefix())
}

// Recycle scribbles over data: a render that still used it would differ.
func (c *copying) Recycle(data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(data) == 0 {
		return // the empty block is known, never fetched
	}
	given, ok := c.lent[unsafe.SliceData(data)]
	switch {
	case !ok && c.err == nil:
		c.err = fmt.Errorf("recycled %d bytes that Get did not hand out", len(data))
	case given && c.err == nil:
		c.err = fmt.Errorf("recycled %d bytes twice", len(data))
	}
	c.lent[unsafe.SliceData(data)] = true
	for i := range data {
		data[i] = 0xaa
	}
}

// Render gives a Recycler each raw block it fetched once it has written
// it, and never touches it again.
func TestRenderRecycles(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			nar := encodeNAR(tc.tree)
			ds := mdtest.Mock()
			res := mustImport(t, nar, ds)
			src := &copying{NodeGetter: ds, lent: map[*byte]bool{}}
			if got := mustRender(t, res.Root, src); !bytes.Equal(got, nar) {
				t.Fatal("the NAR differs when the blocks written are scribbled over")
			}
			if src.err != nil {
				t.Fatal(src.err)
			}
			for _, given := range src.lent {
				if !given {
					t.Fatal("a raw block fetched was not given back")
				}
			}
		})
	}
}
