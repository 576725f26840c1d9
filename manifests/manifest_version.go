package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	ipldprime "github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/node/bindnode"
	"github.com/ipld/go-ipld-prime/schema"
)

// VersionSchema is the IPLD schema of a manifest Version block (dag-cbor).
//
// entries: the root of the HAMT (UnixFS HAMT shard, dag-pb, fanout 256)
// mapping keys to PathInfo CIDs. prev: the version this one replaced, absent
// in the first; seq counts versions from 1 along the prev chain, so a reader
// can tell newer from older without walking it. count: the number of store
// paths ("p/" keys). time: when the version was made, RFC 3339 in UTC.
const VersionSchema = `
type Version struct {
	entries Link
	prev optional Link
	seq Int
	count Int
	time String
}
`

// Version is one manifest version as recorded in its block.
type Version struct {
	Entries cid.Cid // HAMT root
	Prev    cid.Cid // previous version; cid.Undef in the first
	Seq     int64   // 1 for the first version, prev's + 1 after
	Count   int64   // store paths in the manifest
	Time    string  // RFC 3339 in UTC, to the second; "" for the empty manifest
}

// VersionRecord is a Version with the CID of its block.
type VersionRecord struct {
	CID cid.Cid
	Version
}

// versionWire is the Go shape bindnode maps onto VersionSchema.
type versionWire struct {
	Entries cid.Cid
	Prev    *cid.Cid
	Seq     int64
	Count   int64
	Time    string
}

var versionType schema.Type

func init() {
	ts, err := ipldprime.LoadSchemaBytes([]byte(VersionSchema))
	if err != nil {
		panic(fmt.Errorf("Version schema: %w", err))
	}
	versionType = ts.TypeByName("Version")
	// Fail at start-up, not at first use, if the Go type drifts from the schema.
	bindnode.Prototype((*versionWire)(nil), versionType)
}

// maxVersionSize bounds a Version block: ours are about 120 bytes, and one
// from another node is read before anything else is known about it.
const maxVersionSize = 64 << 10

func (v *Version) validate() error {
	if !v.Entries.Defined() {
		return errors.New("no entries link")
	}
	if err := checkShardCID(v.Entries); err != nil {
		return fmt.Errorf("entries: %w", err)
	}
	if v.Seq < 1 {
		return fmt.Errorf("seq %d is not positive", v.Seq)
	}
	if v.Count < 0 {
		return fmt.Errorf("count %d is negative", v.Count)
	}
	t, err := time.Parse(time.RFC3339, v.Time)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	if _, offset := t.Zone(); offset != 0 {
		return fmt.Errorf("time %q is not in UTC", v.Time)
	}
	if v.Prev.Defined() {
		if v.Prev.Type() != cid.DagCBOR {
			return fmt.Errorf("prev %s is not dag-cbor", v.Prev)
		}
		if v.Seq == 1 {
			return errors.New("seq 1 with a prev link")
		}
	}
	return nil
}

// versionBlock encodes v as a dag-cbor node ready for a DAGService.
func versionBlock(v Version) (ipld.Node, error) {
	if err := v.validate(); err != nil {
		return nil, fmt.Errorf("encode manifest version: %w", err)
	}
	w := versionWire{
		Entries: v.Entries,
		Seq:     v.Seq,
		Count:   v.Count,
		Time:    v.Time,
	}
	if v.Prev.Defined() {
		prev := v.Prev
		w.Prev = &prev
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(bindnode.Wrap(&w, versionType).Representation(), &buf); err != nil {
		return nil, fmt.Errorf("encode manifest version: %w", err)
	}
	c, err := cidBuilder.Sum(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("encode manifest version: %w", err)
	}
	blk, err := blocks.NewBlockWithCid(buf.Bytes(), c)
	if err != nil {
		return nil, fmt.Errorf("encode manifest version: %w", err)
	}
	links := []*ipld.Link{{Name: "entries", Cid: v.Entries}}
	if v.Prev.Defined() {
		links = append(links, &ipld.Link{Name: "prev", Cid: v.Prev})
	}
	return &versionNode{Block: blk, links: links}, nil
}

// decodeVersion parses and validates a Version block's bytes.
func decodeVersion(data []byte) (Version, error) {
	if len(data) > maxVersionSize {
		return Version{}, fmt.Errorf("%d bytes is over the %d limit", len(data), maxVersionSize)
	}
	nb := bindnode.Prototype((*versionWire)(nil), versionType).Representation().NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(data)); err != nil {
		return Version{}, err
	}
	w := bindnode.Unwrap(nb.Build()).(*versionWire)
	v := Version{Entries: w.Entries, Seq: w.Seq, Count: w.Count, Time: w.Time}
	if w.Prev != nil {
		if !w.Prev.Defined() {
			return Version{}, errors.New("prev link is empty")
		}
		v.Prev = *w.Prev
	}
	if err := v.validate(); err != nil {
		return Version{}, err
	}
	return v, nil
}

// loadVersion fetches and decodes the Version block c.
func loadVersion(ctx context.Context, ng ipld.NodeGetter, c cid.Cid) (Version, error) {
	if c.Type() != cid.DagCBOR {
		return Version{}, fmt.Errorf("load manifest version %s: not a dag-cbor CID", c)
	}
	nd, err := ng.Get(ctx, c)
	if err != nil {
		return Version{}, fmt.Errorf("load manifest version %s: %w", c, err)
	}
	v, err := decodeVersion(nd.RawData())
	if err != nil {
		return Version{}, fmt.Errorf("load manifest version %s: %w", c, err)
	}
	return v, nil
}

// History follows prev links from version, newest first, returning at most
// limit versions (all when limit <= 0). Each step must lower seq by one, so
// a forged chain cannot make it loop or skip.
func History(ctx context.Context, dserv ipld.NodeGetter, version cid.Cid, limit int) ([]VersionRecord, error) {
	var out []VersionRecord
	for c := version; c.Defined(); {
		v, err := loadVersion(ctx, dserv, c)
		if err != nil {
			return out, fmt.Errorf("manifest history: %w", err)
		}
		if n := len(out); n > 0 && v.Seq != out[n-1].Seq-1 {
			return out, fmt.Errorf("manifest history: version %s has seq %d after seq %d", c, v.Seq, out[n-1].Seq)
		}
		out = append(out, VersionRecord{CID: c, Version: v})
		if limit > 0 && len(out) >= limit {
			break
		}
		c = v.Prev
	}
	return out, nil
}

// versionNode carries an encoded Version through ipld.DAGService.Add, which
// takes nodes, not blocks. Its links are the ones the block holds, so DAG
// walkers that ask the node see what the block links.
type versionNode struct {
	blocks.Block
	links []*ipld.Link
}

var _ ipld.Node = (*versionNode)(nil)

func (n *versionNode) Resolve(path []string) (any, []string, error) {
	if len(path) == 0 {
		return n, nil, nil
	}
	for _, l := range n.links {
		if l.Name == path[0] {
			return l, path[1:], nil
		}
	}
	return nil, nil, fmt.Errorf("no link %q in a manifest version", path[0])
}

func (n *versionNode) Tree(path string, depth int) []string {
	if path != "" || depth == 0 {
		return nil
	}
	names := make([]string, len(n.links))
	for i, l := range n.links {
		names[i] = l.Name
	}
	return names
}

func (n *versionNode) ResolveLink(path []string) (*ipld.Link, []string, error) {
	obj, rest, err := n.Resolve(path)
	if err != nil {
		return nil, nil, err
	}
	l, ok := obj.(*ipld.Link)
	if !ok {
		return nil, nil, errors.New("not a link")
	}
	return l, rest, nil
}

func (n *versionNode) Copy() ipld.Node {
	links := make([]*ipld.Link, len(n.links))
	for i, l := range n.links {
		cp := *l
		links[i] = &cp
	}
	return &versionNode{Block: n.Block, links: links}
}

func (n *versionNode) Links() []*ipld.Link { return n.links }

func (n *versionNode) Stat() (*ipld.NodeStat, error) {
	size := len(n.RawData())
	return &ipld.NodeStat{NumLinks: len(n.links), BlockSize: size, DataSize: size, CumulativeSize: size}, nil
}

func (n *versionNode) Size() (uint64, error) { return uint64(len(n.RawData())), nil }
