// Package ipldnar converts between Nix archives (NAR) and UnixFS DAGs.
//
// Import parses a NAR and stores it as a UnixFS DAG built with the settings of
// the IPIP-499 "unixfs-v1-2025" profile (see Profile), so that the same store
// path always yields the same root CID and identical files share blocks with
// what `ipfs add --cid-version 1 --raw-leaves --chunker size-1048576` gives.
// Render walks such a DAG and writes back the exact NAR.
//
// The mapping, in both directions:
//
//   - a regular file is a UnixFS file (balanced layout, 1 MiB raw leaves, 1024
//     links per node). An empty file is the identity CID bafkqaaa, not the
//     sha2-256 empty raw block `ipfs add` gives (see EmptyFile for why). An executable file is a dag-pb file node carrying mode
//     0555 over the same raw leaves, even when it is a single chunk or empty;
//     a non-executable file carries no mode at all.
//   - a symlink is a UnixFS symlink node.
//   - a directory is a UnixFS directory, HAMT-sharded (fanout 256) once its
//     block would exceed 256 KiB, exactly as boxo decides.
//
// For a tree without executables the root CID is the one kubo's
// `ipfs add -r --inline --inline-limit 0` gives with the same profile (a test checks this when kubo is
// on PATH). Nothing else of a file system is recorded (no mtime, no other
// mode bits), because a NAR records nothing else.
//
// Both directions treat their input as hostile: Import enforces every NAR rule
// and Render refuses DAGs that cannot be the image of a valid NAR. Errors name
// the offending entry (see Error). Entry names must be non-empty, not "." or
// "..", free of '/' and NUL, at most 255 bytes, and strictly increasing within
// a directory; symlink targets must be non-empty, free of NUL and at most 4095
// bytes. Directories may nest at most 1024 levels below the root: Nix has no
// such limit, but real store paths nest a few dozen levels at most and the
// bound keeps a hostile input from exhausting the stack.
package ipldnar

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// Profile names the DAG layout produced by Import. Callers record it next to
// every root CID: the CID of a store path is only reproducible together with
// the profile it was built with.
//
// "+empty-identity": empty files are the identity CID (see EmptyFile). Paths
// recorded with plain "unixfs-v1-2025" differ only there, and render the same.
const Profile = "unixfs-v1-2025+empty-identity"

// Result describes an imported NAR.
type Result struct {
	Root    cid.Cid
	NarHash [32]byte // SHA-256 of the NAR bytes
	NarSize uint64
	Blake3  [32]byte // BLAKE3-256 of the NAR bytes
}

// Limits enforced on NARs and DAGs (see the package documentation).
const (
	maxNameLen   = 255  // NAME_MAX
	maxTargetLen = 4095 // PATH_MAX - 1
	maxDepth     = 1024 // directory levels below the root
	// maxFileDepth bounds the height of a file DAG in Render. A balanced
	// tree of 1 MiB leaves with 1024 links per node is 7 levels high at
	// 2^80 bytes; this is only a guard against hostile DAGs.
	maxFileDepth = 64
)

// NAR tokens.
const (
	narMagic = "nix-archive-1"
	// maxTokenLen bounds the keyword tokens ("directory" is the longest
	// that may appear, "nix-archive-1" the longest overall).
	maxTokenLen = 16
)

// Error reports an invalid NAR or DAG, or a failure while handling one entry.
// Path is the entry's path inside the archive, "/" for the root; it is empty
// when the problem is not tied to an entry (e.g. a bad magic).
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "nar: " + e.Err.Error()
	}
	return fmt.Sprintf("nar entry %q: %v", e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrTruncated is reported (wrapped in an *Error) when a NAR ends early.
var ErrTruncated = errors.New("unexpected end of NAR")

// entryPath joins a stack of names into an archive path. Parsers keep the
// stack and only build the string when they report an error, so that deep
// trees with long names do not cost quadratic memory.
func entryPath(names []string) string {
	if len(names) == 0 {
		return "/"
	}
	return "/" + strings.Join(names, "/")
}

// checkName applies the NAR rules for a directory entry name.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name is not allowed")
	case name == "." || name == "..":
		return fmt.Errorf("name %q is not allowed", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d bytes exceeds %d bytes", len(name), maxNameLen)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q contains a NUL byte", name)
	}
	return nil
}

// checkTarget applies the NAR rules for a symlink target.
func checkTarget(target []byte) error {
	switch {
	case len(target) == 0:
		return errors.New("empty symlink target is not allowed")
	case len(target) > maxTargetLen:
		return fmt.Errorf("symlink target of %d bytes exceeds %d bytes", len(target), maxTargetLen)
	case bytes.IndexByte(target, 0) >= 0:
		return fmt.Errorf("symlink target %q contains a NUL byte", target)
	}
	return nil
}

// DAG settings of the unixfs-v1-2025 profile (boxo's io.UnixFS_v1_2025; a
// test keeps them in sync). They are constants passed explicitly to boxo on
// every call rather than boxo's globals (ApplyGlobals) or its mutable profile
// variable, so that other users of boxo in the same process cannot change our
// CIDs and we cannot change theirs.
const (
	chunkSize        = 1 << 20   // fixed-size chunks
	fileDAGWidth     = 1024      // links per file node
	hamtShardingSize = 256 << 10 // basic directory block size limit
	hamtFanout       = 256
	hamtEstimation   = uio.SizeEstimationBlock
)

// cidBuilder makes CIDv1 with sha2-256; boxo switches the codec to raw for
// leaves.
var cidBuilder = cid.Prefix{
	Version:  1,
	Codec:    cid.DagProtobuf,
	MhType:   mh.SHA2_256,
	MhLength: -1,
}

// execMode is the UnixFS mode recorded on executable files. Nix normalises
// the permissions of store paths to 0444/0555, so 0555 is what an
// `ipfs add --preserve-mode` of a store path would record too.
const execMode os.FileMode = 0o555

// newDirectory returns an empty directory that switches to a HAMT exactly as
// the profile says.
func newDirectory(dserv ipld.DAGService) (uio.Directory, error) {
	dir, err := uio.NewDirectory(dserv,
		uio.WithCidBuilder(cidBuilder),
		uio.WithSizeEstimationMode(hamtEstimation),
		uio.WithMaxHAMTFanout(hamtFanout),
	)
	if err != nil {
		return nil, err
	}
	// Not a DirectoryOption in boxo; without it the global would apply.
	dir.SetHAMTShardingSize(hamtShardingSize)
	return dir, nil
}
