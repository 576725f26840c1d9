package ipldnar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	bitfield "github.com/ipfs/go-bitfield"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/nix-community/go-nix/pkg/wire"
)

// Render writes the NAR of the UnixFS DAG rooted at root to w and returns
// the number of bytes written.
//
// Entries are written sorted by name bytes; a file is executable iff its
// UnixFS mode has an execute bit (a raw leaf is not executable). Everything
// else UnixFS may record (mtime, other mode bits) is ignored, as a NAR cannot
// express it.
//
// Render streams: it holds the metadata of the directories on the current path
// and a bounded number of prefetched blocks, never a whole file. A DAG that is
// not the image of a valid NAR (invalid or duplicate names, file sizes that do
// not add up, node types without a NAR equivalent, ...) makes it fail with an
// *Error naming the entry; the output written until then must be discarded.
// The checks are made before the bytes they concern are written, so a wrong
// NAR is never emitted in full.
//
// If src is a Recycler, Render gives it the data of each raw block it has
// written: w must not keep what it is given (as io.Writer requires).
func Render(ctx context.Context, w io.Writer, root cid.Cid, src ipld.NodeGetter) (int64, error) {
	cw := &countingWriter{w: w}
	r := &renderer{
		ctx: ctx,
		w:   bufio.NewWriterSize(cw, 64<<10),
		la:  newLookahead(ctx, knownFirst{src}, root),
	}
	r.recycler, _ = src.(Recycler)
	defer r.la.close()
	err := r.archive(root)
	if err == nil {
		err = r.w.Flush()
	}
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Recycler is a NodeGetter that can reuse the memory of a node's data once
// its reader is done with it (ipfsnode.Node.Recycle): Render, which reads
// each block once and drops it when written, hands every raw block back.
type Recycler interface {
	ipld.NodeGetter
	// Recycle takes data that the caller got from Get as a node's RawData
	// and no longer uses; nothing else may hold it.
	Recycle(data []byte)
}

// WithRecycle returns src as a Recycler whose Recycle is recycle.
func WithRecycle(src ipld.NodeGetter, recycle func(data []byte)) Recycler {
	return recycling{src, recycle}
}

type recycling struct {
	ipld.NodeGetter
	recycle func([]byte)
}

func (r recycling) Recycle(data []byte) { r.recycle(data) }

func (r recycling) GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool) {
	return getQuick(ctx, r.NodeGetter, c)
}

type renderer struct {
	ctx      context.Context
	w        *bufio.Writer
	la       *lookahead // every node is fetched through it
	names    []string   // path of the entry being rendered, for errors
	recycler Recycler   // nil: none
}

// written is called with the data of a raw block once it is written.
func (r *renderer) written(data []byte) {
	if r.recycler != nil {
		r.recycler.Recycle(data)
	}
}

// errorf reports a problem with the entry being rendered.
func (r *renderer) errorf(format string, args ...any) error {
	return &Error{Path: entryPath(r.names), Err: fmt.Errorf(format, args...)}
}

// fail attaches the current entry path to err unless it has one.
func (r *renderer) fail(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Path: entryPath(r.names), Err: err}
}

func (r *renderer) archive(root cid.Cid) error {
	if err := r.str(narMagic); err != nil {
		return err
	}
	nd, err := r.la.next(r.ctx, root)
	if err != nil {
		return r.fail(err)
	}
	return r.node(nd, 0)
}

// Token writers. Write errors surface here or at the final Flush.

func (r *renderer) str(s string) error { return wire.WriteString(r.w, s) }

func (r *renderer) strs(ss ...string) error {
	for _, s := range ss {
		if err := wire.WriteString(r.w, s); err != nil {
			return err
		}
	}
	return nil
}

var zeros [8]byte

func (r *renderer) pad(n uint64) error {
	_, err := r.w.Write(zeros[:(8-n%8)%8])
	return err
}

// node writes `( type ... )` for nd.
func (r *renderer) node(nd ipld.Node, depth int) error {
	if err := r.ctx.Err(); err != nil {
		return r.fail(err)
	}
	switch codec := nd.Cid().Prefix().Codec; codec {
	case cid.Raw:
		data := nd.RawData()
		if err := r.fileHeader(false, uint64(len(data))); err != nil {
			return err
		}
		if _, err := r.w.Write(data); err != nil {
			return err
		}
		r.written(data)
		return r.fileTrailer(uint64(len(data)))
	case cid.DagProtobuf:
		pn, fsn, err := decodeUnixFS(nd)
		if err != nil {
			return r.fail(err)
		}
		switch fsn.Type() {
		case ft.TFile, ft.TRaw:
			return r.file(pn, fsn)
		case ft.TSymlink:
			return r.symlink(fsn)
		case ft.TDirectory:
			return r.directory(linkEntries(pn.Links()), depth)
		case ft.THAMTShard:
			entries, err := r.hamtEntries(pn, fsn, nil, 0)
			if err != nil {
				return r.fail(err)
			}
			return r.directory(entries, depth)
		default:
			return r.errorf("UnixFS node type %s has no NAR equivalent", fsn.Type())
		}
	default:
		return r.errorf("unsupported codec 0x%x", codec)
	}
}

// decodeUnixFS returns the dag-pb node nd and its UnixFS data.
func decodeUnixFS(nd ipld.Node) (*dag.ProtoNode, *ft.FSNode, error) {
	pn, ok := nd.(*dag.ProtoNode)
	if !ok {
		var err error
		if pn, err = dag.DecodeProtobuf(nd.RawData()); err != nil {
			return nil, nil, err
		}
	}
	fsn, err := ft.FSNodeFromBytes(pn.Data())
	if err != nil {
		return nil, nil, fmt.Errorf("invalid UnixFS data: %w", err)
	}
	return pn, fsn, nil
}

func (r *renderer) fileHeader(exec bool, size uint64) error {
	var err error
	if exec {
		err = r.strs("(", "type", "regular", "executable", "", "contents")
	} else {
		err = r.strs("(", "type", "regular", "contents")
	}
	if err != nil {
		return err
	}
	return wire.WriteUint64(r.w, size)
}

func (r *renderer) fileTrailer(size uint64) error {
	if err := r.pad(size); err != nil {
		return err
	}
	return r.str(")")
}

// file writes a dag-pb file. Its size is written before its contents, so it
// is taken from the root and every node below is checked against the size its
// parent declares for it before any of its bytes are written.
func (r *renderer) file(pn *dag.ProtoNode, fsn *ft.FSNode) error {
	size, err := fileSize(pn, fsn)
	if err != nil {
		return r.fail(err)
	}
	if err := r.fileHeader(fsn.Mode()&0o111 != 0, size); err != nil {
		return err
	}
	if err := r.fileData(pn, fsn, 0); err != nil {
		return r.fail(err)
	}
	return r.fileTrailer(size)
}

// fileSize checks that a file node's sizes add up and returns its size.
func fileSize(pn *dag.ProtoNode, fsn *ft.FSNode) (uint64, error) {
	sizes := fsn.BlockSizes()
	if len(sizes) != len(pn.Links()) {
		return 0, fmt.Errorf("file node has %d links but %d block sizes", len(pn.Links()), len(sizes))
	}
	total := uint64(len(fsn.Data()))
	for _, s := range sizes {
		var carry uint64
		if total, carry = bits.Add64(total, s, 0); carry != 0 {
			return 0, errors.New("file block sizes overflow")
		}
	}
	if total != fsn.FileSize() {
		return 0, fmt.Errorf("file node declares %d bytes but its data and blocks hold %d", fsn.FileSize(), total)
	}
	return total, nil
}

// fileData writes the contents below a file node whose sizes were checked.
func (r *renderer) fileData(pn *dag.ProtoNode, fsn *ft.FSNode, level int) error {
	if level > maxFileDepth {
		return fmt.Errorf("file DAG deeper than %d levels", maxFileDepth)
	}
	if _, err := r.w.Write(fsn.Data()); err != nil {
		return err
	}
	links := pn.Links()
	if len(links) == 0 {
		return nil
	}
	for i, l := range links {
		c := l.Cid
		want := fsn.BlockSize(i)
		child, err := r.la.next(r.ctx, c)
		if err != nil {
			return fmt.Errorf("file block %s: %w", c, err)
		}
		switch child.Cid().Prefix().Codec {
		case cid.Raw:
			data := child.RawData()
			if uint64(len(data)) != want {
				return fmt.Errorf("file block %s holds %d bytes, its parent declares %d", c, len(data), want)
			}
			if _, err := r.w.Write(data); err != nil {
				return err
			}
			r.written(data)
		case cid.DagProtobuf:
			cpn, cfsn, err := decodeUnixFS(child)
			if err != nil {
				return fmt.Errorf("file block %s: %w", c, err)
			}
			if t := cfsn.Type(); t != ft.TFile && t != ft.TRaw {
				return fmt.Errorf("file block %s has UnixFS type %s", c, t)
			}
			size, err := fileSize(cpn, cfsn)
			if err != nil {
				return fmt.Errorf("file block %s: %w", c, err)
			}
			if size != want {
				return fmt.Errorf("file block %s holds %d bytes, its parent declares %d", c, size, want)
			}
			if err := r.fileData(cpn, cfsn, level+1); err != nil {
				return err
			}
		default:
			return fmt.Errorf("file block %s has unsupported codec 0x%x", c, child.Cid().Prefix().Codec)
		}
	}
	return nil
}

func (r *renderer) symlink(fsn *ft.FSNode) error {
	target := fsn.Data()
	if err := checkTarget(target); err != nil {
		return r.fail(err)
	}
	if err := r.strs("(", "type", "symlink", "target"); err != nil {
		return err
	}
	if err := wire.WriteBytes(r.w, target); err != nil {
		return err
	}
	return r.str(")")
}

type dirEntry struct {
	name string
	cid  cid.Cid
}

// linkEntries are the entries of a plain directory node's links.
func linkEntries(links []*ipld.Link) []dirEntry {
	entries := make([]dirEntry, 0, len(links))
	for _, l := range links {
		entries = append(entries, dirEntry{l.Name, l.Cid})
	}
	return entries
}

// sortEntries sorts entries in NAR order: by name bytes.
func sortEntries(entries []dirEntry) {
	slices.SortFunc(entries, func(a, b dirEntry) int { return strings.Compare(a.name, b.name) })
}

// directory checks and sorts entries, then writes the directory.
func (r *renderer) directory(entries []dirEntry, depth int) error {
	sortEntries(entries)
	for i, e := range entries {
		if err := checkName(e.name); err != nil {
			return &Error{Path: entryPath(append(r.names, e.name)), Err: err}
		}
		if i > 0 && e.name == entries[i-1].name {
			return &Error{Path: entryPath(append(r.names, e.name)), Err: fmt.Errorf("duplicate entry %q", e.name)}
		}
	}
	if len(entries) > 0 && depth+1 > maxDepth {
		return r.errorf("directories nested deeper than %d levels", maxDepth)
	}
	if err := r.strs("(", "type", "directory"); err != nil {
		return err
	}
	for _, e := range entries {
		r.names = append(r.names, e.name)
		if err := r.strs("entry", "(", "name", e.name, "node"); err != nil {
			return err
		}
		child, err := r.la.next(r.ctx, e.cid)
		if err != nil {
			return r.fail(err)
		}
		if err := r.node(child, depth+1); err != nil {
			return err
		}
		if err := r.str(")"); err != nil {
			return err
		}
		r.names = r.names[:len(r.names)-1]
	}
	return r.str(")")
}

// hamtEntries appends the entries of a HAMT shard and its sub-shards to out.
// It checks the structure that determines which links are entries (bitfield,
// link name prefixes), but not that each entry sits in the bucket its name
// hashes to: a misplaced entry changes nothing in the NAR, and a name present
// twice is caught by the duplicate check in directory.
func (r *renderer) hamtEntries(pn *dag.ProtoNode, fsn *ft.FSNode, out []dirEntry, level int) ([]dirEntry, error) {
	if level > 64 {
		return nil, errors.New("HAMT deeper than 64 levels")
	}
	out, shards, err := hamtLinks(pn, fsn, out)
	if err != nil {
		return nil, err
	}
	for _, c := range shards {
		nd, err := r.la.next(r.ctx, c)
		if err != nil {
			return nil, fmt.Errorf("HAMT shard %s: %w", c, err)
		}
		if nd.Cid().Prefix().Codec != cid.DagProtobuf {
			return nil, fmt.Errorf("HAMT shard %s is not dag-pb", c)
		}
		cpn, cfsn, err := decodeUnixFS(nd)
		if err != nil {
			return nil, fmt.Errorf("HAMT shard %s: %w", c, err)
		}
		if cfsn.Type() != ft.THAMTShard {
			return nil, fmt.Errorf("HAMT shard %s has UnixFS type %s", c, cfsn.Type())
		}
		if out, err = r.hamtEntries(cpn, cfsn, out, level+1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hamtLinks checks one HAMT shard node and splits its links: the entries
// it holds are appended to out, the CIDs of its sub-shards returned.
func hamtLinks(pn *dag.ProtoNode, fsn *ft.FSNode, out []dirEntry) ([]dirEntry, []cid.Cid, error) {
	if fsn.HashType() != hamt.HashMurmur3 {
		return nil, nil, fmt.Errorf("HAMT hash type 0x%x is not murmur3", fsn.HashType())
	}
	fanout := fsn.Fanout()
	if fanout < 8 || fanout > 1024 || fanout&(fanout-1) != 0 {
		return nil, nil, fmt.Errorf("invalid HAMT fanout %d", fanout)
	}
	bf, err := bitfield.FromBytes(int(fanout), fsn.Data())
	if err != nil {
		return nil, nil, fmt.Errorf("invalid HAMT bitfield: %w", err)
	}
	ones := 0
	for _, b := range bf {
		ones += bits.OnesCount8(b)
	}
	links := pn.Links()
	if ones != len(links) {
		return nil, nil, fmt.Errorf("HAMT shard has %d links but %d bitfield entries", len(links), ones)
	}
	padLen := len(fmt.Sprintf("%X", fanout-1))
	var shards []cid.Cid
	prev := -1
	for _, l := range links {
		idx, ok := hamtIndex(l.Name, padLen)
		if !ok || idx >= int(fanout) || idx <= prev || !bf.Bit(idx) {
			return nil, nil, fmt.Errorf("invalid HAMT link name %q", l.Name)
		}
		prev = idx
		if len(l.Name) == padLen {
			shards = append(shards, l.Cid)
		} else {
			out = append(out, dirEntry{l.Name[padLen:], l.Cid})
		}
	}
	return out, shards, nil
}

// hamtIndex parses the upper-case hex bucket index that prefixes a HAMT
// link name.
func hamtIndex(name string, padLen int) (int, bool) {
	if len(name) < padLen {
		return 0, false
	}
	idx := 0
	for _, c := range []byte(name[:padLen]) {
		switch {
		case c >= '0' && c <= '9':
			idx = idx<<4 | int(c-'0')
		case c >= 'A' && c <= 'F':
			idx = idx<<4 | int(c-'A'+10)
		default:
			return 0, false
		}
	}
	return idx, true
}
