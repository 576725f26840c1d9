package manifests

import (
	"encoding/hex"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Manifest keys. One PathInfo is reachable under three keys, one per way a
// client may ask for it:
//
//	p/<hash>         the store path's 32-character nix32 hash (narinfo lookups)
//	sha256/<nix32>   the NarHash as Nix renders it (52 nix32 characters)
//	blake3/<hex>     the BLAKE3 of the NAR, lower-case hex (64 characters)
//
// Mirrored source files (mirror-tarballs, cache-inputs) are recorded under
//
//	src/<algo>/<hex>  md5, sha1, sha256 and sha512 of the file (the forms
//	                  tarballs.nixos.org serves), pointing straight at the
//	                  file's UnixFS root, not at a PathInfo
//
// Build logs (distributed builds) are recorded under
//
//	log/<hash>        the .drv's store-path hash, pointing at the log's
//	                  UnixFS root (the gateway serves it at log/<drv name>)
//
// The prefixes keep the key spaces apart.
const (
	logKeyPrefix       = "log/"
	storePathKeyPrefix = "p/"
	narHashKeyPrefix   = "sha256/"
	blake3KeyPrefix    = "blake3/"
	sourceKeyPrefix    = "src/"
)

// SourceAlgos are the hash algorithms source files are recorded under.
var SourceAlgos = []string{"md5", "sha1", "sha256", "sha512"}

// KeySource is the key of a source file by one of its hashes.
func KeySource(algo string, digest []byte) string {
	return sourceKeyPrefix + algo + "/" + hex.EncodeToString(digest)
}

// maxKeyLen bounds manifest keys: the longest key we make is 71 bytes, and a
// HAMT shard from another node must not carry arbitrarily large names.
const maxKeyLen = 256

// KeyLog is the key of the build log of a .drv, by the .drv's hash part.
func KeyLog(drvHashPart string) string { return logKeyPrefix + drvHashPart }

// KeyStorePath is the key of a store path by its hash part (see ValidHashPart).
func KeyStorePath(hashPart string) string { return storePathKeyPrefix + hashPart }

// KeyNarHash is the key of a NAR by its SHA-256, in Nix's nix32 rendering.
func KeyNarHash(sha256 []byte) string {
	return narHashKeyPrefix + nixbase32.EncodeToString(sha256)
}

// KeyBlake3 is the key of a NAR by its BLAKE3-256, in hex.
func KeyBlake3(b3 []byte) string { return blake3KeyPrefix + hex.EncodeToString(b3) }

// KeysFor lists every key p is published under.
func KeysFor(p *PathInfo) []string {
	return []string{KeyStorePath(p.HashPart()), KeyNarHash(p.NarHash), KeyBlake3(p.Blake3)}
}

// isStorePathKey tells the keys a Version's count counts: one per store path.
func isStorePathKey(key string) bool {
	return len(key) > len(storePathKeyPrefix) && key[:len(storePathKeyPrefix)] == storePathKeyPrefix
}

// IsStorePathKey tells the keys that name one store path each (their value
// is its PathInfo), as against the NarHash, BLAKE3, source and log keys.
func IsStorePathKey(key string) bool { return isStorePathKey(key) }
