package carfile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"
)

// memStore is an in-memory blockstore keyed by whole CID.
type memStore struct {
	blocks map[cid.Cid]blocks.Block
	order  []cid.Cid // CIDs in put order, duplicates included
}

func newMemStore() *memStore { return &memStore{blocks: map[cid.Cid]blocks.Block{}} }

func (s *memStore) get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	b, ok := s.blocks[c]
	if !ok {
		return nil, format.ErrNotFound{Cid: c}
	}
	return b, nil
}

func (s *memStore) put(_ context.Context, b blocks.Block) error {
	s.blocks[b.Cid()] = b
	s.order = append(s.order, b.Cid())
	return nil
}

func (s *memStore) cids() []cid.Cid {
	var cs []cid.Cid
	for c := range s.blocks {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	return cs
}

// dagService lets boxo's UnixFS importer write into a memStore.
type dagService struct{ s *memStore }

func (d dagService) Get(ctx context.Context, c cid.Cid) (format.Node, error) {
	return nil, format.ErrNotFound{Cid: c}
}

func (d dagService) GetMany(context.Context, []cid.Cid) <-chan *format.NodeOption {
	ch := make(chan *format.NodeOption)
	close(ch)
	return ch
}

func (d dagService) Add(ctx context.Context, n format.Node) error { return d.s.put(ctx, n) }

func (d dagService) AddMany(ctx context.Context, ns []format.Node) error {
	for _, n := range ns {
		if err := d.s.put(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (d dagService) Remove(_ context.Context, c cid.Cid) error {
	delete(d.s.blocks, c)
	return nil
}

func (d dagService) RemoveMany(ctx context.Context, cs []cid.Cid) error {
	for _, c := range cs {
		delete(d.s.blocks, c)
	}
	return nil
}

var v1pb = cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// addFile imports data as a UnixFS file with raw leaves of chunk bytes and
// at most 4 links per node, so a few KiB already make a two-level tree.
func addFile(t testing.TB, s *memStore, data []byte, chunk int64) cid.Cid {
	t.Helper()
	params := helpers.DagBuilderParams{Dagserv: dagService{s}, RawLeaves: true, Maxlinks: 4, CidBuilder: v1pb}
	db, err := params.New(chunker.NewSizeSplitter(bytes.NewReader(data), chunk))
	if err != nil {
		t.Fatal(err)
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

type entry struct {
	name string
	c    cid.Cid
}

func addDir(t testing.TB, s *memStore, entries ...entry) cid.Cid {
	t.Helper()
	nd := merkledag.NodeWithData(ft.FolderPBData())
	if err := nd.SetCidBuilder(v1pb); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := nd.AddRawLink(e.name, &format.Link{Name: e.name, Cid: e.c}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.put(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

func rawCID(t testing.TB, data []byte) cid.Cid {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func identityCID(t testing.TB, codec uint64, data []byte) cid.Cid {
	t.Helper()
	m, err := mh.Sum(data, mh.IDENTITY, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(codec, m)
}

type fixture struct {
	src                    *memStore
	pi1, pi2, root1, root2 cid.Cid
	shared, tiny           cid.Cid
	closure                []cid.Cid // sorted; every non-identity block reachable from pi1
}

// newFixture builds two store paths the way nixipfs publishes them: pi1's
// PathInfo links its UnixFS root root1 and pi2's PathInfo; pi2 links root2.
// A multi-chunk file is shared by both roots and twice within root1, and
// root1 also links an identity block. One block in src is unreachable.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{src: newMemStore()}
	s := f.src
	f.shared = addFile(t, s, randBytes(1, 3<<10), 1<<10)
	f.tiny = identityCID(t, cid.Raw, []byte("tiny"))
	f.root1 = addDir(t, s,
		entry{"a", addFile(t, s, randBytes(2, 100), 1<<10)},
		entry{"b", addFile(t, s, randBytes(3, 20<<10), 1<<10)},
		entry{"shared", f.shared},
		entry{"shared-again", f.shared},
		entry{"tiny", f.tiny},
	)
	f.root2 = addDir(t, s,
		entry{"c", addFile(t, s, randBytes(4, 5<<10), 1<<10)},
		entry{"shared", f.shared},
	)
	f.pi2 = f.pathInfo(t, "/nix/store/0c7dyq1w2sxr5szq3n5ldx0a8ar4q6zk-dep", f.root2)
	f.pi1 = f.pathInfo(t, "/nix/store/45ciyxrcskr7rjzs00znrhw8xn3ixp1k-top", f.root1, f.pi2)
	f.closure = s.cids()
	unrelated := blocks.NewBlock([]byte("not reachable"))
	if err := s.put(ctx, unrelated); err != nil {
		t.Fatal(err)
	}
	return f
}

// pathInfo stores a dag-cbor block shaped like a manifests.PathInfo: a map
// whose "root" links the UnixFS DAG and whose "references" list links the
// PathInfo blocks of the references (plus a self-reference without a link).
// It is built here rather than with manifests so the test depends only on
// the shape.
func (f *fixture) pathInfo(t testing.TB, storePath string, root cid.Cid, refs ...cid.Cid) cid.Cid {
	t.Helper()
	nb := basicnode.Prototype.Map.NewBuilder()
	ma, err := nb.BeginMap(4)
	must(t, err)
	must(t, ma.AssembleKey().AssignString("storePath"))
	must(t, ma.AssembleValue().AssignString(storePath))
	must(t, ma.AssembleKey().AssignString("narHash"))
	must(t, ma.AssembleValue().AssignBytes(bytes.Repeat([]byte{1}, 32)))
	must(t, ma.AssembleKey().AssignString("root"))
	must(t, ma.AssembleValue().AssignLink(cidlink.Link{Cid: root}))
	must(t, ma.AssembleKey().AssignString("references"))
	la, err := ma.AssembleValue().BeginList(int64(len(refs) + 1))
	must(t, err)
	self, err := la.AssembleValue().BeginMap(1)
	must(t, err)
	must(t, self.AssembleKey().AssignString("name"))
	must(t, self.AssembleValue().AssignString(storePath[len("/nix/store/"):]))
	must(t, self.Finish())
	for _, r := range refs {
		ref, err := la.AssembleValue().BeginMap(2)
		must(t, err)
		must(t, ref.AssembleKey().AssignString("name"))
		must(t, ref.AssembleValue().AssignString("ref"))
		must(t, ref.AssembleKey().AssignString("info"))
		must(t, ref.AssembleValue().AssignLink(cidlink.Link{Cid: r}))
		must(t, ref.Finish())
	}
	must(t, la.Finish())
	must(t, ma.Finish())
	var buf bytes.Buffer
	must(t, dagcbor.Encode(nb.Build(), &buf))
	c, err := cid.V1Builder{Codec: cid.DagCBOR, MhType: mh.SHA2_256}.Sum(buf.Bytes())
	must(t, err)
	b, err := blocks.NewBlockWithCid(buf.Bytes(), c)
	must(t, err)
	must(t, f.src.put(context.Background(), b))
	return c
}

func (f *fixture) export(t testing.TB, roots ...cid.Cid) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := Export(context.Background(), &buf, f.src.get, roots)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st
}

// strictPut is a put that fails the test if Import hands it a block that
// does not hash to its CID, is too big, or uses an untrusted hash.
func strictPut(t testing.TB, s *memStore) func(context.Context, blocks.Block) error {
	return func(ctx context.Context, b blocks.Block) error {
		c, data := b.Cid(), b.RawData()
		if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
			t.Fatalf("put got block %s with a refused CID: %v", c, err)
		}
		if len(data) > maxBlockSize {
			t.Fatalf("put got block %s of %d bytes", c, len(data))
		}
		if got, err := c.Prefix().Sum(data); err != nil || !got.Equals(c) {
			t.Fatalf("put got unverified block %s (hashes to %s, %v)", c, got, err)
		}
		return s.put(ctx, b)
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	car, st := f.export(t, f.pi1)

	again, _ := f.export(t, f.pi1)
	if !bytes.Equal(car, again) {
		t.Fatal("two exports of the same closure differ")
	}

	dst := newMemStore()
	roots, ist, err := Import(ctx, bytes.NewReader(car), strictPut(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(roots, []cid.Cid{f.pi1}) {
		t.Fatalf("roots %v, want [%s]", roots, f.pi1)
	}
	if !slices.Equal(dst.cids(), f.closure) {
		t.Fatalf("imported %d blocks, want the %d of the closure", len(dst.blocks), len(f.closure))
	}
	if len(dst.order) != len(dst.blocks) {
		t.Fatalf("CAR holds %d sections for %d distinct blocks", len(dst.order), len(dst.blocks))
	}
	var want Stats
	for _, c := range f.closure {
		want.Blocks++
		want.Bytes += int64(len(f.src.blocks[c].RawData()))
	}
	if st != want || ist != want {
		t.Fatalf("export stats %+v, import stats %+v, want %+v", st, ist, want)
	}
	if _, ok := dst.blocks[f.tiny]; ok {
		t.Fatal("identity block was written to the CAR")
	}
	if err := Complete(ctx, dst.get, roots); err != nil {
		t.Fatal(err)
	}

	// Depth-first pre-order: the root comes first, every other block after
	// one that links it, and pi1's UnixFS DAG (its "root" field sorts before
	// "references") before pi2.
	pos := map[cid.Cid]int{}
	for i, c := range dst.order {
		pos[c] = i
	}
	if dst.order[0] != f.pi1 {
		t.Fatalf("first block %s, want the root %s", dst.order[0], f.pi1)
	}
	for i, c := range dst.order[1:] {
		parentBefore := false
		for _, p := range dst.order[:i+1] {
			links, err := appendLinks(nil, p, dst.blocks[p].RawData())
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(links, c) {
				parentBefore = true
				break
			}
		}
		if !parentBefore {
			t.Fatalf("block %s precedes every block linking it", c)
		}
	}
	sub, _ := f.export(t, f.root1)
	sub1 := newMemStore()
	if _, _, err := Import(ctx, bytes.NewReader(sub), sub1.put); err != nil {
		t.Fatal(err)
	}
	for c := range sub1.blocks {
		if pos[c] > pos[f.pi2] {
			t.Fatalf("block %s of root1 comes after pi2", c)
		}
	}
}

func TestRoundTripMultipleRoots(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	car, _ := f.export(t, f.root2, f.pi1)
	dst := newMemStore()
	roots, _, err := Import(ctx, bytes.NewReader(car), strictPut(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(roots, []cid.Cid{f.root2, f.pi1}) {
		t.Fatalf("roots %v", roots)
	}
	if !slices.Equal(dst.cids(), f.closure) || len(dst.order) != len(f.closure) {
		t.Fatalf("imported %d sections, %d blocks; want %d", len(dst.order), len(dst.blocks), len(f.closure))
	}
	if err := Complete(ctx, dst.get, roots); err != nil {
		t.Fatal(err)
	}
}

func TestImportCARv2(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	v1, _ := f.export(t, f.pi1)
	var v2 bytes.Buffer
	if err := carv2.WrapV1(bytes.NewReader(v1), &v2); err != nil {
		t.Fatal(err)
	}
	car := v2.Bytes()
	dst := newMemStore()
	roots, _, err := Import(ctx, bytes.NewReader(car), strictPut(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(roots, []cid.Cid{f.pi1}) || !slices.Equal(dst.cids(), f.closure) {
		t.Fatalf("CARv2 import: roots %v, %d blocks", roots, len(dst.blocks))
	}

	// The CARv2 header gives the payload's length, so any cut inside it is
	// detected, even one at a block boundary; the index after it is unused.
	var h carv2.Header
	if _, err := h.ReadFrom(bytes.NewReader(car[carv2.PragmaSize:])); err != nil {
		t.Fatal(err)
	}
	end := int(h.DataOffset + h.DataSize)
	if end >= len(car) {
		t.Fatalf("expected an index after the payload (end %d, len %d)", end, len(car))
	}
	for cut := range len(car) {
		_, _, err := Import(ctx, bytes.NewReader(car[:cut]), strictPut(t, newMemStore()))
		if cut < end && err == nil {
			t.Fatalf("CARv2 cut at %d of payload end %d imported", cut, end)
		}
		if cut >= end && err != nil {
			t.Fatalf("CARv2 cut in the index at %d: %v", cut, err)
		}
	}
}

// sectionEnds returns the offsets at which the CARv1 header and each section end.
func sectionEnds(t *testing.T, car []byte) []int {
	t.Helper()
	var ends []int
	for off := 0; off < len(car); {
		l, n := binary.Uvarint(car[off:])
		if n <= 0 {
			t.Fatalf("bad varint at %d", off)
		}
		off += n + int(l)
		ends = append(ends, off)
	}
	return ends
}

func TestImportTruncated(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	car, _ := f.export(t, f.pi1)
	ends := sectionEnds(t, car)
	for cut := range len(car) {
		dst := newMemStore()
		roots, _, err := Import(ctx, bytes.NewReader(car[:cut]), strictPut(t, dst))
		if !slices.Contains(ends, cut) {
			if err == nil {
				t.Fatalf("cut at %d: imported", cut)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("cut at %d: %v, want an EOF error", cut, err)
			}
			continue
		}
		// A CARv1 cut between sections is a valid, shorter CAR: Import
		// cannot tell, which is why callers must run Complete.
		if err != nil {
			t.Fatalf("cut at section end %d: %v", cut, err)
		}
		if err := Complete(ctx, dst.get, roots); !errors.Is(err, format.ErrNotFound{}) {
			t.Fatalf("cut at section end %d: Complete returned %v, want not found", cut, err)
		}
	}
}

// header encodes a CARv1 header the way go-car does; roots nil omits the field.
func header(t testing.TB, version int64, roots []cid.Cid) []byte {
	t.Helper()
	nb := basicnode.Prototype.Map.NewBuilder()
	ma, err := nb.BeginMap(2)
	if err != nil {
		t.Fatal(err)
	}
	if roots != nil {
		must(t, ma.AssembleKey().AssignString("roots"))
		la, err := ma.AssembleValue().BeginList(int64(len(roots)))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range roots {
			must(t, la.AssembleValue().AssignLink(cidlink.Link{Cid: r}))
		}
		must(t, la.Finish())
	}
	must(t, ma.AssembleKey().AssignString("version"))
	must(t, ma.AssembleValue().AssignInt(version))
	must(t, ma.Finish())
	var buf bytes.Buffer
	must(t, dagcbor.Encode(nb.Build(), &buf))
	return frame(buf.Bytes())
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// frame prefixes the concatenation of parts with its varint length.
func frame(parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

func section(c cid.Cid, data []byte) []byte { return frame(c.Bytes(), data) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestImportHostile(t *testing.T) {
	f := newFixture(t)
	good, _ := f.export(t, f.pi1)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1

	data := []byte("some block")
	c := rawCID(t, data)
	hdr := header(t, 1, []cid.Cid{c})

	withHash := func(code uint64, digest []byte) cid.Cid {
		m, err := mh.Encode(digest, code)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, m)
	}
	sha1CID := func() cid.Cid {
		m, err := mh.Sum(data, mh.SHA1, -1)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, m)
	}()
	shortCID := func() cid.Cid {
		m, err := mh.Sum(data, mh.SHA2_256, 4)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, m)
	}()
	big := randBytes(9, maxBlockSize+1)
	bigCID := rawCID(t, big)
	id128 := identityCID(t, cid.Raw, bytes.Repeat([]byte{7}, 128))
	id129 := identityCID(t, cid.Raw, bytes.Repeat([]byte{7}, 129))

	// A CARv2 whose header puts the payload before the header ends.
	v2 := func(dataOffset, dataSize uint64) []byte {
		h := make([]byte, carv2.HeaderSize)
		binary.LittleEndian.PutUint64(h[16:], dataOffset)
		binary.LittleEndian.PutUint64(h[24:], dataSize)
		return cat(carv2.Pragma, h)
	}

	for _, tc := range []struct {
		name string
		car  []byte
		want string // in the error
	}{
		{"empty input", nil, "read header"},
		{"flipped byte in a block", flipped, "hashes to"},
		{"garbage header", frame([]byte("not cbor at all")), "invalid header"},
		{"header is not a map", frame([]byte{0x01}), "invalid header"},
		{"header version 3", cat(header(t, 3, []cid.Cid{c}), section(c, data)), "invalid car version"},
		{"header length past the input", hdr[:3], "read header"},
		{"oversize header length", binary.AppendUvarint(nil, 1<<40), "header data"},
		{"no roots", cat(header(t, 1, []cid.Cid{}), section(c, data)), "no roots"},
		{"roots missing", cat(header(t, 1, nil), section(c, data)), "no roots"},
		{"duplicate roots", cat(header(t, 1, []cid.Cid{c, c}), section(c, data)), "duplicate root"},
		{"root with untrusted hash", cat(header(t, 1, []cid.Cid{sha1CID}), section(c, data)), "insecure"},
		{"identity root too large", cat(header(t, 1, []cid.Cid{id129}), section(c, data)), "too large"},
		{"oversize section length", cat(hdr, binary.AppendUvarint(nil, 1<<40)), "beyond allowable maximum"},
		{"section just over the limit", cat(hdr, binary.AppendUvarint(nil, maxSectionSize+1)), "beyond allowable maximum"},
		{"section length past the input", cat(hdr, binary.AppendUvarint(nil, 1000), c.Bytes()), "unexpected EOF"},
		{"zero-length section", cat(hdr, section(c, data), []byte{0}), "section 2"},
		{"varint overflow", cat(hdr, bytes.Repeat([]byte{0xff}, 10)), "varint"},
		{"garbage CID", cat(hdr, frame([]byte{0x01, 0x55, 0x12, 0x20}, data)), "section 1"},
		{"block over 2 MiB", cat(header(t, 1, []cid.Cid{bigCID}), section(bigCID, big)), "block limit"},
		{"identity CID too large", cat(hdr, section(id129, bytes.Repeat([]byte{7}, 129))), "digest too large"},
		{"identity CID not matching its data", cat(hdr, section(id128, data)), "block " + id128.String()},
		{"unknown hash function", cat(hdr, section(withHash(0x3f0000, make([]byte, 32)), data)), "insecure"},
		{"murmur3", cat(hdr, section(withHash(mh.MURMUR3X64_64, make([]byte, 8)), data)), "insecure"},
		{"sha1", cat(hdr, section(sha1CID, data)), "insecure"},
		{"truncated digest", cat(hdr, section(shortCID, data)), "digest too small"},
		{"wrong block for a good CID", cat(hdr, section(c, []byte("other data"))), "hashes to"},
		{"CARv2 payload inside its header", v2(10, 100), "invalid data payload offset"},
		{"CARv2 empty payload", v2(51, 0), "invalid data payload size"},
		{"CARv2 payload past 2^63", v2(1<<62, 1<<62+1), "past 2^63"},
		{"CARv2 payload past the input", cat(v2(51, 1000), hdr, section(c, data)), "unexpected EOF"},
		{"CARv2 truncated header", v2(51, 100)[:30], "unexpected EOF"},
		{"CARv2 inner version 2", cat(v2(51, 100), header(t, 2, []cid.Cid{c})), "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots, _, err := Import(context.Background(), bytes.NewReader(tc.car), strictPut(t, newMemStore()))
			if err == nil {
				t.Fatal("imported")
			}
			t.Log(err)
			if roots != nil {
				t.Errorf("returned roots %v with an error", roots)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "import CAR: ") {
				t.Fatalf("error %q does not say what failed", err)
			}
		})
	}

	// The boundary cases are accepted: a 2 MiB block and a 128-byte
	// identity CID.
	max := randBytes(10, maxBlockSize)
	maxCID := rawCID(t, max)
	for _, car := range [][]byte{
		cat(header(t, 1, []cid.Cid{maxCID}), section(maxCID, max)),
		cat(header(t, 1, []cid.Cid{id128}), section(id128, bytes.Repeat([]byte{7}, 128))),
	} {
		if _, _, err := Import(context.Background(), bytes.NewReader(car), strictPut(t, newMemStore())); err != nil {
			t.Fatal(err)
		}
	}
}

// allocated returns how many bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestImportDoesNotAllocateLengthPrefix(t *testing.T) {
	c := rawCID(t, []byte("x"))
	for _, car := range [][]byte{
		binary.AppendUvarint(nil, 1<<40),                                             // header
		cat(header(t, 1, []cid.Cid{c}), binary.AppendUvarint(nil, 1<<40)),            // section
		cat(header(t, 1, []cid.Cid{c}), binary.AppendUvarint(nil, 1<<62), []byte{1}), // section with a byte of it
	} {
		var err error
		n := allocated(func() {
			_, _, err = Import(context.Background(), bytes.NewReader(car), strictPut(t, newMemStore()))
		})
		if err == nil {
			t.Fatal("imported")
		}
		if n > 1<<20 {
			t.Fatalf("refusing a huge length prefix allocated %d bytes", n)
		}
	}
}

// TestImportStreams feeds Import a 256 MiB CAR through a pipe and checks the
// heap stays far below that.
func TestImportStreams(t *testing.T) {
	const blockSize, n = 1 << 20, 256
	var bs [][]byte
	var cs []cid.Cid
	for i := range 4 {
		b := randBytes(uint64(100+i), blockSize)
		bs = append(bs, b)
		cs = append(cs, rawCID(t, b))
	}
	hdr := header(t, 1, cs[:1])
	pr, pw := io.Pipe()
	go func() {
		_, err := pw.Write(hdr)
		for i := 0; i < n && err == nil; i++ {
			_, err = pw.Write(section(cs[i%4], bs[i%4]))
		}
		pw.CloseWithError(err)
	}()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	_, st, err := Import(context.Background(), pr, func(context.Context, blocks.Block) error {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != n || st.Bytes != n*blockSize {
		t.Fatalf("stats %+v", st)
	}
	if peak-base > 64<<20 {
		t.Fatalf("heap grew by %d MiB importing a %d MiB CAR", (peak-base)>>20, n*blockSize>>20)
	}
}

func TestImportStopsOnError(t *testing.T) {
	f := newFixture(t)
	car, _ := f.export(t, f.pi1)

	boom := errors.New("disk full")
	calls := 0
	_, st, err := Import(context.Background(), bytes.NewReader(car), func(ctx context.Context, b blocks.Block) error {
		calls++
		if calls == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls != 3 || st.Blocks != 2 {
		t.Fatalf("err %v after %d puts, stats %+v", err, calls, st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	_, _, err = Import(ctx, bytes.NewReader(car), func(ctx context.Context, b blocks.Block) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d puts, want context.Canceled after 1", err, calls)
	}
}

func TestExportRefuses(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	s := f.src

	dagJSON := blocks.NewBlock([]byte(`{"a":1}`)) // raw CID; re-key it as dag-json
	jsonCID := cid.NewCidV1(cid.DagJSON, dagJSON.Cid().Hash())
	jsonBlock, err := blocks.NewBlockWithCid(dagJSON.RawData(), jsonCID)
	must(t, err)
	must(t, s.put(ctx, jsonBlock))
	jsonDir := addDir(t, s, entry{"x", f.shared}, entry{"y", jsonCID})

	missing := rawCID(t, []byte("never stored"))
	holeDir := addDir(t, s, entry{"gone", missing})

	badPB := blocks.NewBlock([]byte{0xff, 0xff})
	badPBCID := cid.NewCidV1(cid.DagProtobuf, badPB.Cid().Hash())
	b, err := blocks.NewBlockWithCid(badPB.RawData(), badPBCID)
	must(t, err)
	must(t, s.put(ctx, b))

	badCBOR := cid.NewCidV1(cid.DagCBOR, badPB.Cid().Hash())
	b, err = blocks.NewBlockWithCid(badPB.RawData(), badCBOR)
	must(t, err)
	must(t, s.put(ctx, b))

	big := randBytes(11, maxBlockSize+1)
	bigCID := rawCID(t, big)
	b, err = blocks.NewBlockWithCid(big, bigCID)
	must(t, err)
	must(t, s.put(ctx, b))

	for _, tc := range []struct {
		name  string
		roots []cid.Cid
		want  string
	}{
		{"no roots", nil, "no roots"},
		{"duplicate roots", []cid.Cid{f.pi1, f.pi1}, "duplicate root " + f.pi1.String()},
		{"unknown codec root", []cid.Cid{jsonCID}, "root " + jsonCID.String() + ": unsupported codec dag-json"},
		{"unknown codec below", []cid.Cid{jsonDir}, "block " + jsonCID.String() + " (linked from " + jsonDir.String() + "): unsupported codec dag-json"},
		{"missing block", []cid.Cid{holeDir}, "block " + missing.String()},
		{"undecodable dag-pb", []cid.Cid{badPBCID}, "decode dag-pb"},
		{"undecodable dag-cbor", []cid.Cid{badCBOR}, "decode dag-cbor"},
		{"block over 2 MiB", []cid.Cid{bigCID}, "block limit"},
		{"untrusted root hash", []cid.Cid{cid.NewCidV1(cid.Raw, mustSum(t, []byte("x"), mh.SHA1))}, "insecure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Export(ctx, io.Discard, s.get, tc.roots)
			if err == nil {
				t.Fatal("exported")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "export CAR: ") {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func mustSum(t testing.TB, data []byte, code uint64) mh.Multihash {
	t.Helper()
	m, err := mh.Sum(data, code, -1)
	must(t, err)
	return m
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after < len(p) {
		return 0, errors.New("connection reset")
	}
	w.after -= len(p)
	return len(p), nil
}

func TestExportWriteError(t *testing.T) {
	f := newFixture(t)
	car, _ := f.export(t, f.pi1)
	for _, after := range []int{0, 100, len(car) / 2, len(car) - 1} {
		_, err := Export(context.Background(), &failingWriter{after: after}, f.src.get, []cid.Cid{f.pi1})
		if err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("writer failing after %d bytes: %v", after, err)
		}
	}
}

func TestCompleteReportsMissing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	car, _ := f.export(t, f.pi1)
	full := newMemStore()
	if _, _, err := Import(ctx, bytes.NewReader(car), full.put); err != nil {
		t.Fatal(err)
	}
	for _, gone := range f.closure {
		t.Run(gone.String(), func(t *testing.T) {
			s := &memStore{blocks: maps.Clone(full.blocks)}
			delete(s.blocks, gone)
			err := Complete(ctx, s.get, []cid.Cid{f.pi1})
			if !errors.Is(err, format.ErrNotFound{}) {
				t.Fatalf("Complete returned %v, want not found", err)
			}
			if !strings.Contains(err.Error(), "block "+gone.String()) && !strings.Contains(err.Error(), "root "+gone.String()) {
				t.Fatalf("error %q does not name %s", err, gone)
			}
		})
	}
	// The identity block is never fetched: it is in its CID.
	if err := Complete(ctx, full.get, []cid.Cid{f.tiny, f.pi1}); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if err := Complete(ctx2, full.get, []cid.Cid{f.pi1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Complete with a cancelled context: %v", err)
	}
}

// TestIdentityLinks checks that links inside an identity block are followed
// even though the block itself is not written.
func TestIdentityLinks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	nb := basicnode.Prototype.List.NewBuilder()
	la, err := nb.BeginList(1)
	must(t, err)
	must(t, la.AssembleValue().AssignLink(cidlink.Link{Cid: f.shared}))
	must(t, la.Finish())
	var buf bytes.Buffer
	must(t, dagcbor.Encode(nb.Build(), &buf))
	root := identityCID(t, cid.DagCBOR, buf.Bytes())

	var car bytes.Buffer
	st, err := Export(ctx, &car, f.src.get, []cid.Cid{root})
	must(t, err)
	dst := newMemStore()
	roots, _, err := Import(ctx, &car, strictPut(t, dst))
	must(t, err)
	if _, ok := dst.blocks[f.shared]; !ok || st.Blocks != len(dst.blocks) {
		t.Fatalf("identity root's links not exported: %d blocks", len(dst.blocks))
	}
	must(t, Complete(ctx, dst.get, roots))
}
