package ipldnar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	chunker "github.com/ipfs/boxo/chunker"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	ipld "github.com/ipfs/go-ipld-format"
)

// Import parses a NAR from r and writes its UnixFS DAG to dst, computing the
// NAR's SHA-256 and BLAKE3 in the same pass.
//
// The input is validated completely (see the package documentation); any
// violation, a truncated stream or trailing bytes after the root node make
// Import fail with an *Error naming the entry. Blocks are written with
// dst.Add/AddMany only, so dst may be write-only. On error, blocks already
// written are left behind unreferenced.
//
// Import is safe for concurrent use with other imports.
func Import(ctx context.Context, r io.Reader, dst ipld.DAGService) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	hr := newHashingReader(r)
	p := &parser{
		ctx: ctx,
		br:  bufio.NewReaderSize(hr, 64<<10),
		bw:  newBlockWriter(ctx, dst),
	}
	root, err := p.archive()
	sha, b3 := hr.finish()
	if err != nil {
		return Result{}, err
	}
	if err := p.bw.flush(); err != nil {
		return Result{}, &Error{Path: "/", Err: fmt.Errorf("store blocks: %w", err)}
	}
	return Result{Root: root.Cid(), NarHash: sha, NarSize: hr.n, Blake3: b3}, nil
}

// parser reads NAR tokens and builds the DAG as it goes, depth first, so that
// memory stays bounded by the tree's metadata whatever the file sizes.
type parser struct {
	ctx   context.Context
	br    *bufio.Reader
	bw    *blockWriter
	names []string // path of the entry being parsed, for errors
	// buf holds the last string token; large enough for the longest
	// bounded one (a symlink target) with its padding.
	buf [maxTargetLen + 8]byte
}

// fail attaches the current entry path to err, unless err already has one
// (it comes from a nested entry).
func (p *parser) fail(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Path: entryPath(p.names), Err: err}
}

func (p *parser) archive() (ipld.Node, error) {
	magic, err := p.str(maxTokenLen, "magic")
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("not a NAR: %w", err)}
	}
	if string(magic) != narMagic {
		return nil, &Error{Err: fmt.Errorf("not a NAR: bad magic %q", magic)}
	}
	nd, err := p.node(0)
	if err != nil {
		return nil, err
	}
	switch _, err := p.br.ReadByte(); err {
	case io.EOF:
		return nd, nil
	case nil:
		return nil, p.fail(errors.New("trailing data after the root node"))
	default:
		return nil, p.fail(err)
	}
}

// u64 reads a little-endian 64-bit integer.
func (p *parser) u64() (uint64, error) {
	b := p.buf[:8]
	if _, err := io.ReadFull(p.br, b); err != nil {
		return 0, readErr(err)
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56, nil
}

// readErr turns the end of the input inside a token into ErrTruncated.
func readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrTruncated
	}
	return err
}

// str reads a string token of at most max bytes, checking its padding. The
// length is checked before anything is read, so a lying length prefix costs
// nothing. The result aliases p.buf: it is only valid until the next read.
func (p *parser) str(max int, what string) ([]byte, error) {
	n, err := p.u64()
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%s of %d bytes exceeds %d bytes", what, n, max)
	}
	b := p.buf[:(n+7)&^7]
	if _, err := io.ReadFull(p.br, b); err != nil {
		return nil, readErr(err)
	}
	if err := checkPadding(b[n:], what); err != nil {
		return nil, err
	}
	return b[:n], nil
}

func checkPadding(pad []byte, what string) error {
	for _, c := range pad {
		if c != 0 {
			return fmt.Errorf("nonzero padding after %s", what)
		}
	}
	return nil
}

// keyword reads a keyword token ("(", "type", ...).
func (p *parser) keyword() ([]byte, error) {
	return p.str(maxTokenLen, "token")
}

func (p *parser) expect(want string) error {
	got, err := p.keyword()
	if err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("expected %q, got %q", want, got)
	}
	return nil
}

// node parses `( type ... )` at the current path.
func (p *parser) node(depth int) (ipld.Node, error) {
	if err := p.ctx.Err(); err != nil {
		return nil, p.fail(err)
	}
	if err := p.expect("("); err != nil {
		return nil, p.fail(err)
	}
	if err := p.expect("type"); err != nil {
		return nil, p.fail(err)
	}
	typ, err := p.keyword()
	if err != nil {
		return nil, p.fail(err)
	}
	var nd ipld.Node
	switch string(typ) {
	case "regular":
		nd, err = p.regular()
	case "symlink":
		nd, err = p.symlink()
	case "directory":
		nd, err = p.directory(depth)
	default:
		err = fmt.Errorf("unknown node type %q", typ)
	}
	if err != nil {
		return nil, p.fail(err)
	}
	return nd, nil
}

func (p *parser) regular() (ipld.Node, error) {
	tok, err := p.keyword()
	if err != nil {
		return nil, err
	}
	exec := string(tok) == "executable"
	if exec {
		// The executable flag is followed by an empty string.
		if err := p.expect(""); err != nil {
			return nil, err
		}
		if tok, err = p.keyword(); err != nil {
			return nil, err
		}
	}
	if string(tok) != "contents" {
		return nil, fmt.Errorf("expected %q, got %q", "contents", tok)
	}
	size, err := p.u64()
	if err != nil {
		return nil, err
	}
	if size > math.MaxInt64 {
		return nil, fmt.Errorf("file size %d is too large", size)
	}
	nd, err := p.file(size, exec)
	if err != nil {
		return nil, err
	}
	pad := p.buf[:(8-size%8)%8]
	if _, err := io.ReadFull(p.br, pad); err != nil {
		return nil, readErr(err)
	}
	if err := checkPadding(pad, "contents"); err != nil {
		return nil, err
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	return nd, nil
}

// file streams size bytes of contents through boxo's balanced builder. It
// produces the same DAG as `ipfs add` with the profile's settings, except for
// an empty file, which is the identity CID EmptyFile.
func (p *parser) file(size uint64, exec bool) (ipld.Node, error) {
	if size == 0 {
		// The identity CID: see known.go. Nothing to store.
		if exec {
			return p.execRoot(emptyFileNode)
		}
		return emptyFileNode, nil
	}
	cr := &contentReader{p: p, left: size}
	params := helpers.DagBuilderParams{
		Maxlinks:   fileDAGWidth,
		RawLeaves:  true,
		CidBuilder: cidBuilder,
		Dagserv:    p.bw,
	}
	if exec {
		// Only takes effect when the root is a dag-pb node (more than
		// one chunk); see execRoot for the other case.
		params.FileMode = execMode
	}
	db, err := params.New(chunker.NewSizeSplitter(cr, chunkSize))
	if err != nil {
		return nil, err
	}
	root, err := balanced.Layout(db)
	if err != nil {
		return nil, err
	}
	if cr.left != 0 {
		return nil, fmt.Errorf("internal error: %d bytes of contents left unread", cr.left)
	}
	if exec {
		return p.execRoot(root)
	}
	return root, nil
}

// execRoot makes sure an executable file's root can carry a mode. The
// balanced builder returns a bare raw leaf for a file of at most one chunk,
// which has no room for one; wrap it in a dag-pb file node linking that same
// leaf, laid out as the builder lays out its own internal nodes.
func (p *parser) execRoot(root ipld.Node) (ipld.Node, error) {
	if _, ok := root.(*dag.ProtoNode); ok {
		return root, nil
	}
	fsn := ft.NewFSNode(ft.TFile)
	fsn.AddBlockSize(uint64(len(root.RawData())))
	fsn.SetMode(execMode)
	data, err := fsn.GetBytes()
	if err != nil {
		return nil, err
	}
	nd := dag.NodeWithData(data)
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return nil, err
	}
	if err := nd.AddNodeLink("", root); err != nil {
		return nil, err
	}
	if err := p.bw.Add(p.ctx, nd); err != nil {
		return nil, err
	}
	return nd, nil
}

// contentReader yields exactly the next left bytes of the NAR. Running out
// early is ErrTruncated, not io.EOF: the chunker would take an EOF for the
// end of the file and build a shorter one.
type contentReader struct {
	p    *parser
	left uint64
}

func (c *contentReader) Read(b []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	if err := c.p.ctx.Err(); err != nil {
		return 0, err
	}
	if uint64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.p.br.Read(b)
	c.left -= uint64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		// The chunker would take either for the end of the file.
		err = ErrTruncated
	}
	return n, err
}

func (p *parser) symlink() (ipld.Node, error) {
	if err := p.expect("target"); err != nil {
		return nil, err
	}
	t, err := p.str(maxTargetLen, "symlink target")
	if err != nil {
		return nil, err
	}
	if err := checkTarget(t); err != nil {
		return nil, err
	}
	data, err := ft.SymlinkData(string(t))
	if err != nil {
		return nil, err
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	nd := dag.NodeWithData(data)
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return nil, err
	}
	if err := p.bw.Add(p.ctx, nd); err != nil {
		return nil, err
	}
	return nd, nil
}

// directory parses the entries of a directory up to its closing ")". Entries
// arrive sorted, so each one is complete (and its blocks written) before the
// next starts; only the directory's own links are held.
func (p *parser) directory(depth int) (ipld.Node, error) {
	dir, err := newDirectory(p.bw)
	if err != nil {
		return nil, err
	}
	var prev string
	for i := 0; ; i++ {
		tok, err := p.keyword()
		if err != nil {
			return nil, err
		}
		if string(tok) == ")" {
			break
		}
		if string(tok) != "entry" {
			return nil, fmt.Errorf("expected %q or %q, got %q", "entry", ")", tok)
		}
		if err := p.expect("("); err != nil {
			return nil, err
		}
		if err := p.expect("name"); err != nil {
			return nil, err
		}
		nb, err := p.str(maxNameLen, "name")
		if err != nil {
			return nil, err
		}
		name := string(nb)
		p.names = append(p.names, name)
		if err := p.entry(dir, i, name, prev, depth+1); err != nil {
			return nil, p.fail(err)
		}
		p.names = p.names[:len(p.names)-1]
		prev = name
	}
	nd, err := dir.GetNode()
	if err != nil {
		return nil, err
	}
	if err := p.bw.Add(p.ctx, nd); err != nil {
		return nil, err
	}
	return nd, nil
}

// entry parses the rest of `entry ( name <name> node <node> )` once the name
// is on the path stack, and adds the child to dir.
func (p *parser) entry(dir uio.Directory, i int, name, prev string, depth int) error {
	if err := checkName(name); err != nil {
		return err
	}
	if i > 0 {
		switch {
		case name == prev:
			return fmt.Errorf("duplicate entry %q", name)
		case name < prev: // Go compares strings bytewise, as Nix does.
			return fmt.Errorf("entry %q is not sorted after %q", name, prev)
		}
	}
	if depth > maxDepth {
		return fmt.Errorf("directories nested deeper than %d levels", maxDepth)
	}
	if err := p.expect("node"); err != nil {
		return err
	}
	child, err := p.node(depth)
	if err != nil {
		return err
	}
	if err := p.expect(")"); err != nil {
		return err
	}
	return dir.AddChild(p.ctx, name, child)
}
