// Package carfile moves nixipfs closures in and out of CAR files.
//
// A closure is everything reachable from a PathInfo block: its UnixFS DAG and
// the PathInfo blocks (and so the closures) of its references. Export writes
// such a closure as a streaming CARv1; Import reads a CAR from an untrusted
// source and hands over only blocks whose bytes hash to their CIDs; Complete
// checks afterwards that the imported closure has no holes, which the CAR
// format itself cannot promise.
package carfile

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ipfs/boxo/verifcid"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Stats counts the blocks written or read. Bytes is the sum of the block
// payloads, without CIDs and CAR framing, so an export and the import of its
// output report the same numbers.
type Stats struct {
	Blocks int
	Bytes  int64
}

const (
	// maxBlockSize is the largest block accepted, the limit bitswap and kubo
	// apply; a larger block could be imported but never served.
	maxBlockSize = 2 << 20
	// maxCIDSize bounds the CID of a section: verifcid allows digests of at
	// most 128 bytes, plus at most 3 varints of prefix.
	maxCIDSize = 256
	// maxHeaderSize bounds the CAR header. go-car's 32 MiB default would let a
	// hostile length prefix make us allocate that much before reading a byte
	// of it; 1 MiB still holds tens of thousands of roots.
	maxHeaderSize = 1 << 20
	// maxSectionSize bounds what go-car allocates for one section (CID and
	// block), so an oversize length prefix costs at most this much memory.
	maxSectionSize = maxBlockSize + maxCIDSize
)

// allowlist is boxo's default hash allowlist minus SHA-1: it is
// collision-broken, and nixipfs never makes SHA-1 CIDs (kubo only allows it
// for git objects). The default list also bounds identity digests to 128
// bytes and refuses digests shorter than 20 bytes, which would be forgeable.
var allowlist = verifcid.NewOverridingAllowlist(verifcid.DefaultAllowlist, map[uint64]bool{
	mh.SHA1: false,
})

// checkCID refuses CIDs whose multihash we do not trust to bind a block.
// Callers name the CID in the error.
func checkCID(c cid.Cid) error {
	if !c.Defined() {
		return errors.New("undefined CID")
	}
	return verifcid.ValidateCid(allowlist, c)
}

// verifyBlock checks that data is the block c names.
func verifyBlock(c cid.Cid, data []byte) error {
	if err := checkCID(c); err != nil {
		return err
	}
	if len(data) > maxBlockSize {
		return fmt.Errorf("%d bytes, over the %d-byte block limit", len(data), maxBlockSize)
	}
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("hash block: %w", err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("block data hashes to %s", got)
	}
	return nil
}

// checkRoots enforces what Import demands of a CAR header, so that Export
// never writes a CAR that Import would refuse.
func checkRoots(roots []cid.Cid) error {
	if len(roots) == 0 {
		return errors.New("no roots")
	}
	seen := make(map[cid.Cid]struct{}, len(roots))
	for _, r := range roots {
		if err := checkCID(r); err != nil {
			return fmt.Errorf("root %s: %w", r, err)
		}
		if _, dup := seen[r]; dup {
			return fmt.Errorf("duplicate root %s", r)
		}
		seen[r] = struct{}{}
	}
	return nil
}

// isIdentity reports whether c carries its block inline.
func isIdentity(c cid.Cid) bool {
	return c.Prefix().MhType == mh.IDENTITY
}

// identityData returns the block an identity CID carries.
func identityData(c cid.Cid) ([]byte, error) {
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, err
	}
	return bytes.Clone(d.Digest), nil
}
