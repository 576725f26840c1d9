package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	basicnode "github.com/ipld/go-ipld-prime/node/basic"
	"github.com/ipld/go-ipld-prime/node/bindnode"
	mh "github.com/multiformats/go-multihash"
)

// putBlock stores data under a CID of the given codec, as a hostile node
// would serve it.
func putBlock(t *testing.T, dserv ipld.DAGService, b cid.Builder, data []byte) cid.Cid {
	t.Helper()
	c, err := b.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := dserv.Add(context.Background(), &versionNode{Block: blk}); err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	rawBuilder  = cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}
	cborBuilder = cid.V1Builder{Codec: cid.DagCBOR, MhType: mh.SHA2_256}
)

// putWire encodes w as a Version block without validating it.
func putWire(t *testing.T, dserv ipld.DAGService, w versionWire) cid.Cid {
	t.Helper()
	var buf bytes.Buffer
	if err := dagcbor.Encode(bindnode.Wrap(&w, versionType).Representation(), &buf); err != nil {
		t.Fatal(err)
	}
	return putBlock(t, dserv, cborBuilder, buf.Bytes())
}

// shardNode builds a HAMT shard by hand: bitfield bits (big-endian, as boxo
// writes it), links named as given.
func shardNode(t *testing.T, data []byte, links map[string]cid.Cid) *dag.ProtoNode {
	t.Helper()
	nd := dag.NodeWithData(data)
	if err := nd.SetCidBuilder(shardCIDBuilder); err != nil {
		t.Fatal(err)
	}
	for name, c := range links {
		if err := nd.AddRawLink(name, &ipld.Link{Cid: c}); err != nil {
			t.Fatal(err)
		}
	}
	return nd
}

func hamtData(t *testing.T, bits []byte, fanout, hash uint64) []byte {
	t.Helper()
	d, err := unixfs.HAMTShardData(bits, fanout, hash)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// bitsFor is the bitfield with the given slots set.
func bitsFor(slots ...int) []byte {
	bf := make([]byte, 32)
	for _, s := range slots {
		bf[31-s/8] |= 1 << (s % 8)
	}
	for len(bf) > 0 && bf[0] == 0 {
		bf = bf[1:]
	}
	return bf
}

func keyHash(key string) []byte {
	h, _ := mh.GetHasher(mh.MURMUR3X64_64)
	h.Write([]byte(key))
	return h.Sum(nil)
}

// keyWithPrefix finds a key whose hash starts with prefix.
func keyWithPrefix(prefix ...byte) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("p/k%d", i)
		if bytes.HasPrefix(keyHash(k), prefix) {
			return k
		}
	}
}

func addNode(t *testing.T, dserv ipld.DAGService, nd ipld.Node) cid.Cid {
	t.Helper()
	if err := dserv.Add(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

func TestLoadManifestRefuses(t *testing.T) {
	ctx := context.Background()
	dserv := mdtest.Mock()
	now := "2026-01-02T03:04:05Z"
	empty := addNode(t, dserv, EmptyManifest(dserv).root)
	okInfo := infoCID(1)
	good := putWire(t, dserv, versionWire{Entries: empty, Seq: 1, Time: now})
	if _, err := LoadManifest(ctx, dserv, good); err != nil {
		t.Fatalf("the well-formed control version: %v", err)
	}
	rawLeaf := putBlock(t, dserv, rawBuilder, []byte("leaf"))
	cborLeaf := putBlock(t, dserv, cborBuilder, []byte{0xa0})
	v0, _ := cid.V0Builder{}.Sum(EmptyManifest(dserv).root.RawData())
	missing, _ := shardCIDBuilder.Sum([]byte("missing"))
	wrongShape, _ := qp.BuildMap(basicnode.Prototype.Any, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "entries", qp.Int(1))
		qp.MapEntry(ma, "seq", qp.Int(1))
	})
	var wrongShapeBuf bytes.Buffer
	if err := dagcbor.Encode(wrongShape, &wrongShapeBuf); err != nil {
		t.Fatal(err)
	}
	extraField, _ := qp.BuildMap(basicnode.Prototype.Any, 6, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "entries", qp.Link(cidlink.Link{Cid: empty}))
		qp.MapEntry(ma, "seq", qp.Int(1))
		qp.MapEntry(ma, "count", qp.Int(0))
		qp.MapEntry(ma, "time", qp.String(now))
		qp.MapEntry(ma, "evil", qp.String("x"))
	})
	var extraBuf bytes.Buffer
	if err := dagcbor.Encode(extraField, &extraBuf); err != nil {
		t.Fatal(err)
	}

	// Root shards that must be refused.
	slot := 7
	k := keyWithPrefix(byte(slot))
	roots := map[string]ipld.Node{
		"UnixFS directory":              shardNode(t, unixfs.FolderPBData(), nil),
		"garbage UnixFS data":           shardNode(t, []byte{0xff, 0xff, 0xff}, nil),
		"fanout 16":                     shardNode(t, hamtData(t, nil, 16, hamt.HashMurmur3), nil),
		"other hash":                    shardNode(t, hamtData(t, nil, 256, 0x23), nil),
		"33-byte bitfield":              shardNode(t, hamtData(t, append([]byte{1}, make([]byte, 32)...), 256, hamt.HashMurmur3), nil),
		"leading zero bitfield":         shardNode(t, hamtData(t, append([]byte{0}, bitsFor(slot)...), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot] + k: okInfo}),
		"more slots than links":         shardNode(t, hamtData(t, bitsFor(slot, slot+1), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot] + k: okInfo}),
		"more links than slots":         shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot] + k: okInfo, slotPrefix[slot+1] + "x": okInfo}),
		"link in the wrong slot":        shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot+1] + k: okInfo}),
		"lower-case slot name":          shardNode(t, hamtData(t, bitsFor(0xab), 256, hamt.HashMurmur3), map[string]cid.Cid{"ab" + k: okInfo}),
		"sub-shard link to a raw block": shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot]: rawLeaf}),
		"key over 256 bytes":            shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot] + strings.Repeat("k", 300): okInfo}),
	}
	withStat, err := unixfs.HAMTShardDataWithStat(nil, 256, hamt.HashMurmur3, 0o755, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	roots["shard with mode and mtime"] = shardNode(t, withStat, nil)
	garbagePB := putBlock(t, dserv, shardCIDBuilder, []byte("not protobuf at all"))

	cases := map[string]cid.Cid{
		"version CID is raw":      putBlock(t, dserv, rawBuilder, []byte("x")),
		"garbage dag-cbor":        putBlock(t, dserv, cborBuilder, []byte{0xff, 0x00, 0x13}),
		"wrong shape":             putBlock(t, dserv, cborBuilder, wrongShapeBuf.Bytes()),
		"extra field":             putBlock(t, dserv, cborBuilder, extraBuf.Bytes()),
		"entries is raw":          putWire(t, dserv, versionWire{Entries: rawLeaf, Seq: 1, Time: now}),
		"entries is dag-cbor":     putWire(t, dserv, versionWire{Entries: cborLeaf, Seq: 1, Time: now}),
		"entries is CIDv0":        putWire(t, dserv, versionWire{Entries: v0, Seq: 1, Time: now}),
		"entries missing":         putWire(t, dserv, versionWire{Entries: missing, Seq: 1, Time: now}),
		"entries not dag-pb data": putWire(t, dserv, versionWire{Entries: garbagePB, Seq: 1, Time: now}),
		"negative seq":            putWire(t, dserv, versionWire{Entries: empty, Seq: -1, Time: now}),
		"zero seq":                putWire(t, dserv, versionWire{Entries: empty, Seq: 0, Time: now}),
		"negative count":          putWire(t, dserv, versionWire{Entries: empty, Seq: 1, Count: -1, Time: now}),
		"bad time":                putWire(t, dserv, versionWire{Entries: empty, Seq: 1, Time: "yesterday"}),
		"time not in UTC":         putWire(t, dserv, versionWire{Entries: empty, Seq: 1, Time: "2026-01-02T03:04:05+01:00"}),
		"prev is raw":             putWire(t, dserv, versionWire{Entries: empty, Prev: &rawLeaf, Seq: 2, Time: now}),
		"seq 1 with prev":         putWire(t, dserv, versionWire{Entries: empty, Prev: &good, Seq: 1, Time: now}),
		"over 64 KiB":             putWire(t, dserv, versionWire{Entries: empty, Seq: 1, Time: now + strings.Repeat(" ", 70<<10)}),
	}
	for name, nd := range roots {
		cases["root: "+name] = putWire(t, dserv, versionWire{Entries: addNode(t, dserv, nd), Seq: 1, Time: now})
	}
	for name, v := range cases {
		m, err := LoadManifest(ctx, dserv, v)
		if err == nil {
			t.Errorf("%s: LoadManifest accepted it (info %+v)", name, m.Info())
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	// History refuses a chain whose seq does not step down by one.
	jump := putWire(t, dserv, versionWire{Entries: empty, Prev: &good, Seq: 5, Time: now})
	if _, err := History(ctx, dserv, jump, 0); err == nil {
		t.Error("History accepted seq 5 after seq 1")
	}
}

// TestHostileSubShards: a well-formed root linking bad shards below it. The
// root loads; every operation that reaches the bad shard fails with an error
// that is not ErrNotFound, and none panics.
func TestHostileSubShards(t *testing.T) {
	ctx := context.Background()
	dserv := mdtest.Mock()
	now := "2026-01-02T03:04:05Z"
	const slot = 0x42
	k := keyWithPrefix(slot)
	sub := func(nd ipld.Node) cid.Cid { return addNode(t, dserv, nd) }
	h := keyHash(k)
	goodSub := func() ipld.Node {
		// A well-formed sub-shard holding k and one more key of the same slot.
		k2 := keyWithPrefix(slot, h[1]+1)
		return shardNode(t, hamtData(t, bitsFor(int(h[1]), int(h[1]+1)), 256, hamt.HashMurmur3), map[string]cid.Cid{
			slotPrefix[h[1]] + k: infoCID(1), slotPrefix[h[1]+1] + k2: infoCID(2),
		})
	}()
	missing, _ := shardCIDBuilder.Sum([]byte("missing"))

	bad := map[string]cid.Cid{
		"UnixFS directory":       sub(shardNode(t, unixfs.FolderPBData(), nil)),
		"garbage dag-pb":         putBlock(t, dserv, shardCIDBuilder, []byte("garbage")),
		"fanout 64":              sub(shardNode(t, hamtData(t, nil, 64, hamt.HashMurmur3), nil)),
		"bitfield without links": sub(shardNode(t, hamtData(t, bitsFor(int(h[1])), 256, hamt.HashMurmur3), nil)),
		"missing block":          missing,
		"value with a bad sub-shard below": sub(shardNode(t, hamtData(t, bitsFor(int(h[1])), 256, hamt.HashMurmur3), map[string]cid.Cid{
			slotPrefix[h[1]]: sub(shardNode(t, []byte{0xff}, nil)),
		})),
	}
	for name, c := range bad {
		root := shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot]: c})
		v := putWire(t, dserv, versionWire{Entries: addNode(t, dserv, root), Seq: 1, Time: now})
		m, err := LoadManifest(ctx, dserv, v)
		if err != nil {
			t.Fatalf("%s: the root is well-formed, load: %v", name, err)
		}
		if _, err := m.Get(ctx, k); err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: Get = %v, want a read error", name, err)
		}
		if err := m.Walk(ctx, func(string, cid.Cid) error { return nil }); err == nil {
			t.Errorf("%s: Walk succeeded", name)
		} else {
			t.Logf("%s: walk: %v", name, err)
		}
		if _, err := m.Update(ctx, map[string]cid.Cid{k: infoCID(9)}, nil, time.Now()); err == nil {
			t.Errorf("%s: Update (put) succeeded", name)
		}
		if _, err := m.Update(ctx, nil, []string{k}, time.Now()); err == nil {
			t.Errorf("%s: Update (delete) succeeded", name)
		}
		if _, err := DiffManifests(ctx, EmptyManifest(dserv), m); err == nil {
			t.Errorf("%s: diff from empty succeeded", name)
		}
		good := shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot]: goodSub.Cid()})
		sub(goodSub)
		gv := putWire(t, dserv, versionWire{Entries: addNode(t, dserv, good), Seq: 1, Time: now})
		gm, err := LoadManifest(ctx, dserv, gv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DiffManifests(ctx, gm, m); err == nil {
			t.Errorf("%s: diff from a good manifest succeeded", name)
		}
	}

	// Keys that are not where their hash puts them, and a sub-shard boxo
	// would have collapsed: lookups do not see them, walks refuse them.
	other := keyWithPrefix(slot + 1)
	for name, root := range map[string]ipld.Node{
		"misplaced key": shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[slot] + other: infoCID(1)}),
		"single-value sub-shard": shardNode(t, hamtData(t, bitsFor(slot), 256, hamt.HashMurmur3), map[string]cid.Cid{
			slotPrefix[slot]: sub(shardNode(t, hamtData(t, bitsFor(int(h[1])), 256, hamt.HashMurmur3), map[string]cid.Cid{slotPrefix[h[1]] + k: infoCID(1)})),
		}),
		"sub-shard reused in a wrong slot": shardNode(t, hamtData(t, bitsFor(slot, slot+1), 256, hamt.HashMurmur3), map[string]cid.Cid{
			slotPrefix[slot]: goodSub.Cid(), slotPrefix[slot+1]: goodSub.Cid(),
		}),
	} {
		v := putWire(t, dserv, versionWire{Entries: addNode(t, dserv, root), Seq: 1, Time: now})
		m, err := LoadManifest(ctx, dserv, v)
		if err != nil {
			t.Fatalf("%s: load: %v", name, err)
		}
		if err := m.Walk(ctx, func(string, cid.Cid) error { return nil }); err == nil {
			t.Errorf("%s: Walk succeeded", name)
		} else {
			t.Logf("%s: walk: %v", name, err)
		}
		if _, err := DiffManifests(ctx, EmptyManifest(dserv), m); err == nil {
			t.Errorf("%s: diff from empty succeeded", name)
		}
	}
}
