// Package manifests holds what nixipfs records about published store paths:
// PathInfo records (dag-cbor blocks in IPFS), narinfo signing, and the index
// from store-path hash to PathInfo that the gateway answers narinfo from.
package manifests

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/node/bindnode"
	"github.com/ipld/go-ipld-prime/schema"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"
)

// Schema is the IPLD schema of a PathInfo record, encoded as dag-cbor.
//
// references: one entry per reference of the store path, by basename; info
// links the referenced path's own PathInfo, so one recursive pin of a
// PathInfo keeps its whole closure. A self-reference has no info link (a
// block cannot link itself).
const Schema = `
type PathInfo struct {
	storePath String
	narHash Bytes
	narSize Int
	blake3 Bytes
	root Link
	references [Reference]
	deriver optional String
	contentAddress optional String
	signatures [String]
	profile String
}

type Reference struct {
	name String
	info optional Link
}
`

// PathInfo is one published store path.
type PathInfo struct {
	StorePath      string // full path, e.g. /nix/store/<hash>-<name>
	NarHash        []byte // SHA-256 of the NAR, 32 bytes
	NarSize        int64
	Blake3         []byte // BLAKE3-256 of the NAR, 32 bytes
	Root           cid.Cid
	References     []Reference
	Deriver        *string  // basename
	ContentAddress *string  // Nix CA field
	Signatures     []string // "name:base64"
	Profile        string   // the import profile the DAG was built with
}

// Reference is a store path this one refers to.
type Reference struct {
	Name string   // basename
	Info *cid.Cid // its PathInfo; nil for a self-reference
}

var pathInfoType schema.Type

func init() {
	ts, err := ipld.LoadSchemaBytes([]byte(Schema))
	if err != nil {
		panic(fmt.Errorf("PathInfo schema: %w", err))
	}
	pathInfoType = ts.TypeByName("PathInfo")
	// Fail at start-up, not at first use, if the Go type drifts from the schema.
	bindnode.Prototype((*PathInfo)(nil), pathInfoType)
}

var cidBuilder = cid.V1Builder{Codec: cid.DagCBOR, MhType: mh.SHA2_256}

// Block encodes p as a dag-cbor block.
func (p *PathInfo) Block() (blocks.Block, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(bindnode.Wrap(p, pathInfoType).Representation(), &buf); err != nil {
		return nil, fmt.Errorf("encode PathInfo %s: %w", p.StorePath, err)
	}
	c, err := cidBuilder.Sum(buf.Bytes())
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(buf.Bytes(), c)
}

// maxPathInfoSize bounds what Decode accepts: a PathInfo with thousands of
// references and signatures is still far below it.
const maxPathInfoSize = 1 << 20

// Decode parses and validates a PathInfo block.
func Decode(data []byte) (*PathInfo, error) {
	if len(data) > maxPathInfoSize {
		return nil, fmt.Errorf("decode PathInfo: %d bytes is over the %d limit", len(data), maxPathInfoSize)
	}
	proto := bindnode.Prototype((*PathInfo)(nil), pathInfoType)
	nb := proto.Representation().NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("decode PathInfo: %w", err)
	}
	p := bindnode.Unwrap(nb.Build()).(*PathInfo)
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("decode PathInfo: %w", err)
	}
	return p, nil
}

// Validate checks what a record must hold before it is recorded or served.
func (p *PathInfo) Validate() error {
	if _, err := storepath.FromAbsolutePath(p.StorePath); err != nil {
		return fmt.Errorf("PathInfo: store path %q: %w", p.StorePath, err)
	}
	if len(p.NarHash) != 32 {
		return fmt.Errorf("PathInfo %s: NarHash is %d bytes, want 32", p.StorePath, len(p.NarHash))
	}
	if len(p.Blake3) != 32 {
		return fmt.Errorf("PathInfo %s: BLAKE3 is %d bytes, want 32", p.StorePath, len(p.Blake3))
	}
	if p.NarSize <= 0 {
		return fmt.Errorf("PathInfo %s: NarSize %d is not positive", p.StorePath, p.NarSize)
	}
	if !p.Root.Defined() {
		return fmt.Errorf("PathInfo %s: no root CID", p.StorePath)
	}
	for _, r := range p.References {
		if _, err := storepath.FromString(r.Name); err != nil {
			return fmt.Errorf("PathInfo %s: reference %q: %w", p.StorePath, r.Name, err)
		}
	}
	if p.Deriver != nil {
		if _, err := storepath.FromString(*p.Deriver); err != nil {
			return fmt.Errorf("PathInfo %s: deriver %q: %w", p.StorePath, *p.Deriver, err)
		}
	}
	for _, s := range p.Signatures {
		if strings.ContainsAny(s, "\n\r") {
			return fmt.Errorf("PathInfo %s: signature contains a newline", p.StorePath)
		}
	}
	return nil
}

// HashPart is the store path's hash, the key narinfo lookups use.
func (p *PathInfo) HashPart() string { return HashPart(p.StorePath) }

// HashPart returns the 32-character hash of a store path or basename.
func HashPart(storePath string) string {
	b := path.Base(storePath)
	if i := strings.IndexByte(b, '-'); i >= 0 {
		return b[:i]
	}
	return b
}

// StoreDir is the store directory the path lives in.
func (p *PathInfo) StoreDir() string { return path.Dir(p.StorePath) }

// NarHashString is the NarHash as narinfo writes it: sha256:<nix32>.
func (p *PathInfo) NarHashString() string {
	return "sha256:" + nixbase32.EncodeToString(p.NarHash)
}

// ReferenceNames are the references' basenames, sorted.
func (p *PathInfo) ReferenceNames() []string {
	names := make([]string, len(p.References))
	for i, r := range p.References {
		names[i] = r.Name
	}
	sort.Strings(names)
	return names
}

// Fingerprint is what Nix signs: 1;<path>;<narHash>;<narSize>;<sorted full refs>.
// go-nix's Fingerprint keeps references in stored order, so this sorts them.
func (p *PathInfo) Fingerprint() string {
	names := p.ReferenceNames()
	full := make([]string, len(names))
	for i, n := range names {
		full[i] = p.StoreDir() + "/" + n
	}
	return "1;" + p.StorePath + ";" + p.NarHashString() + ";" + strconv.FormatInt(p.NarSize, 10) + ";" + strings.Join(full, ",")
}
